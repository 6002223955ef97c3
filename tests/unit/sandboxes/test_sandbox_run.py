"""One execution in the real sandbox: what it returns for each way a program can end."""

from __future__ import annotations

import pytest
from bounds import SLACK_S
from environment import needs_root

from qwen25_rl.sandboxes import IsolationUnavailable, Limits, Sandbox, SandboxConfig, Status, run_python


def test_stdin_in_stdout_out(sandbox):
    r = sandbox.run("import sys\nprint(sys.stdin.read()[::-1])", stdin="abc")
    assert (r.status, r.exit_code, r.stdout) == (Status.OK, 0, "cba\n")
    assert r.wall_s > 0


@needs_root
def test_run_python_entry_point_uses_the_default_sandbox():
    r = run_python("print(input() * 2)", stdin="ab\n", timeout_s=5, memory_mb=256)
    assert (r.status, r.stdout) == (Status.OK, "abab\n")
    assert {"uid", "namespaces", "rlimits", "seccomp"} <= set(r.isolation)


def test_uncaught_exception_is_failed_with_its_traceback(sandbox):
    r = sandbox.run("def f():\n    raise ValueError('boom')\nf()")
    assert r.status == Status.FAILED and r.exit_code == 1
    assert "ValueError: boom" in r.stderr and "harness" not in r.stderr


def test_exit_codes_pass_through(sandbox):
    assert sandbox.run("import sys; sys.exit(3)").exit_code == 3
    r = sandbox.run("import sys; sys.exit('bye')")
    assert (r.status, r.exit_code, r.stderr) == (Status.FAILED, 1, "bye\n")
    assert sandbox.run("import os; os._exit(0)").status == Status.OK


def test_wall_clock_limit_is_timeout(sandbox):
    r = sandbox.run("import time\ntime.sleep(30)", limits=Limits(timeout_s=1))
    assert r.status == Status.TIMEOUT and 1 <= r.wall_s < 1 + SLACK_S  # not the 30 s it sleeps


def test_cpu_limit_is_timeout(sandbox):
    r = sandbox.run("while True: pass", limits=Limits(timeout_s=20, cpu_s=1))
    assert r.status == Status.TIMEOUT and r.wall_s < 1 + SLACK_S  # its CPU second, not the 20 s wall clock


def test_memory_error_is_memory(sandbox):
    r = sandbox.run("x = bytearray(600 * 1024 * 1024)", limits=Limits(memory_mb=256))
    assert r.status == Status.MEMORY


def test_stdout_over_the_cap_is_output_limit_and_truncated(sandbox):
    r = sandbox.run("import sys\nwhile True: sys.stdout.write('x' * 4096)", limits=Limits(max_output_bytes=10_000))
    assert r.status == Status.OUTPUT_LIMIT and r.stdout_truncated and len(r.stdout) == 10_000


def test_death_by_signal_is_killed(sandbox):
    r = sandbox.run("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)")
    assert r.status == Status.KILLED and r.signal == 11


def test_files_are_placed_in_the_working_folder_and_importable(sandbox):
    r = sandbox.run(
        "import helper, os\nprint(helper.X, open('data/in.txt').read(), os.getcwd())",
        files={"helper.py": "X = 41 + 1\n", "data/in.txt": "hi"},
    )
    assert (r.status, r.stdout) == (Status.OK, "42 hi /tmp\n")


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "", "a//b"])
def test_file_names_outside_the_working_folder_are_refused(sandbox, name):
    with pytest.raises(ValueError):
        sandbox.run("pass", files={name: "x"})


def test_argv_runs_a_command_inside(sandbox):
    r = sandbox.run(argv=["python3", "main.py", "a"], files={"main.py": "import sys; print(sys.argv[1:])"})
    assert (r.status, r.stdout) == (Status.OK, "['a']\n")
    r = sandbox.run(argv=["no-such-program"])
    assert (r.status, r.exit_code) == (Status.FAILED, 127) and "no-such-program" in r.stderr


def test_only_one_of_code_and_argv(sandbox):
    with pytest.raises(ValueError):
        sandbox.run()
    with pytest.raises(ValueError):
        sandbox.run("pass", argv=["true"])


def test_environment_is_cleared(sandbox):
    r = sandbox.run("import os\nprint(sorted(os.environ))")
    assert r.stdout.strip() == "['HOME', 'LANG', 'PATH', 'PWD', 'TMPDIR']"  # PWD: set by bwrap --chdir


def test_installed_packages_are_not_visible(sandbox):
    r = sandbox.run(
        "import sys\ntry:\n    import yaml\nexcept ImportError:\n    print('no yaml')\nprint([p for p in sys.path if 'packages' in p])"
    )
    assert r.stdout == "no yaml\n[]\n"


@needs_root
def test_missing_layer_is_refused_and_named():
    with pytest.raises(IsolationUnavailable, match="namespaces") as e:
        Sandbox(SandboxConfig(bwrap="/nonexistent/bwrap"))
    assert "bubblewrap" in str(e.value)


@needs_root
def test_weak_isolation_runs_only_when_allowed_and_reports_the_missing_layers():
    sb = Sandbox(SandboxConfig(bwrap="/nonexistent/bwrap", allow_weak_isolation=True))
    try:
        r = sb.run("print(6 * 7)")
        assert (r.status, r.stdout) == (Status.OK, "42\n")
        assert set(r.missing_layers) == {"namespaces", "seccomp"} and "uid" in r.isolation
    finally:
        sb.close()


@pytest.mark.parametrize("bad", [dict(timeout_s=0), dict(memory_mb=10), dict(max_processes=1), dict(max_open_files=3), dict(tmpfs_mb=-1)])
def test_limits_refuse_nonsense(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Limits(**bad)


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="cgroups"):
        SandboxConfig(cgroups="maybe")
    with pytest.raises(ValueError, match="uid"):
        SandboxConfig(uid_base=10)
    with pytest.raises(ValueError, match="extra_ro_paths"):
        SandboxConfig(extra_ro_paths="/opt/x")


def test_cpu_time_counts_the_whole_tree(sandbox):
    code = "import os, time\npid = os.fork()\nend = time.process_time() + 0.4\nwhile time.process_time() < end:\n    pass\nif pid:\n    os.waitpid(pid, 0)\n"
    r = sandbox.run(code)
    assert r.status == Status.OK
    # two processes each burning 0.4 s of CPU (exact with a cgroup; a lower bound without)
    assert r.cpu_s >= (0.75 if "cgroup" in r.isolation else 0.35)


def test_without_root_the_uid_layer_is_missing_and_named(monkeypatch):
    from qwen25_rl.sandboxes import isolation

    monkeypatch.setattr(isolation.os, "geteuid", lambda: 1000)
    with pytest.raises(IsolationUnavailable, match="uid") as e:
        Sandbox(SandboxConfig())
    assert "own uid" in str(e.value)


@needs_root
def test_an_architecture_without_a_seccomp_table_is_missing_seccomp(monkeypatch):
    from qwen25_rl.sandboxes import seccomp

    monkeypatch.setattr(seccomp, "machine_arch", lambda: "riscv64")
    with pytest.raises(IsolationUnavailable, match="seccomp") as e:
        Sandbox(SandboxConfig())
    assert "riscv64" in str(e.value)


def test_a_sandbox_that_cannot_start_is_sandbox_error_with_bwraps_reason(sandbox, monkeypatch):
    from qwen25_rl.sandboxes import isolation

    orig = isolation.Layout.command

    def broken(self, *a, **k):
        argv = orig(self, *a, **k)
        argv[argv.index("--ro-bind") + 1] = "/nonexistent-qrl-path"
        return argv

    monkeypatch.setattr(isolation.Layout, "command", broken)
    r = sandbox.run("print(1)")
    assert r.status == Status.SANDBOX_ERROR and "nonexistent-qrl-path" in r.error
    assert sandbox.leases.held == set() and sandbox.leases.quarantined == set()

"""Attacks on the sandbox itself, each run for real: the program gets no reward, the host is
unchanged, nothing it started is left behind and the sandbox keeps working afterwards.

Network tests only ever dial a listener this test opens on the host's loopback."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import pytest
from bounds import SLACK_S
from sandbox_support import LIMITS, PROBLEM, assert_nothing_left, completion

from qwen25_rl.reward.code import grade_humaneval
from qwen25_rl.sandboxes import Status


def reward(sb, attack: str) -> float:
    return grade_humaneval(PROBLEM, completion(attack), sandbox=sb, timeout_s=2).score


def test_infinite_loop(sb):
    r = sb.run("while True:\n    pass")
    assert r.status == Status.TIMEOUT and r.wall_s < LIMITS.timeout_s + SLACK_S
    assert reward(sb, "while True:\n    pass") == 0.0


def test_loop_that_ignores_sigalrm_and_catches_baseexception(sb):
    attack = """
    import signal
    for s in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT, signal.SIGXCPU):
        signal.signal(s, signal.SIG_IGN)
    signal.alarm(1)
    while True:
        try:
            while True:
                pass
        except BaseException:
            pass
    """
    import textwrap

    r = sb.run(textwrap.dedent(attack))
    assert r.status == Status.TIMEOUT and r.wall_s < LIMITS.timeout_s + SLACK_S
    assert reward(sb, attack) == 0.0


def test_fork_bomb(sb):
    attack = """
    import os
    n = 0
    while True:
        try:
            os.fork()
            n += 1
        except OSError:
            pass
    """
    import textwrap

    r = sb.run(textwrap.dedent(attack))
    assert r.status in (Status.TIMEOUT, Status.KILLED, Status.FAILED) and r.wall_s < LIMITS.timeout_s + SLACK_S
    assert reward(sb, attack) == 0.0


def test_thread_bomb_is_capped_by_the_process_limit(sb):
    code = (
        "import threading, time\nn = 0\n"
        "try:\n    while True:\n        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n        n += 1\n"
        "except RuntimeError:\n    print('capped at', n)\n"
    )
    r = sb.run(code)
    assert "capped at" in r.stdout
    assert int(r.stdout.split()[-1]) < LIMITS.max_processes
    assert reward(sb, "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(30,)).start()") == 0.0


def test_memory_bomb(sb):
    # a generous wall clock: what is tested is the memory limit, on a machine under load
    r = sb.run("x = []\nwhile True:\n    x.append(bytearray(16 * 1024 * 1024))", limits=LIMITS.replace(timeout_s=15, cpu_s=15))
    assert r.status == Status.MEMORY
    assert reward(sb, "x = []\nwhile True:\n    x.append(bytearray(16 * 1024 * 1024))") == 0.0


def test_memory_bomb_spread_over_processes_is_capped_for_the_whole_tree(sb):
    if sb.cgroups is None:
        pytest.skip("without a cgroup only the per-process limit applies (documented)")
    # 12 processes x 200 MiB = 2.4 GiB, each under the 256 MiB per-process limit
    code = (
        "import os, time\n"
        "for _ in range(12):\n"
        "    if os.fork() == 0:\n"
        "        b = bytearray(200 * 1024 * 1024)\n"
        "        for i in range(0, len(b), 4096):\n            b[i] = 1\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "time.sleep(30)\n"
    )
    before = sb.cgroups
    r = sb.run(code, limits=LIMITS.replace(timeout_s=6))
    assert r.status in (Status.MEMORY, Status.TIMEOUT, Status.KILLED)
    # The most the tree ever held, from the kernel's own counter: memory.max_usage_in_bytes
    # (cgroup v1) or memory.peak (v2, Linux >= 5.19). Without one this test cannot tell, so
    # that is a failure, not a pass.
    counters = [
        os.path.join(before.memory_root, name, counter)
        for name in os.listdir(before.memory_root)
        for counter in ("memory.max_usage_in_bytes", "memory.peak")
        if os.path.isfile(os.path.join(before.memory_root, name, counter))
    ]
    assert counters, f"no peak memory counter in {before.memory_root} (cgroup v1 memory.max_usage_in_bytes or v2 memory.peak)"
    peak = max(int(open(c).read()) for c in counters)
    assert 0 < peak <= (LIMITS.memory_mb + LIMITS.tmpfs_mb + 64) * 1024 * 1024


def test_stdout_and_stderr_floods_are_cut_at_the_cap(sb):
    r = sb.run("import sys\nwhile True:\n    sys.stdout.write('y' * 65536)")
    assert r.status == Status.OUTPUT_LIMIT and len(r.stdout) == LIMITS.max_output_bytes
    r = sb.run("import os\nwhile True:\n    os.write(2, b'e' * 65536)")
    assert r.status == Status.OUTPUT_LIMIT and len(r.stderr) == LIMITS.max_output_bytes
    assert reward(sb, "while True:\n    print('passed ' * 1000)") == 0.0


def test_disk_fill_is_capped_by_the_tmpfs_and_the_file_size_limit(sb):
    marker = f"qrl-fill-{uuid.uuid4().hex}"
    code = (
        "import os\ntotal = 0\nchunk = b'x' * (1024 * 1024)\ni = 0\n"
        "while True:\n"
        "    try:\n"
        f"        with open(f'/tmp/{marker}-{{i}}', 'wb') as f:\n"
        "            for _ in range(3):\n"
        "                f.write(chunk); total += len(chunk)\n"
        "    except OSError as e:\n"
        "        print('stopped', total, e.errno)\n"
        "        break\n"
        "    i += 1\n"
        "try:\n"
        "    open('/tmp/big', 'wb').write(b'z' * (8 * 1024 * 1024))\n"
        "except OSError as e:\n"
        "    print('big', e.errno)\n"
    )
    r = sb.run(code)
    words = r.stdout.split()
    assert words[0] == "stopped" and int(words[1]) <= LIMITS.tmpfs_mb * 1024 * 1024
    assert not any(n.startswith(marker) for n in os.listdir("/tmp"))
    assert reward(sb, "while True:\n    open('/tmp/f%d' % id(object()), 'wb').write(b'x' * 2**20)") == 0.0


def test_network_cannot_reach_a_listener_on_the_hosts_loopback(sb):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    accepted = []

    def watch():
        end = time.monotonic() + 8
        while time.monotonic() < end:
            try:
                accepted.append(listener.accept())
            except OSError:
                pass

    t = threading.Thread(target=watch)
    t.start()
    code = (
        "import socket\n"
        "for fam, addr in ((socket.AF_INET, ('127.0.0.1', PORT)), (socket.AF_INET6, ('::1', PORT))):\n"
        "    try:\n"
        "        s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(1); s.connect(addr)\n"
        "        print('CONNECTED', fam)\n"
        "    except OSError as e:\n"
        "        print('refused', fam, e.errno)\n"
        "try:\n"
        "    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b'x', ('127.0.0.1', PORT)); print('SENT')\n"
        "except OSError as e:\n"
        "    print('udp refused', e.errno)\n"
    ).replace("PORT", str(port))
    r = sb.run(code)
    attack = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'x')"
    score = reward(sb, attack)
    t.join()
    listener.close()
    assert "CONNECTED" not in r.stdout and "SENT" not in r.stdout and r.stdout.count("refused") == 3
    assert accepted == []
    assert score == 0.0


def test_environment_proc_home_and_host_files_are_not_readable(sb, monkeypatch):
    secret = f"qrl-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("QRL_HOST_SECRET", secret)
    code = (
        "import os\n"
        "print(sorted(os.environ))\n"
        "for p in ('/proc/1/environ', '/proc/self/environ', '/root', '/home', '/etc/passwd', '/work', os.path.expanduser('~root')):\n"
        "    try:\n"
        "        print(p, os.listdir(p) if os.path.isdir(p) else open(p, 'rb').read()[:200])\n"
        "    except OSError as e:\n"
        "        print(p, 'denied', e.errno)\n"
    )
    r = sb.run(code)
    assert secret not in r.stdout and "QRL_HOST_SECRET" not in r.stdout
    assert r.stdout.count("denied") == 7
    assert reward(sb, "import os\nreturn 2 * x if 'QRL_HOST_SECRET' in os.environ else -1") == 0.0


def test_killing_the_parent_or_everything_reaches_only_the_sandbox(sb):
    background = []
    t = threading.Thread(
        target=lambda: background.append(sb.run("import time\ntime.sleep(1.5)\nprint('alive')", limits=LIMITS.replace(timeout_s=10)))
    )
    t.start()
    r1 = sb.run("import os\nos.kill(os.getppid(), 9)\nos.kill(1, 9)\nprint('still here')")
    r2 = sb.run("import os\nos.kill(-1, 9)\nprint('after kill -1')")
    s1 = reward(sb, "import os\nos.kill(os.getppid(), 9)")
    s2 = reward(sb, "import os\nos.kill(-1, 9)")
    t.join()
    assert r1.status == Status.OK and "still here" in r1.stdout  # pid 1 of its namespace ignores it
    assert r2.status == Status.FAILED and "ProcessLookupError" in r2.stderr  # nobody else to kill
    assert (s1, s2) == (0.0, 0.0)
    assert background[0].status == Status.OK and background[0].stdout == "alive\n"


def test_setsid_daemon_does_not_outlive_the_run(sb):
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.closerange(0, 64)\n"
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
        "print('parent done')\n"
    )
    r = sb.run(code)
    assert r.status == Status.OK and r.wall_s < 1 + SLACK_S  # not the daemon's 60 s
    # the autouse check asserts that no process of the sandbox's uids is alive now
    assert reward(sb, "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)") == 0.0


def test_writes_to_the_interpreter_or_tmp_do_not_reach_a_later_run(sb):
    marker = f"qrl-persist-{uuid.uuid4().hex}"
    r1 = sb.run(
        "import os, sys\n"
        f"open('/tmp/{marker}', 'w').write('x')\n"
        "for d in (os.path.dirname(os.__file__), os.path.dirname(sys.executable), '/sandbox', '/', '/dev', '/usr'):\n"
        "    try:\n"
        f"        open(os.path.join(d, '{marker}.py'), 'w').write('x')\n"
        "        print('WROTE', d)\n"
        "    except OSError as e:\n"
        "        print('ro', d, e.errno)\n"
    )
    r2 = sb.run(
        f"import os\nprint(os.path.exists('/tmp/{marker}'))\ntry:\n    import {marker.replace('-', '_')}\nexcept ImportError:\n    print('no module')\n"
    )
    assert "WROTE" not in r1.stdout and r1.stdout.count("ro ") == 6
    assert r2.stdout == "False\nno module\n"
    assert not os.path.exists(f"/tmp/{marker}")


def test_deep_recursion(sb):
    attack = "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1) + 1\nf(0)"
    r = sb.run(attack)
    # 3.11 keeps Python frames on the heap: it ends in MemoryError, a crash or the time limit
    assert r.status in (Status.KILLED, Status.FAILED, Status.MEMORY, Status.TIMEOUT)
    assert reward(sb, attack) == 0.0


def test_huge_integer_to_string(sb):
    r = sb.run("print(len(str(10**10**6)))")
    assert r.status == Status.FAILED and "ValueError" in r.stderr  # Python's digit limit
    r = sb.run("import sys\nsys.set_int_max_str_digits(0)\nprint(len(str(10**10**7)))")
    assert r.status in (Status.TIMEOUT, Status.OK)
    assert reward(sb, "import sys\nsys.set_int_max_str_digits(0)\nstr(10**10**7)") == 0.0


def test_file_descriptor_exhaustion(sb):
    code = "import os\nfds = []\ntry:\n    while True:\n        fds.append(os.open('/dev/null', os.O_RDONLY))\nexcept OSError as e:\n    print(len(fds), e.errno)\n"
    r = sb.run(code)
    n, err = map(int, r.stdout.split())
    assert err == 24 and n < LIMITS.max_open_files  # EMFILE
    assert reward(sb, "import os\nwhile True:\n    os.pipe()") == 0.0


def test_kernel_interfaces_refused_by_seccomp_and_namespaces(sb):
    code = (
        "import ctypes, os, socket\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('unshare', libc.unshare(0x10000000), ctypes.get_errno())\n"
        "print('ptrace', libc.ptrace(16, 1, 0, 0), ctypes.get_errno())\n"
        "print('mount', libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())\n"
        "try:\n    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)\nexcept OSError as e:\n    print('netlink', e.errno)\n"
        "print('unix ok', socket.socketpair() is not None)\n"
    )
    r = sb.run(code)
    assert "unshare -1 1" in r.stdout and "ptrace -1 1" in r.stdout and "mount -1 1" in r.stdout
    assert "netlink 97" in r.stdout and "unix ok True" in r.stdout


def _open_fds() -> dict[str, str]:
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            pass
    return out


def test_64_concurrent_infinite_loops_then_nothing_leaked(sb):
    fds_before = _open_fds()
    state_before = sorted(os.listdir(sb.state_dir))
    results = []
    lock = threading.Lock()

    def one(_):
        r = sb.run("while True:\n    pass", limits=LIMITS.replace(timeout_s=1, cpu_s=2))
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(64)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 64 and all(r.status == Status.TIMEOUT for r in results)
    assert time.monotonic() - t0 < 64 / sb.slots * 4 + 2 * SLACK_S  # back-pressure, not a pile-up
    assert_nothing_left(sb)
    # Every descriptor of the executions (memfds for the job, secrets, harness and filter, the
    # output and channel pipes) is closed again. Lease files in the state folder may stay open
    # (leases are cached), and other threads of this process (Ray's, from earlier tests) may
    # open sockets meanwhile: those are not the sandbox's.
    opened = {fd: link for fd, link in _open_fds().items() if fds_before.get(fd) != link}
    leaked = {fd: link for fd, link in opened.items() if not link.startswith(("socket:", sb.state_dir))}
    assert leaked == {}, opened
    new_state = set(os.listdir(sb.state_dir)) - set(state_before)
    assert all(n.startswith("uid-") and n.endswith(".lock") for n in new_state)

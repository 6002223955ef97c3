"""What this host can isolate with, and the command line that does it.

Layers (each named in results and errors):
- uid:        every execution runs under its own unprivileged host uid (setpriv, needs root).
              Per-uid kernel limits (RLIMIT_NPROC) then count only that execution's processes,
              and "every process of uid U" is exactly the execution's process tree.
- namespaces: bubblewrap: new user, pid, network (loopback only), ipc, uts and cgroup
              namespaces; a private read-only view of the interpreter and its libraries only
              (no /proc, /home, /root, /etc, /work ...); a size-limited tmpfs /tmp as the only
              writable place; cleared environment; new session (no terminal); no new user
              namespaces inside; killed when its parent dies.
- rlimits:    prlimit: address space, CPU seconds, processes, file size, open files, no core.
- seccomp:    the filter of sandboxes/seccomp.py, loaded by bwrap.
- cgroup:     optional extra (SandboxConfig.cgroups): memory and pids limits on the whole tree.

`detect()` checks each layer on this host, including one real probe execution, and returns a
`Layout` that the executor turns into a command line per execution.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field

from qwen25_rl.sandboxes import seccomp
from qwen25_rl.sandboxes.config import SandboxConfig

SANDBOX_UID = 1000  # the uid the code sees inside its user namespace
HARNESS_PATH = "/sandbox/harness.pyc"
WORKDIR = "/tmp"
SHM_MB = 16  # /dev/shm (POSIX shared memory, multiprocessing's semaphores)
# Host folders whose libraries the interpreter may load (mirrored read-only, symlinks kept).
LIBRARY_DIRS = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32", "/lib", "/lib64", "/lib32", "/libx32")


def reachable_by_others(path: str) -> tuple[bool, str]:
    """Can an unprivileged uid (not owner, not group) read `path`? Checks every parent folder."""
    p = os.path.realpath(path)
    parts = p.split("/")
    for i in range(1, len(parts)):
        d = "/".join(parts[:i]) or "/"
        try:
            m = os.stat(d).st_mode
        except OSError as e:
            return False, f"{d}: {e.strerror}"
        if not m & stat.S_IXOTH:
            return False, f"{d} is not searchable by other users (mode {stat.filemode(m)})"
    try:
        m = os.stat(p).st_mode
    except OSError as e:
        return False, f"{p}: {e.strerror}"
    if stat.S_ISDIR(m):
        if not (m & stat.S_IXOTH and m & stat.S_IROTH):
            return False, f"{p} is not readable by other users"
    elif not m & stat.S_IROTH:
        return False, f"{p} is not readable by other users"
    return True, ""


@dataclass(frozen=True)
class PythonInfo:
    executable: str  # real path
    prefix: str
    stdlib: str  # folder holding os.py
    version: tuple[int, int]


def _inspect_python(exe: str) -> PythonInfo | None:
    try:
        out = subprocess.run(
            [
                exe,
                "-I",
                "-S",
                "-c",
                "import sys, os; print(sys.prefix); print(os.path.dirname(os.__file__)); print(sys.version_info[0], sys.version_info[1])",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env={},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.split("\n")
    if out.returncode != 0 or len(lines) < 3:
        return None
    major, minor = (int(x) for x in lines[2].split())
    return PythonInfo(os.path.realpath(exe), lines[0], os.path.realpath(lines[1]), (major, minor))


def find_python(config: SandboxConfig) -> tuple[PythonInfo | None, str]:
    """The interpreter for the sandbox, or (None, why not).

    Without an explicit choice: the host's own base interpreter (same version as the host) if
    an unprivileged uid can reach it and its standard library, else the system's python3.
    A pyenv interpreter under /root (mode 0700) is the usual reason for the fallback."""
    if config.python:
        candidates = [config.python]
    else:
        candidates = [getattr(sys, "_base_executable", None) or sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]
    reasons = []
    for c in candidates:
        exe = shutil.which(c) if not os.path.isabs(c) else c
        if not exe or not os.path.exists(exe):
            reasons.append(f"{c}: not found")
            continue
        ok, why = reachable_by_others(exe)
        if not ok:
            reasons.append(f"{c}: {why}")
            continue
        info = _inspect_python(exe)
        if info is None:
            reasons.append(f"{c}: does not run")
            continue
        if info.version < (3, 8):
            reasons.append(f"{c}: Python {info.version} is older than 3.8")
            continue
        ok, why = reachable_by_others(info.stdlib)
        if not ok:
            reasons.append(f"{c}: standard library {why}")
            continue
        return info, ""
    return None, "; ".join(reasons)


@dataclass
class Layout:
    """Everything per-host that the command line of an execution needs."""

    python: PythonInfo
    layers: tuple[str, ...]  # active
    missing: dict[str, str]  # required layer -> why it is missing
    ro_binds: list[tuple[str, str]] = field(default_factory=list)  # (kind, path): kind in bind/symlink:<target>
    hidden_dirs: list[str] = field(default_factory=list)  # site-packages folders covered by empty read-only tmpfs
    seccomp_filter: bytes | None = None
    config: SandboxConfig | None = None

    def command(
        self, uid: int | None, limits, fds: dict, files: list[tuple[int, str]], mode: str, cgroup_procs: list[str] | None = None
    ) -> list[str]:
        """argv for one execution. fds: harness, job, chan, secret, seccomp (ints or -1)."""
        cfg = self.config
        argv: list[str] = []
        if cgroup_procs and "namespaces" not in self.layers:
            # No bwrap to hold the start for us (see block-fd below): join the execution's
            # cgroup(s) from a shell before anything runs, then become the execution.
            script = "".join(f'echo $$ > "{p}" && ' for p in cgroup_procs) + 'exec "$@"'
            argv += ["/bin/sh", "-c", script, "sh"]
        if "uid" in self.layers and uid is not None:
            argv += [cfg.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--pdeathsig=SIGKILL", "--"]
        if "rlimits" in self.layers:
            mem = limits.memory_mb * 1024 * 1024
            cpu = max(1, int(limits.effective_cpu_s + 0.999))
            fsize = limits.max_file_mb * 1024 * 1024
            argv += [
                cfg.prlimit,
                f"--as={mem}",
                f"--cpu={cpu}:{cpu + 1}",
                f"--nproc={limits.max_processes}",
                f"--nofile={limits.max_open_files}",
                f"--fsize={fsize}",
                "--core=0",
                "--",
            ]
        py = self.python.executable
        if "namespaces" in self.layers:
            argv += [
                cfg.bwrap,
                "--unshare-user",
                "--unshare-pid",
                "--unshare-net",
                "--unshare-ipc",
                "--unshare-uts",
                "--unshare-cgroup-try",
                "--disable-userns",
                # --as-pid-1: the harness is the namespace's init. Otherwise bwrap's own init is
                # left behind as an orphan (bwrap exits as soon as the command does) for the
                # host's init to reap, and until then it counts against the uid's process limit.
                "--die-with-parent",
                "--new-session",
                "--as-pid-1",
                "--uid",
                str(SANDBOX_UID),
                "--gid",
                str(SANDBOX_UID),
                "--hostname",
                "sandbox",
            ]
            if fds.get("info", -1) >= 0:
                # bwrap reports its namespace init's pid on the info fd and then waits on the
                # block fd: the parent moves both processes into the cgroup before anything runs.
                argv += ["--info-fd", str(fds["info"]), "--block-fd", str(fds["block"])]
            for kind, path in self.ro_binds:
                if kind == "bind":
                    argv += ["--ro-bind", path, path]
                else:
                    argv += ["--symlink", kind.split(":", 1)[1], path]
            for d in self.hidden_dirs:
                argv += ["--tmpfs", d, "--remount-ro", d]
            # /dev: the usual device nodes; its shm folder a small tmpfs of its own. /dev itself
            # and the root (a tmpfs bwrap builds) become read-only below: writable places are
            # exactly /tmp and /dev/shm, both size-limited.
            argv += ["--dev", "/dev", "--size", str(min(limits.tmpfs_mb, SHM_MB) * 1024 * 1024), "--perms", "1777", "--tmpfs", "/dev/shm"]
            argv += ["--size", str(limits.tmpfs_mb * 1024 * 1024), "--perms", "1777", "--tmpfs", WORKDIR]
            made = set()
            for fd, rel in files:
                parts = rel.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    d = WORKDIR + "/" + "/".join(parts[:i])
                    if d not in made:
                        made.add(d)
                        argv += ["--dir", d]
                argv += ["--file", str(fd), f"{WORKDIR}/{rel}"]
            argv += ["--dir", "/sandbox", "--ro-bind-data", str(fds["harness"]), HARNESS_PATH]
            # `python3` / `python` on PATH for argv-mode commands: the sandbox's interpreter.
            argv += ["--dir", "/sandbox/bin", "--symlink", py, "/sandbox/bin/python3", "--symlink", py, "/sandbox/bin/python"]
            argv += ["--remount-ro", "/dev", "--remount-ro", "/"]
            if fds.get("seccomp", -1) >= 0:
                argv += ["--seccomp", str(fds["seccomp"])]
            argv += [
                "--clearenv",
                "--setenv",
                "PATH",
                "/sandbox/bin:/usr/bin:/bin",
                "--setenv",
                "HOME",
                WORKDIR,
                "--setenv",
                "TMPDIR",
                WORKDIR,
                "--setenv",
                "LANG",
                "C.UTF-8",
                "--chdir",
                WORKDIR,
                "--",
            ]
            harness = HARNESS_PATH
        else:
            harness = fds["harness_path"]
        argv += [py, "-I", "-S", "-B", harness, mode, str(fds["job"]), str(fds["chan"]), str(fds.get("secret", -1))]
        return argv


_COMPILE_PYC = (
    "import sys, importlib.util, importlib._bootstrap_external as be\n"
    "src = sys.stdin.buffer.read()\n"
    "code = compile(src, sys.argv[1], 'exec', dont_inherit=True)\n"
    "sys.stdout.buffer.write(be._code_to_hash_pyc(code, importlib.util.source_hash(src), checked=False))\n"
)


def compile_harness(python: PythonInfo, source: bytes, filename: str) -> bytes:
    """The harness as an unchecked .pyc for the sandbox's interpreter. Compiling its source at
    every start would cost more than the rest of the start-up together (~40 ms of CPU)."""
    out = subprocess.run(
        [python.executable, "-I", "-S", "-c", _COMPILE_PYC, filename], input=source, capture_output=True, timeout=60, env={}
    )
    if out.returncode != 0 or not out.stdout:
        raise RuntimeError(f"could not compile the sandbox harness with {python.executable}: {out.stderr.decode(errors='replace')[-500:]}")
    return out.stdout


def _library_binds(python: PythonInfo, extra: tuple[str, ...]) -> tuple[list[tuple[str, str]], list[str]]:
    binds: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        if path in seen or not os.path.lexists(path):
            return
        seen.add(path)
        if os.path.islink(path):
            binds.append((f"symlink:{os.readlink(path)}", path))
            target = os.path.realpath(path)
            add(target)
        elif os.path.isdir(path):
            binds.append(("bind", path))

    for d in LIBRARY_DIRS:
        add(d)

    def covered(p: str) -> bool:
        return any(kind == "bind" and (p == b or p.startswith(b.rstrip("/") + "/")) for kind, b in binds)

    for p in (python.executable, python.stdlib, *extra):
        if not covered(p):
            binds.append(("bind", p))
    # The interpreter's own installed packages stay out: the sandbox gets the standard library.
    hidden = []
    for root in {python.stdlib, os.path.join(python.prefix, "lib")} | {b for k, b in binds if k == "bind" and b.startswith("/usr/lib")}:
        for name in ("site-packages", "dist-packages"):
            cand = os.path.join(root, name)
            if os.path.isdir(cand) and covered(cand) and cand not in extra:
                hidden.append(cand)
    for cand in ("/usr/lib/python3/dist-packages", "/usr/local/lib/python3/dist-packages"):
        if os.path.isdir(cand) and covered(cand) and cand not in hidden:
            hidden.append(cand)
    return binds, sorted(set(hidden))


def detect(config: SandboxConfig) -> tuple[Layout | None, dict[str, str]]:
    """Check every layer. Returns (layout, missing) — layout is None if nothing can run."""
    missing: dict[str, str] = {}
    python, why = find_python(config)
    if python is None:
        return None, {"python": f"no interpreter usable inside the sandbox ({why})"}
    layers = []
    if os.geteuid() != 0:
        missing["uid"] = "not running as root: cannot give executions their own uid"
    elif not os.access(config.setpriv, os.X_OK):
        missing["uid"] = f"{config.setpriv} not found (util-linux)"
    else:
        layers.append("uid")
    if not os.access(config.bwrap, os.X_OK):
        missing["namespaces"] = f"{config.bwrap} not found (install the bubblewrap package)"
    else:
        layers.append("namespaces")
    if not os.access(config.prlimit, os.X_OK):
        missing["rlimits"] = f"{config.prlimit} not found (util-linux)"
    else:
        layers.append("rlimits")
    filt = None
    if "namespaces" not in layers:
        missing["seccomp"] = "the seccomp filter is loaded by bubblewrap, which is missing"
    else:
        try:
            filt = seccomp.build_filter()
            layers.append("seccomp")
        except seccomp.SeccompUnavailable as e:
            missing["seccomp"] = str(e)
    binds, hidden = _library_binds(python, config.extra_ro_paths)
    for p in config.extra_ro_paths:
        ok, why = reachable_by_others(p)
        if not ok:
            return None, {"extra_ro_paths": why}
    layout = Layout(
        python=python, layers=tuple(layers), missing=missing, ro_binds=binds, hidden_dirs=hidden, seccomp_filter=filt, config=config
    )
    return layout, missing

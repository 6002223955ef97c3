"""Host side of the sandbox: slots, one execution from spawn to cleanup, and graded runs.

One execution:
1. take a slot (back-pressure) and a machine-wide uid lease;
2. put the job, the secrets, the harness, the seccomp filter and any files in memfds (no
   temp files on the host; bwrap copies them in);
3. spawn  setpriv (uid) -> prlimit (rlimits) -> bwrap (namespaces, seccomp) -> python
   harness.pyc as the namespace's pid 1; bwrap waits on --block-fd until this process has
   moved it into the execution's cgroup (weak isolation without bwrap: a shell joins it);
4. pump stdout / stderr / the grader channel with caps, under a wall-clock deadline;
5. kill every process of the uid (and of the cgroup), reap, verify that none is left, then
   hand the uid back. A uid whose processes cannot be killed is quarantined, never reused.
"""

from __future__ import annotations

import json
import os
import select
import selectors
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from qwen25_rl.sandboxes import isolation, slots
from qwen25_rl.sandboxes.cgroups import Cgroups
from qwen25_rl.sandboxes.config import Limits, SandboxConfig
from qwen25_rl.sandboxes.result import ExecResult, IsolationUnavailable, Status

HARNESS_SOURCE = (Path(__file__).parent / "harness.py").read_bytes()
MAX_CHANNEL_BYTES = 256 * 1024 * 1024
MAX_FILES_BYTES = 256 * 1024 * 1024
_CLEANUP_WAIT_S = 5.0


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _check_rel_path(name: str) -> str:
    if not isinstance(name, str) or not name or name.startswith("/") or "\0" in name:
        raise ValueError(f"file name {name!r} must be a non-empty relative path")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"file name {name!r} may not contain empty, '.' or '..' parts")
    return name


class Sandbox:
    """A pool of sandboxed executions. Thread-safe; `run()` blocks while all slots are busy."""

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        layout, missing = isolation.detect(self.config)
        if layout is None:
            raise IsolationUnavailable(missing)
        self.cgroups: Cgroups | None = None
        cg_why = "disabled (cgroups: off)"
        if self.config.cgroups != "off" and "uid" in layout.layers:
            self.cgroups, cg_why = Cgroups.detect()
        elif "uid" not in layout.layers:
            cg_why = "needs the uid layer"
        if self.cgroups is not None:
            layout.layers = layout.layers + ("cgroup",)
        elif self.config.cgroups == "require":
            missing["cgroup"] = cg_why
        self.cgroup_status = "active" if self.cgroups else cg_why
        self.layout = layout
        if missing and not self.config.allow_weak_isolation:
            raise IsolationUnavailable(missing)
        self.missing = dict(missing)
        # Executions spend most of their wall time waiting on the kernel (namespace set-up and
        # teardown), so more slots than cores keep the CPUs busy: 4 per core measured best.
        n = self.config.slots or 4 * (os.cpu_count() or 1)
        self.slots = n
        self._slot_sem = threading.BoundedSemaphore(n)
        self._busy = 0
        self._busy_lock = threading.Lock()
        self.state_dir = self.config.state_dir or slots.default_state_dir()
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self._clean_uids: set[int] = set()
        self.leases = (
            slots.UidLeases(self.state_dir, self.config.uid_base, self.config.uid_count, window=4 * n) if "uid" in layout.layers else None
        )
        self._harness_file = None
        if "namespaces" in layout.layers:
            self._harness_pyc = isolation.compile_harness(layout.python, HARNESS_SOURCE, isolation.HARNESS_PATH[:-1])
        else:
            # Without bwrap the harness must be a file the execution's uid can open: a
            # content-addressed file in <state_dir>/pub (state_dir 0711: reachable, not listable;
            # the lease files in it stay 0600).
            import hashlib

            pub = os.path.join(self.state_dir, "pub")
            os.makedirs(pub, mode=0o755, exist_ok=True)
            os.chmod(self.state_dir, 0o711)
            os.chmod(pub, 0o755)
            digest = hashlib.sha256(HARNESS_SOURCE + layout.python.executable.encode()).hexdigest()[:16]
            p = os.path.join(pub, f"harness-{digest}.pyc")
            self._harness_pyc = isolation.compile_harness(layout.python, HARNESS_SOURCE, p[:-1])
            tmp = f"{p}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(self._harness_pyc)
            os.chmod(tmp, 0o644)
            os.replace(tmp, p)
            self._harness_file = p
        self._probe()

    # ------------------------------------------------------------------ public API

    @property
    def isolation(self) -> tuple[str, ...]:
        return self.layout.layers

    def describe(self) -> dict[str, Any]:
        return {
            "layers": list(self.layout.layers),
            "missing": dict(self.missing),
            "cgroup": self.cgroup_status,
            "python": self.layout.python.executable,
            "python_version": ".".join(map(str, self.layout.python.version)),
            "slots": self.slots,
            "uid_range": [self.config.uid_base, self.config.uid_base + self.config.uid_count - 1],
            "state_dir": self.state_dir,
        }

    def run(
        self,
        code: str | None = None,
        *,
        argv: list[str] | None = None,
        stdin: str | bytes = "",
        files: dict[str, str | bytes] | None = None,
        limits: Limits | None = None,
    ) -> ExecResult:
        """Run Python `code` (as `python -c` would) or `argv` inside the sandbox."""
        if (code is None) == (argv is None):
            raise ValueError("give exactly one of code= or argv=")
        if argv is not None and (not argv or not all(isinstance(a, str) for a in argv)):
            raise ValueError("argv must be a non-empty list of strings")
        job = {"code": code, "argv": argv}
        return self.execute("exec", job, None, stdin=stdin, files=files, limits=limits)

    def busy(self) -> int:
        with self._busy_lock:
            return self._busy

    def close(self) -> None:
        """Nothing to release: executions clean up after themselves, leases die with us."""

    # ------------------------------------------------------------------ one execution

    def execute(
        self,
        mode: str,
        job: dict,
        secret: dict | None,
        *,
        stdin: str | bytes = "",
        files: dict[str, str | bytes] | None = None,
        limits: Limits | None = None,
    ) -> ExecResult:
        """Run the harness in `mode` with `job` (visible to the code) and `secret` (only to the grader)."""
        limits = limits or self.config.limits
        file_items = []
        total = 0
        for name, data in (files or {}).items():
            data = data.encode() if isinstance(data, str) else bytes(data)
            total += len(data)
            file_items.append((_check_rel_path(name), data))
        if total > MAX_FILES_BYTES:
            raise ValueError(f"files total {total} bytes, more than {MAX_FILES_BYTES}")
        stdin_b = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
        if file_items and "namespaces" not in self.layout.layers:
            return self._error("files= needs the namespaces layer (a private /tmp to put them in)")
        t_wait = time.monotonic()
        if not self._slot_sem.acquire(timeout=self.config.acquire_timeout_s):
            return self._error(f"no free sandbox slot within {self.config.acquire_timeout_s}s")
        with self._busy_lock:
            self._busy += 1
        lease = None
        try:
            if self.leases is not None:
                lease = self.leases.acquire(time.monotonic() + max(0.0, self.config.acquire_timeout_s - (time.monotonic() - t_wait)))
                if lease is None:
                    return self._error(f"no free sandbox uid in [{self.config.uid_base}, +{self.config.uid_count})")
                left = self._leftovers_of_new_lease(lease.uid, limits)
                if left:
                    self.leases.quarantine(lease)
                    lease = None
                    return self._error(f"processes of a leased uid could not be killed: {left}")
            return self._execute_leased(mode, job, secret, stdin_b, file_items, limits, lease)
        finally:
            with self._busy_lock:
                self._busy -= 1
            self._slot_sem.release()

    def _error(self, msg: str) -> ExecResult:
        return ExecResult(status=Status.SANDBOX_ERROR, error=msg, isolation=self.layout.layers, missing_layers=tuple(self.missing))

    def _execute_leased(self, mode, job, secret, stdin_b, file_items, limits: Limits, lease) -> ExecResult:
        uid = lease.uid if lease else None
        clean, proc = True, None
        fds_to_close: list[int] = []
        cg_run = None
        killed_for = None
        t0 = time.monotonic()
        try:
            fds: dict[str, Any] = {}
            fds["job"] = _memfd("job", json.dumps(job).encode())
            fds["secret"] = _memfd("secret", json.dumps(secret).encode()) if secret is not None else -1
            chan_r, chan_w = os.pipe()
            fds["chan"] = chan_w
            fds_to_close += [fds["job"], chan_r, chan_w] + ([fds["secret"]] if fds["secret"] >= 0 else [])
            if "namespaces" in self.layout.layers:
                fds["harness"] = _memfd("harness", self._harness_pyc)
                fds_to_close.append(fds["harness"])
                if self.layout.seccomp_filter is not None:
                    fds["seccomp"] = _memfd("seccomp", self.layout.seccomp_filter)
                    fds_to_close.append(fds["seccomp"])
            else:
                fds["harness_path"] = self._harness_file
            file_fds = []
            for rel, data in file_items:
                fd = _memfd("file", data)
                fds_to_close.append(fd)
                file_fds.append((fd, rel))
            stdin_fd = _memfd("stdin", stdin_b)
            fds_to_close.append(stdin_fd)
            if self.cgroups is not None and uid is not None:
                # The tree's memory: the code's limit, the tmpfs it may fill, and the grader.
                mem = (limits.memory_mb + limits.tmpfs_mb + 64) * 1024 * 1024
                cg_run = self.cgroups.prepare(uid, mem, limits.max_processes + 4)
            hold = cg_run is not None and "namespaces" in self.layout.layers
            if hold:
                info_r, fds["info"] = os.pipe()
                fds["block"], block_w = os.pipe()
                fds_to_close += [info_r, fds["info"], fds["block"], block_w]
            argv = self.layout.command(uid, limits, fds, file_fds, mode, cg_run.procs_files if cg_run else None)
            pass_fds = [v for k, v in fds.items() if k != "harness_path" and isinstance(v, int) and v >= 0]
            pass_fds += [fd for fd, _ in file_fds]
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=stdin_fd,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=pass_fds,
                    env={"PATH": "/usr/bin:/bin"},
                    start_new_session=True,
                    cwd="/",
                )
            except OSError as e:
                return self._error(f"could not start the sandbox: {e}")
            # Our copies of the child's fds go now, so EOF on the pipes means the tree is done.
            keep = {chan_r} | ({info_r, block_w} if hold else set())
            for fd in fds_to_close:
                if fd not in keep:
                    os.close(fd)
            fds_to_close = list(keep)
            if hold:
                why = self._join_cgroup(proc, info_r, block_w, cg_run, t0 + limits.timeout_s)
                for fd in (info_r, block_w):
                    os.close(fd)
                    fds_to_close.remove(fd)
                if why:
                    clean = not self._cleanup(uid, proc, cg_run)
                    self._reap(proc)
                    os.close(chan_r)
                    fds_to_close = []
                    for f in (proc.stdout, proc.stderr):
                        f.close()
                    return self._error(why)
            out, err, chan, killed_for = self._pump(proc, chan_r, limits, t0 + limits.timeout_s)
            fds_to_close = []
            wall = time.monotonic() - t0
            rusage = None
            if killed_for is None:
                rusage = self._wait(proc, t0 + limits.timeout_s + 0.5)
                if rusage is None:
                    killed_for = Status.TIMEOUT
            left = self._cleanup(uid, proc, cg_run)
            clean = not left
            if rusage is None:
                rusage = self._reap(proc)
            return self._result(proc, rusage, out, err, chan, killed_for, wall, limits, cg_run, left)
        except BaseException:
            if proc is not None and proc.returncode is None:
                clean = not self._cleanup(uid, proc, cg_run)
                self._reap(proc)
            raise
        finally:
            for fd in fds_to_close:
                try:
                    os.close(fd)
                except OSError:
                    pass
            if lease is not None:
                if clean:
                    self._clean_uids.add(lease.uid)
                    self.leases.release(lease)
                else:
                    self._clean_uids.discard(lease.uid)
                    self.leases.quarantine(lease)

    @staticmethod
    def _join_cgroup(proc, info_r: int, block_w: int, cg_run, deadline: float) -> str | None:
        """Move bwrap and its namespace init (held on --block-fd) into the execution's cgroup,
        then let it go on. Everything the execution starts later inherits the cgroup."""
        data = b""
        info = None
        while info is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return "bwrap did not report its child in time"
            r, _, _ = select.select([info_r], [], [], left)
            if not r:
                continue
            chunk = os.read(info_r, 4096)
            if not chunk:
                return "the sandbox did not start: " + _early_stderr(proc, "bwrap exited")
            data += chunk
            try:
                info = json.loads(data)
            except ValueError:
                continue
        child = info.get("child-pid") if isinstance(info, dict) else None
        if not isinstance(child, int):
            return f"bwrap reported no child pid: {data[:200]!r}"
        cg_run.init_pid = child
        try:
            for procs in cg_run.procs_files:
                for pid in (proc.pid, child):
                    with open(procs, "w") as f:
                        f.write(str(pid))
        except ProcessLookupError:
            return "the sandbox did not start: " + _early_stderr(proc, "bwrap exited during set-up")
        except OSError as e:
            return f"could not move the execution into its cgroup: {e}"
        try:
            os.write(block_w, b"g")
        except BrokenPipeError:  # its set-up failed before it waited for us
            return "the sandbox did not start: " + _early_stderr(proc, "bwrap exited during set-up")
        except OSError as e:
            return f"could not release the sandbox: {e}"
        return None

    def _pump(self, proc, chan_r: int, limits: Limits, deadline: float):
        """Read stdout, stderr and the channel until EOF on all, a cap, or the deadline."""
        sel = selectors.DefaultSelector()
        bufs = {"out": bytearray(), "err": bytearray(), "chan": bytearray()}
        caps = {"out": limits.max_output_bytes, "err": limits.max_output_bytes, "chan": MAX_CHANNEL_BYTES}
        trunc = {"out": False, "err": False}
        sel.register(proc.stdout.fileno(), selectors.EVENT_READ, "out")
        sel.register(proc.stderr.fileno(), selectors.EVENT_READ, "err")
        sel.register(chan_r, selectors.EVENT_READ, "chan")
        open_ = 3
        killed_for = None
        try:
            while open_:
                left = deadline - time.monotonic()
                if left <= 0:
                    killed_for = Status.TIMEOUT
                    break
                for key, _ in sel.select(min(left, 1.0)):
                    name = key.data
                    try:
                        data = os.read(key.fd, 1 << 16)
                    except OSError:
                        data = b""
                    if not data:
                        sel.unregister(key.fd)
                        open_ -= 1
                        continue
                    buf = bufs[name]
                    room = caps[name] - len(buf)
                    buf += data[: max(room, 0)]
                    if len(data) > room:
                        if name == "chan":
                            killed_for = Status.SANDBOX_ERROR
                        else:
                            trunc[name] = True
                            killed_for = Status.OUTPUT_LIMIT
                if killed_for:
                    break
        finally:
            sel.close()
            proc.stdout.close()
            proc.stderr.close()
            os.close(chan_r)
        chan = []
        for line in bytes(bufs["chan"]).split(b"\n"):
            if line.strip():
                try:
                    msg = json.loads(line)
                except ValueError:
                    chan.append({"event": "garbled"})
                    continue
                chan.append(msg if isinstance(msg, dict) else {"event": "garbled"})
        out = {"text": bufs["out"].decode("utf-8", "replace"), "truncated": trunc["out"]}
        err = {"text": bufs["err"].decode("utf-8", "replace"), "truncated": trunc["err"]}
        return out, err, chan, killed_for

    @staticmethod
    def _wait(proc, deadline: float):
        """wait4 the outer process until the deadline; rusage, or None if still running."""
        while True:
            try:
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid:
                proc.returncode = _decode_status(status)
                return ru
            if time.monotonic() > deadline:
                return None
            time.sleep(0.002)

    @staticmethod
    def _reap(proc):
        if proc.returncode is not None:
            return None
        try:
            _, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = _decode_status(status)
            return ru
        except ChildProcessError:
            proc.returncode = -signal.SIGKILL
            return None

    def _members(self, uid: int | None, cg_run) -> set[int]:
        """Live processes of the execution: the cgroup lists them exactly; without one, every
        process of the execution's uid (nothing else runs under it)."""
        if cg_run is not None:
            pids = Cgroups.pids(cg_run)
            if cg_run.init_pid is not None and uid is not None and _alive_with_uid(cg_run.init_pid, uid):
                pids.add(cg_run.init_pid)
            return pids
        if uid is not None:
            return set(slots.pids_of_uid(uid))
        return set()

    def _leftovers_of_new_lease(self, uid: int, limits: Limits) -> list[int]:
        """A uid this process has not used cleanly before may hold processes of a host process
        that died (its sandboxes die with it, but be sure): kill them before reuse."""
        if uid in self._clean_uids:
            return []
        return self._cleanup(uid, None, None)

    def _cleanup(self, uid: int | None, proc, cg_run) -> list[int]:
        """Kill every process of the execution; returns pids still alive after the wait."""
        if uid is None and cg_run is None:
            # Weak isolation without a uid: the process group is all we can reach.
            if proc is not None and proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
            return []
        deadline = time.monotonic() + _CLEANUP_WAIT_S
        outer = proc.pid if proc is not None and proc.returncode is None else None
        while True:
            victims = self._members(uid, cg_run)
            # Inner processes first: the outer bwrap then reaps its init and exits by itself,
            # so no orphan is left for the host's init to reap.
            inner = victims - {outer} if outer else victims
            for pid in inner:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if outer is not None and not inner:
                if self._wait_exit(proc, 0.5) is None and proc.returncode is None:
                    try:
                        os.kill(outer, signal.SIGKILL)
                    except OSError:
                        pass
                outer = None
                continue
            if not victims:
                return []
            if time.monotonic() > deadline:
                return sorted(victims)
            time.sleep(0.002)

    def _wait_exit(self, proc, timeout: float):
        return self._wait(proc, time.monotonic() + timeout)

    def _result(self, proc, ru, out, err, chan, killed_for, wall, limits: Limits, cg_run, left) -> ExecResult:
        rc = proc.returncode
        exit_code = sig = None
        if rc is not None and rc >= 0:
            exit_code = rc
            if "namespaces" in self.layout.layers and rc > 128 and rc - 128 < 65:
                # bwrap reports a child killed by signal N as 128+N.
                sig, exit_code = rc - 128, None
        elif rc is not None:
            sig = -rc
        cpu = Cgroups.cpu_seconds(cg_run) if cg_run is not None else None
        if cpu is None:  # rusage: misses what bwrap's init leaves to others to reap
            cpu = (ru.ru_utime + ru.ru_stime) if ru is not None else 0.0
        started = bool(chan) and chan[0].get("event") == "started"
        res = ExecResult(
            status=Status.OK,
            exit_code=exit_code,
            signal=sig,
            stdout=out["text"],
            stderr=err["text"],
            stdout_truncated=out["truncated"],
            stderr_truncated=err["truncated"],
            wall_s=round(wall, 6),
            cpu_s=round(cpu, 6),
            isolation=self.layout.layers,
            missing_layers=tuple(self.missing),
            channel=[m for m in chan if m.get("event") != "started"],
        )
        if left:
            res.status, res.error = Status.SANDBOX_ERROR, f"processes survived cleanup: {left}"
        elif killed_for == Status.SANDBOX_ERROR:
            res.status, res.error = Status.SANDBOX_ERROR, "the grader channel exceeded its size limit"
        elif killed_for is not None:
            res.status = killed_for
            if killed_for == Status.TIMEOUT:
                res.error = f"wall-clock limit {limits.timeout_s}s"
                if cg_run is not None and self.cgroups.oom_killed(cg_run):
                    res.error += " (the memory limit's OOM killer also fired)"
        elif not started:
            res.status = Status.SANDBOX_ERROR
            res.error = "the sandbox did not start: " + (err["text"].strip().splitlines() or ["no output"])[-1][:500]
        elif cg_run is not None and self.cgroups.oom_killed(cg_run):
            res.status = Status.MEMORY
        elif sig in (signal.SIGXCPU,) or (sig == signal.SIGKILL and cpu >= limits.effective_cpu_s):
            res.status, res.error = Status.TIMEOUT, f"CPU limit {limits.effective_cpu_s}s"
        elif sig is not None:
            res.status = Status.KILLED
        elif exit_code != 0:
            last = (err["text"].rstrip().splitlines() or [""])[-1]
            res.status = Status.MEMORY if last.startswith("MemoryError") else Status.FAILED
        return res

    # ------------------------------------------------------------------ self-check

    def _probe(self) -> None:
        """One real execution with every layer, so a broken host fails here and not at step 300."""
        r = self.run("import sys; print('probe', sys.version_info[0])", limits=Limits(timeout_s=30))
        if r.status != Status.OK or r.stdout.strip() != "probe 3":
            detail = r.error or r.stderr.strip()[-500:] or r.status
            raise IsolationUnavailable({"probe": f"a trivial program failed in the sandbox ({r.status}): {detail}"})


def _early_stderr(proc, default: str) -> str:
    """What bwrap said before it gave up (it exits at once, so a short wait is enough)."""
    try:
        if select.select([proc.stderr], [], [], 1.0)[0]:
            err = os.read(proc.stderr.fileno(), 4096).decode(errors="replace").strip()
            if err:
                return err.splitlines()[-1][:500]
    except (OSError, ValueError):
        pass
    return default


def _alive_with_uid(pid: int, uid: int) -> bool:
    """Is `pid` a live (not zombie) process of `uid`? (A reused pid of someone else is not.)"""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            data = f.read(1024)
    except OSError:
        return False
    state = data.find(b"\nState:")
    if state >= 0 and data[state + 8 : state + 9] in (b"Z", b"X"):
        return False
    i = data.find(b"\nUid:")
    return i >= 0 and str(uid).encode() in data[i : data.find(b"\n", i + 1)].split()


def _decode_status(status: int) -> int:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


# ---------------------------------------------------------------------- process-wide default

_default: Sandbox | None = None
_default_lock = threading.Lock()


def default_sandbox() -> Sandbox:
    global _default
    with _default_lock:
        if _default is None:
            _default = Sandbox(SandboxConfig())
        return _default


def configure(config: SandboxConfig) -> Sandbox:
    """Replace the process-wide sandbox used by run() / run_python() and the code reward."""
    global _default
    sb = Sandbox(config)
    with _default_lock:
        old, _default = _default, sb
    if old is not None:
        old.close()
    return sb

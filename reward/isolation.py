"""Hard per-sample deadlines for reward code we do not control: run it in child processes
that are killed (with everything they started) when a call overruns, then replaced.

A thread cannot be stopped, and a Python loop or a C call such as `str(10**10**6)` ignores
any timeout set inside its own process, so custom rewards run here by default. Each child
loads the plugin once and then serves calls over a socket pair; the protocol is pickles of
(samples, timeout) -> outcomes. The child's stdout is redirected to stderr so a plugin's
print() cannot corrupt anything. Children run in their own session, so a kill reaches the
processes a plugin started too; and the kernel SIGKILLs a child whose parent dies (a reward
worker killed by the pool does not leave a plugin spinning). That signal is tied to the
thread that started the child: should that thread end first, the idle child dies and is
replaced before its next call. A child whose resident memory (with its subprocesses') passes
the cap (reward.pool.memory_limit_mb) is killed the same way; see ProcessRewardFunction.

Not a security boundary: a custom reward is the user's own code. Untrusted model output runs
in `sandboxes/`, never here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection, wait
from typing import Any

import psutil

from qwen25_rl import child_process_env
from qwen25_rl.reward.plugins import PluginError, PluginSpec
from qwen25_rl.reward.types import FunctionOutcome, RewardSample

STARTUP_TIMEOUT_S = 120.0
# Default cap on a child's resident memory, its subprocesses included (reward.pool.memory_limit_mb).
DEFAULT_MEMORY_LIMIT_MB = 4096
# How often a running call's memory is read (its own RSS: about 0.1 ms), and how often the
# list of its subprocesses is refreshed (a scan of /proc: a few ms).
MEMORY_POLL_S = 0.05
TREE_REFRESH_S = 0.5


class _Child:
    """One child process serving calls of one plugin."""

    def __init__(self, spec: PluginSpec, name: str):
        parent_sock, child_sock = socket.socketpair()
        env = child_process_env()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qwen25_rl.reward.isolation", str(child_sock.fileno()), str(os.getpid())],
            pass_fds=(child_sock.fileno(),),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.name = name
        self.busy_since: float | None = None
        self._ps: psutil.Process | None = None
        self._tree: list[psutil.Process] = []
        self.job: tuple[list[int], float] | None = None  # (sample indices, deadline)
        self.conn.send(spec)
        if not self.conn.poll(STARTUP_TIMEOUT_S):
            self.kill()
            raise PluginError(f"custom reward {name!r}: child process did not load the plugin within {STARTUP_TIMEOUT_S:g} s")
        try:
            status, info = self.conn.recv()
        except (EOFError, OSError) as e:
            self.kill()
            raise PluginError(f"custom reward {name!r}: child process died while loading the plugin (exit {self.proc.poll()})") from e
        if status != "ready":
            self.kill()
            raise PluginError(info)
        self.batched: bool = info["batched"]

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            self.conn.close()
        except OSError:
            pass

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_bytes(self, refresh_tree: bool) -> int:
        """Resident memory of the child and of the processes it started (the list of those is
        re-read when `refresh_tree`; reading it scans /proc)."""
        try:
            if self._ps is None:
                self._ps = psutil.Process(self.proc.pid)
            if refresh_tree:
                self._tree = self._ps.children(recursive=True)
            total = self._ps.memory_info().rss
        except psutil.Error:  # it just died: the caller sees that on the socket
            return 0
        for p in self._tree:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total


class ProcessRewardFunction:
    """A custom reward served by `processes` child processes with a hard per-sample deadline
    and a memory cap.

    Per-sample styles get one sample per call; batch styles (trl, openrlhf) get up to
    `batch_size` samples per call and a deadline of timeout_s x that many samples. A call that
    overruns is killed: its samples are timeouts, the child is replaced before the next call.
    A child that dies (segfault, os._exit, a signal) makes its samples errors and is replaced
    too. A child whose resident memory (its own plus its subprocesses') passes
    `memory_limit_mb` during a call is killed: its samples are errors naming the limit; one
    found above the cap after it answered keeps its answers and is recycled.

    Every failed outcome carries `details={"failure": cause}` (timeout, memory, crash), and
    `failures` counts the failed calls per cause; `restarts` counts the children replaced
    (`recycled` those replaced for memory after a call that succeeded).

    The memory cap is a watchdog on RSS (polled every MEMORY_POLL_S while a call runs), not
    an rlimit: RLIMIT_AS counts address space a process reserves without using (thread
    stacks, allocator arenas, the mappings of torch or numpy, so a plugin importing them
    could fail at a cap far above what it uses), RLIMIT_AS/RLIMIT_DATA surface as a
    MemoryError inside the plugin, which it may catch or turn into an abort, and neither sees
    the subprocesses a plugin starts (each has its own limit). RSS is what the machine runs
    out of, and killing from outside gives one clear verdict. The price: between two polls a
    plugin can overshoot by what it allocates in MEMORY_POLL_S.
    """

    def __init__(
        self,
        spec: PluginSpec,
        name: str,
        processes: int = 1,
        batch_size: int = 1,
        memory_limit_mb: float | None = DEFAULT_MEMORY_LIMIT_MB,
    ):
        self.spec, self.name = spec, name
        self.processes = max(1, processes)
        self.memory_limit_mb = memory_limit_mb
        self._children: list[_Child | None] = [_Child(spec, name)]  # loads now: fail at start-up
        self._children += [None] * (self.processes - 1)
        self.batch_size = max(1, batch_size) if self._children[0].batched else 1
        self.restarts = 0
        self.failures: dict[str, int] = {"timeout": 0, "memory": 0, "crash": 0}
        self.recycled = 0  # children replaced for memory after a call that succeeded

    def _child(self, i: int) -> _Child:
        c = self._children[i]
        if c is None or not c.alive():
            if c is not None:
                c.kill()
            c = self._children[i] = _Child(self.spec, self.name)
        return c

    def _failed(self, status: str, cause: str, error: str, n: int) -> list[FunctionOutcome]:
        self.failures[cause] = self.failures.get(cause, 0) + 1
        return [FunctionOutcome(None, status, error, {"failure": cause}) for _ in range(n)]  # type: ignore[arg-type]

    def _over_limit(self, c: _Child, refresh_tree: bool) -> int | None:
        """The child's RSS (with its subprocesses') in bytes when above the cap, else None."""
        if self.memory_limit_mb is None:
            return None
        rss = c.rss_bytes(refresh_tree)
        return rss if rss > self.memory_limit_mb * 2**20 else None

    def _memory_error(self, rss: int) -> str:
        return (
            f"custom reward {self.name!r} used {rss / 2**20:.0f} MB, more than its memory limit of "
            f"{self.memory_limit_mb:g} MB (reward.pool.memory_limit_mb); its process was killed"
        )

    def score_batch(self, samples: list[RewardSample], timeout_s: float) -> list[FunctionOutcome]:
        out: list[FunctionOutcome | None] = [None] * len(samples)
        pending = [list(range(i, min(i + self.batch_size, len(samples)))) for i in range(0, len(samples), self.batch_size)]
        pending.reverse()
        running: dict[int, _Child] = {}
        tree_checked = 0.0
        while pending or running:
            for i in range(self.processes):
                if pending and i not in running:
                    idx = pending.pop()
                    c = self._child(i)
                    try:
                        c.conn.send(([samples[j] for j in idx], timeout_s))
                    except OSError:  # it died while idle, just now
                        for j, r in zip(idx, self._failed("error", "crash", self._death(c, "before scoring"), len(idx))):
                            out[j] = r
                        self._replace(i)
                        continue
                    c.job = (idx, time.monotonic() + timeout_s * len(idx))
                    running[i] = c
            if not running:
                continue
            now = time.monotonic()
            next_deadline = min(c.job[1] for c in running.values())
            wait_s = max(0.0, next_deadline - now)
            if self.memory_limit_mb is not None:
                wait_s = min(wait_s, MEMORY_POLL_S)
            ready = wait([c.conn for c in running.values()], timeout=wait_s)
            now = time.monotonic()
            refresh_tree = now - tree_checked >= TREE_REFRESH_S
            if refresh_tree:
                tree_checked = now
            for i, c in list(running.items()):
                idx, deadline = c.job
                if c.conn in ready:
                    try:
                        results = c.conn.recv()
                    except (EOFError, OSError):
                        results = self._failed("error", "crash", self._death(c, "while scoring"), len(idx))
                        self._replace(i)
                    else:
                        if self._over_limit(c, refresh_tree=True) is not None:
                            self.recycled += 1  # it answered: keep the answers, recycle the child
                            self._replace(i)
                    for j, r in zip(idx, results):
                        out[j] = r
                    del running[i]
                elif now >= deadline:
                    msg = f"custom reward {self.name!r} did not finish within {timeout_s:g} s; its process was killed"
                    for j, r in zip(idx, self._failed("timeout", "timeout", msg, len(idx))):
                        out[j] = r
                    self._replace(i)
                    del running[i]
                elif (rss := self._over_limit(c, refresh_tree)) is not None:
                    for j, r in zip(idx, self._failed("error", "memory", self._memory_error(rss), len(idx))):
                        out[j] = r
                    self._replace(i)
                    del running[i]
        return out  # type: ignore[return-value]

    def _death(self, c: _Child, when: str) -> str:
        try:
            code = c.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # closed its socket but still runs: end it
            c.kill()
            code = c.proc.poll()
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
            if code == -signal.SIGKILL:
                how += ": by itself, another process or the kernel's out-of-memory killer"
        else:
            how = f"exit code {code}"
        return f"custom reward {self.name!r}: its process died ({how}) {when}; it was replaced"

    def _replace(self, i: int) -> None:
        c = self._children[i]
        if c is not None:
            c.kill()
        self._children[i] = None  # restarted lazily, before its next call
        self.restarts += 1

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self._children if c is not None and c.alive()]

    def close(self) -> None:
        for i, c in enumerate(self._children):
            if c is not None:
                c.kill()
                self._children[i] = None


def limit_memory(scorer: Any, limit_mb: float | None) -> None:
    """Give every process-isolated custom reward of a RewardScorer the memory cap
    `limit_mb` (reward.pool.memory_limit_mb; None: no cap). The cap is enforced from this
    side, so it applies to children already started."""
    for _, fn in getattr(scorer, "functions", []):
        if isinstance(fn, ProcessRewardFunction):
            fn.memory_limit_mb = limit_mb


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies (a reward worker killed by the pool must not
    leave a plugin spinning in an infinite loop). Linux only; elsewhere EOF on the socket
    still ends an idle child."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def _child_main(fd: int, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    from qwen25_rl.reward.plugins import PluginReward

    # Anything the plugin prints goes to stderr; the socket carries only our protocol.
    sys.stdout = sys.stderr
    conn = Connection(fd)
    spec: PluginSpec = conn.recv()
    try:
        plugin = PluginReward(spec)
    except BaseException as e:
        conn.send(
            ("error", str(e) if isinstance(e, PluginError) else f"custom reward {spec.path!r}: loading failed: {type(e).__name__}: {e}")
        )
        return
    conn.send(("ready", {"batched": plugin.batched, "style": plugin.style}))
    while True:
        try:
            samples, timeout_s = conn.recv()
        except (EOFError, OSError):
            return
        result: Any = plugin.score(samples, timeout_s)
        conn.send(result)


if __name__ == "__main__":
    _child_main(int(sys.argv[1]), int(sys.argv[2]))

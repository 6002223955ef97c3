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
replaced before its next call.

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

from qwen25_rl import child_process_env
from qwen25_rl.reward.plugins import PluginError, PluginSpec
from qwen25_rl.reward.types import FunctionOutcome, RewardSample

STARTUP_TIMEOUT_S = 120.0


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


class ProcessRewardFunction:
    """A custom reward served by `processes` child processes with a hard per-sample deadline.

    Per-sample styles get one sample per call; batch styles (trl, openrlhf) get up to
    `batch_size` samples per call and a deadline of timeout_s x that many samples. A call that
    overruns is killed: its samples are timeouts, the child is replaced before the next call.
    A child that dies (segfault, os._exit) makes its samples errors and is replaced too.
    """

    def __init__(self, spec: PluginSpec, name: str, processes: int = 1, batch_size: int = 1):
        self.spec, self.name = spec, name
        self.processes = max(1, processes)
        self._children: list[_Child | None] = [_Child(spec, name)]  # loads now: fail at start-up
        self._children += [None] * (self.processes - 1)
        self.batch_size = max(1, batch_size) if self._children[0].batched else 1
        self.restarts = 0

    def _child(self, i: int) -> _Child:
        c = self._children[i]
        if c is None or not c.alive():
            if c is not None:
                c.kill()
            c = self._children[i] = _Child(self.spec, self.name)
        return c

    def score_batch(self, samples: list[RewardSample], timeout_s: float) -> list[FunctionOutcome]:
        out: list[FunctionOutcome | None] = [None] * len(samples)
        pending = [list(range(i, min(i + self.batch_size, len(samples)))) for i in range(0, len(samples), self.batch_size)]
        pending.reverse()
        running: dict[int, _Child] = {}
        while pending or running:
            for i in range(self.processes):
                if pending and i not in running:
                    idx = pending.pop()
                    c = self._child(i)
                    c.conn.send(([samples[j] for j in idx], timeout_s))
                    c.job = (idx, time.monotonic() + timeout_s * len(idx))
                    running[i] = c
            now = time.monotonic()
            next_deadline = min(c.job[1] for c in running.values())
            ready = wait([c.conn for c in running.values()], timeout=max(0.0, next_deadline - now))
            for i, c in list(running.items()):
                idx, deadline = c.job
                if c.conn in ready:
                    try:
                        results = c.conn.recv()
                    except (EOFError, OSError):
                        code = c.proc.wait()
                        err = f"custom reward {self.name!r}: its process died (exit code {code}) while scoring"
                        results = [FunctionOutcome.failed("error", err)] * len(idx)
                        self._replace(i)
                    for j, r in zip(idx, results):
                        out[j] = r
                    del running[i]
                elif time.monotonic() >= deadline:
                    for j in idx:
                        out[j] = FunctionOutcome.failed(
                            "timeout", f"custom reward {self.name!r} did not finish within {timeout_s:g} s; its process was killed"
                        )
                    self._replace(i)
                    del running[i]
        return out  # type: ignore[return-value]

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

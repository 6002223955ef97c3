"""Whether a test left processes behind: the processes of a run carry its fault seam's state path
in their environment, and any child of this test process started during the test counts too.
Children that existed before the test (the session's shared Ray, started by an earlier test), and
what they start (the raylet's pool of idle workers), do not: they belong to the session, not to the
run."""

from __future__ import annotations

import time
from pathlib import Path

import psutil


def assert_run_gone(state: Path, since: float, timeout_s: float = 20.0) -> None:
    """Wait (bounded: Ray's processes exit shortly after the driver) until no process carries
    `state` in QWEN25_RL_FAULT_INJECT and no child of this process started at or after `since`."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if str(state) in (p.environ().get("QWEN25_RL_FAULT_INJECT") or ""):
                    left.append((p.pid, " ".join(p.info["cmdline"] or [])[:120]))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        children = []
        for c in psutil.Process().children(recursive=True):
            try:
                if c.create_time() >= since - 1 and c.is_running() and c.status() != psutil.STATUS_ZOMBIE and not _of_the_session(c, since):
                    children.append(c)
            except psutil.Error:
                pass
        if not left and not children:
            return
        assert time.monotonic() < deadline, f"processes left behind: {left} {children}"
        time.sleep(0.5)


def _of_the_session(proc: psutil.Process, since: float) -> bool:
    """Started by a process that existed before the test (the session's shared Ray: its raylet
    keeps a pool of idle workers): the session's, not the run's. The run's own actors carry its
    fault seam's state path and are found by that."""
    me = psutil.Process().pid
    try:
        for parent in proc.parents():
            if parent.pid == me:
                return False
            if parent.create_time() < since - 1:
                return True
    except psutil.Error:
        pass
    return False

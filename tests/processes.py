"""Whether a test left processes behind: the processes of a run carry its fault seam's state path
in their environment, and any child of this test process started during the test counts too.
Children that existed before the test (the session's shared Ray, started by an earlier test) do
not: they belong to the session, not to the run."""

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
                if c.create_time() >= since - 1 and c.is_running() and c.status() != psutil.STATUS_ZOMBIE:
                    children.append(c)
            except psutil.Error:
                pass
        if not left and not children:
            return
        assert time.monotonic() < deadline, f"processes left behind: {left} {children}"
        time.sleep(0.5)

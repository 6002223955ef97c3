"""Where each Ray Train worker is, and the worker-failure test seam.

Progress. Every worker writes, at the start of each optimizer step, a small JSON file in the
run folder (`.worker_rank{R}.json`: rank, the step it is training, its pid and node, the time),
replaced atomically. A worker killed from outside (OOM killer, SIGKILL, a lost node) cannot say
where it was; this file can. The Train controller's callback (pretrain.callbacks) puts the step
into the `worker_error` row of each failure, and the driver names the worker and the step when
the run stops after `trainer.max_failures` restarts (pretrain.driver).

Fault seam (the chaos tests' only; unset in every real run): `QWEN25_RL_FAIL_AT_STEP=K` or
`K:RANK` (rank 0 when not given) makes that worker SIGKILL itself at the start of step K, as the
OOM killer would. It fires `QWEN25_RL_FAIL_TIMES` times (default 1) per run folder, counted in
the marker file `.fault_step{K}_rank{R}` there, so a worker group that Ray Train restarted from
a checkpoint before step K does not fire again (or does, up to the count: past
`trainer.max_failures`). The driver reads the variables and hands them to the workers in the
plan, so they work under `ray job submit` too.

Standard library only: the controller reads these files without importing torch.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

FAIL_ENV = "QWEN25_RL_FAIL_AT_STEP"
FAIL_TIMES_ENV = "QWEN25_RL_FAIL_TIMES"


def progress_file(run_dir: str | Path, rank: int) -> Path:
    return Path(run_dir) / f".worker_rank{rank}.json"


def write_progress(run_dir: str | Path, rank: int, step: int, phase: str) -> None:
    """Record that `rank` is training (1-based) `step` now."""
    path = progress_file(run_dir, rank)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    info = {"rank": rank, "step": step, "phase": phase, "pid": os.getpid(), "node": socket.gethostname(), "time": time.time()}
    try:
        tmp.write_text(json.dumps(info))
        os.replace(tmp, path)
    except OSError:  # progress is a diagnostic: never a reason to stop training
        pass


def read_progress(run_dir: str | Path, rank: int) -> dict[str, Any] | None:
    try:
        return json.loads(progress_file(run_dir, rank).read_text())
    except (OSError, ValueError):
        return None


def fault_from_env(environ: dict[str, str] | None = None) -> dict[str, int] | None:
    """The seam's setting from the environment, for the plan; None when unset."""
    env = os.environ if environ is None else environ
    spec = env.get(FAIL_ENV)
    if not spec:
        return None
    step, _, rank = spec.partition(":")
    return {"step": int(step), "rank": int(rank or 0), "times": int(env.get(FAIL_TIMES_ENV) or 1)}


def maybe_fail(fault: dict[str, int] | None, run_dir: str | Path | None, rank: int, step: int) -> None:
    """SIGKILL this process if the seam names this rank and step and has fired fewer times than
    asked in this run folder."""
    if not fault or run_dir is None or fault["step"] != step or fault["rank"] != rank:
        return
    marker = Path(run_dir) / f".fault_step{step}_rank{rank}"
    try:
        fired = int(marker.read_text() or 0)
    except (OSError, ValueError):
        fired = 0
    if fired >= fault["times"]:
        return
    with open(marker, "w") as f:
        f.write(str(fired + 1))
        f.flush()
        os.fsync(f.fileno())
    print(f"{FAIL_ENV}: worker rank {rank} kills itself at step {step} (time {fired + 1} of {fault['times']})", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def died_first(worker_exceptions: dict[int, BaseException]) -> list[tuple[int, BaseException]]:
    """The failed ranks, those whose process died (Ray Train's health check found the actor
    gone: SIGKILL, OOM, a lost node) before those that raised (often only because a peer died
    under a collective), then by rank."""

    def died(exc: BaseException) -> bool:
        return type(exc).__name__ == "WorkerHealthCheckFailedError" or "ActorDied" in type(exc).__name__

    return sorted(worker_exceptions.items(), key=lambda item: (not died(item[1]), item[0]))


def cause_of(exc: BaseException, limit: int = 400) -> str:
    """One line saying why a rank failed: for a process that died, what Ray says of its end
    (not the worker's whole description); else the exception."""
    inner = getattr(exc, "health_check_failure", None)
    if inner is not None:
        text = " ".join(str(inner).split())
        for start in ("The actor is dead because", "The actor died"):
            if start in text:
                text = text[text.index(start) :]
                break
        return f"its process died ({type(inner).__name__}: {text})"[:limit]
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:limit]

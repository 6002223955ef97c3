"""Waiting on remote calls of Ray actors with a deadline, and explaining what went wrong.

The one home of "wait for these actor calls, but not forever" in the RL loop. `wait_calls`
waits for every call by one deadline; a call still running at the deadline raises `WorkerHung`
naming the actor (class, rank, Ray name, node, pid), the method and the seconds waited, with a
stack dump of the stuck process (py-spy where installed, else the faulthandler dump every
`DistributedWorker` answers SIGUSR1 with); a call whose actor died raises `WorkerDied` naming
the same. Callers that can recover (a restarted rollout worker) catch `WorkerDied`; the rest
let both travel to the stage's restart loop or the user.

(Reward code waits by its own per-sample deadlines: qwen25_rl.reward.deadlines.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen25_rl.errors import UserError

# Where a worker's faulthandler writes its stacks on SIGUSR1 (the fallback when py-spy is
# missing): one file per process.
STACK_DIR = Path(tempfile.gettempdir()) / "qwen25_rl_stacks"


@dataclass(frozen=True)
class ActorInfo:
    """Who a remote call went to."""

    cls: str
    rank: int
    name: str
    node_id: str = "?"
    pid: int | None = None

    def describe(self) -> str:
        return f"{self.cls} rank {self.rank} ({self.name}, node {self.node_id[:12]}, pid {self.pid})"


@dataclass(frozen=True)
class Call:
    """One remote call in flight: its reference, its actor and the method called."""

    ref: Any  # ray.ObjectRef
    actor: ActorInfo
    method: str


class WorkerFault(UserError, RuntimeError):
    """A worker died or hung in a remote call (`actor`, `method` name it). The CLI prints it as
    a message (the stack dump is the useful part), not as the driver's traceback."""

    def __init__(self, message: str, actor: ActorInfo, method: str):
        super().__init__(message)
        self.actor, self.method = actor, method


class WorkerDied(WorkerFault):
    """The actor's process exited (crashed, killed, OOM) while a call was in flight."""


class WorkerHung(WorkerFault):
    """A call did not return within its deadline."""

    def __init__(self, message: str, actor: ActorInfo, method: str, stack: str):
        super().__init__(message, actor, method)
        self.stack = stack


def _same_node(node_id: str) -> bool:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() == node_id
    except Exception:
        return False


def stack_dump(actor: ActorInfo, timeout_s: float = 15.0) -> str:
    """The Python stacks of the actor's process: py-spy (which Ray's dashboard also uses), else
    the worker's faulthandler dump (SIGUSR1). Only for a process on this node; otherwise a
    pointer to the dashboard."""
    if actor.pid is None:
        return "(no stack dump: the actor's pid is unknown)"
    if not _same_node(actor.node_id):
        return f"(no stack dump: the actor runs on node {actor.node_id}; `ray stack` there, or the dashboard's stack trace)"
    why = []
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if Path(spy).is_file():
        try:
            out = subprocess.run([spy, "dump", "--pid", str(actor.pid)], capture_output=True, text=True, timeout=timeout_s)
            if out.returncode == 0 and out.stdout.strip():
                return "py-spy dump:\n" + out.stdout.rstrip()
            why.append(f"py-spy: {(out.stderr or out.stdout).strip()[-300:]}")
        except (OSError, subprocess.TimeoutExpired) as e:
            why.append(f"py-spy: {e}")
    # faulthandler in the worker (DistributedWorker.__init__ registers SIGUSR1).
    path = STACK_DIR / f"{actor.pid}.txt"
    try:
        size = path.stat().st_size if path.exists() else 0
        os.kill(actor.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if path.exists() and path.stat().st_size > size:
                time.sleep(0.2)  # let it finish the dump
                with open(path, encoding="utf-8", errors="replace") as f:
                    f.seek(size)
                    return "faulthandler dump:\n" + f.read().rstrip()
            time.sleep(0.05)
        why.append("faulthandler: no dump within 5 s")
    except OSError as e:
        why.append(f"faulthandler: {e}")
    return "(no stack dump: " + "; ".join(why) + ")"


def wait_calls(calls: list[Call], timeout_s: float | None, *, what: str = "", limit_s: float | None = None) -> list[Any]:
    """Results of `calls` in order, waited for together until `timeout_s` (None: no deadline).

    Raises `WorkerDied` for the first call whose actor died, `WorkerHung` (with the stuck
    actor's stack) when calls are still running at the deadline. `what`: the phase, for the
    message ("generation at step 3"); `limit_s`: the configured deadline, when `timeout_s` is
    what is left of it."""
    import ray
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    if not calls:
        return []
    by_hex = {c.ref.hex(): c for c in calls}
    results: dict[str, Any] = {}
    start = time.monotonic()
    waiting = [c.ref for c in calls]
    # One at a time, so a death is reported at once: its peers in a collective would otherwise
    # hang until the deadline.
    while waiting:
        left = None if timeout_s is None else timeout_s - (time.monotonic() - start)
        if left is not None and left <= 0:
            break
        ready, waiting = ray.wait(waiting, num_returns=1, timeout=left)
        for r in ready:
            c = by_hex[r.hex()]
            try:
                results[r.hex()] = ray.get(r)
            except (RayActorError, ActorDiedError, ActorUnavailableError) as e:
                phase = f" during {what}" if what else ""
                raise WorkerDied(
                    f"{c.actor.describe()} died in {c.method}(){phase}: {str(e).strip().splitlines()[0][:300]}", c.actor, c.method
                ) from e
    done = set(results)
    stuck = [c for c in calls if c.ref.hex() not in done]
    if stuck:
        waited = time.monotonic() - start
        c = stuck[0]
        stack = stack_dump(c.actor)
        others = f" (and {len(stuck) - 1} more calls)" if len(stuck) > 1 else ""
        phase = f" during {what}" if what else ""
        raise WorkerHung(
            f"{c.actor.describe()} did not return from {c.method}(){phase} within {limit_s or timeout_s:g} s "
            f"(waited {waited:.1f} s){others}; it looks hung. Its stacks:\n{stack}",
            c.actor,
            c.method,
            stack,
        )
    return [results[c.ref.hex()] for c in calls]

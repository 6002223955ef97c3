"""MathVerifierPool: batches of math verifications with a hard per-sample deadline.

The fast paths (extraction, exact text, exact rationals) run in the caller's process: they
are bounded-time and decide most GSM8K-style answers without any IPC. Pairs that need sympy
go to worker processes. Inside a worker, a SIGALRM deadline at 80% of the budget ends slow
sympy work cleanly; a worker that still has not answered at the deadline is killed (SIGKILL:
C code that ignores signals, such as GMP arithmetic when sympy runs on gmpy2 or a regex
backtracking, never reaches a Python handler) and replaced. Either way the sample is
reported with status ``timeout``, never as a silent False.

Workers are forks of a zygote process (`reward.math_zygote`) that has sympy and math-verify
loaded, so a replacement is ready in milliseconds, no worker inherits the caller's threads,
and the caller's main script is never re-imported (no ``__main__`` guard needed).
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing.connection
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from qwen25_rl import child_process_env
from qwen25_rl.reward.math_check import DEFAULT_TIMEOUT_S, MathScore, MathStatus, SymbolicCheck, fast_check

# Address-space cap of one worker: sympy building a giant integer or expression gets a
# MemoryError instead of pushing a shared machine into swap or the OOM killer.
DEFAULT_WORKER_MEMORY_MB = 2048
# The worker's own soft deadline fires at this fraction of the hard one, so ordinary slow
# sympy ends with a clean timeout and the worker survives; the kill is the backstop.
SOFT_DEADLINE_FRACTION = 0.8
ZYGOTE_START_TIMEOUT_S = 120.0
WORKER_FORK_TIMEOUT_S = 30.0
# Requests queued at one worker: the one it is working on and the next.
QUEUE_DEPTH = 2


class _Zygote:
    """The process that forks workers (see reward/math_zygote.py for the protocol)."""

    def __init__(self, memory_mb: int | None):
        ours, theirs = socket.socketpair()
        self.ctrl = ours
        self.process = subprocess.Popen(
            [sys.executable, "-m", "qwen25_rl.reward.math_zygote", str(theirs.fileno()), str(memory_mb or 0)],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=child_process_env(),
        )
        theirs.close()
        self.ctrl.settimeout(ZYGOTE_START_TIMEOUT_S)
        try:
            ready = self.ctrl.recv(1)
        except TimeoutError:
            ready = b""
        if ready != b"R":
            self.close()
            raise RuntimeError(
                f"math verifier zygote did not start within {ZYGOTE_START_TIMEOUT_S:g}s "
                f"(exit code {self.process.poll()}; see its traceback above)"
            )
        self.ctrl.settimeout(WORKER_FORK_TIMEOUT_S)

    def fork(self) -> tuple[int, Connection]:
        try:
            self.ctrl.sendall(b"F")
            msg, fds, _flags, _addr = socket.recv_fds(self.ctrl, 32, 1)
        except OSError as exc:
            raise RuntimeError(f"math verifier zygote is gone (exit code {self.process.poll()})") from exc
        if not msg or not fds:
            raise RuntimeError(f"math verifier zygote is gone (exit code {self.process.poll()})")
        return int(msg), Connection(fds[0])

    def close(self) -> None:
        self.ctrl.close()  # EOF: the zygote exits, and its workers with it (PDEATHSIG)
        try:
            self.process.wait(5.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5.0)


@dataclass
class _InFlight:
    """Requests sent to one worker and not yet answered, oldest (the one running) first."""

    worker: _Worker
    queue: collections.deque = field(default_factory=collections.deque)
    head_started: float = 0.0  # time.monotonic() at which the worker started queue[0]


@dataclass
class _Worker:
    pid: int
    conn: Connection
    pidfd: int | None  # kill by pidfd where the kernel has them: no pid-reuse race

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, OSError):
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        self.conn.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _shutdown(state: dict) -> None:
    """Stop workers and the zygote (also run by the finalizer when a pool is dropped)."""
    if os.getpid() != state["owner_pid"]:
        # A forked copy of the owner (multiprocessing "fork", Ray): the processes are the
        # owner's; telling them to stop from here would break the owner's pool.
        return
    workers: list[_Worker] = state["workers"]
    for w in workers:
        with contextlib.suppress(OSError, ValueError):
            w.conn.send(None)
    deadline = time.monotonic() + 2.0
    for w in workers:
        with contextlib.suppress(OSError, ValueError):
            w.conn.poll(max(0.0, deadline - time.monotonic()))  # EOF once it has exited
        w.kill()
        w.close()
    workers.clear()
    if state["zygote"] is not None:
        state["zygote"].close()
        state["zygote"] = None


class MathVerifierPool:
    """Verify (response, gold) pairs with `num_workers` processes and a hard deadline per pair.

    Thread-safe (calls are serialised). Workers start on the first pair that needs sympy,
    so a pool that only ever sees numeric answers never starts a process.
    """

    def __init__(
        self,
        num_workers: int = 2,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        memory_mb: int | None = DEFAULT_WORKER_MEMORY_MB,
        fallback_last_number: bool = False,
        soft_deadline_fraction: float | None = SOFT_DEADLINE_FRACTION,
    ):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if soft_deadline_fraction is not None and not 0 < soft_deadline_fraction < 1:
            raise ValueError(f"soft_deadline_fraction must be in (0, 1) or None, got {soft_deadline_fraction}")
        self.num_workers = num_workers
        self.timeout_s = float(timeout_s)
        self.memory_mb = memory_mb
        self.fallback_last_number = fallback_last_number
        # None: no in-worker SIGALRM deadline, every overrun ends in a kill (work inside C
        # code, e.g. GMP big integers when sympy uses gmpy2, ignores SIGALRM anyway).
        self.soft_deadline_fraction = soft_deadline_fraction
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._closed = False
        self._state: dict = {"workers": [], "zygote": None, "owner_pid": os.getpid()}
        self._finalizer = weakref.finalize(self, _shutdown, self._state)

    # -- workers ---------------------------------------------------------------------------

    @property
    def _workers(self) -> list[_Worker]:
        return self._state["workers"]

    def _start_worker(self) -> _Worker:
        try:
            pid, conn = self._zygote().fork()
        except RuntimeError:
            # The zygote died (killed, OOM); its workers died with it. Start over once.
            self._state["zygote"].close()
            self._state["zygote"] = None
            pid, conn = self._zygote().fork()
        worker = _Worker(pid, conn, _open_pidfd(pid))
        self._workers.append(worker)
        self.counts["workers_started"] += 1
        return worker

    def _zygote(self) -> _Zygote:
        if self._state["zygote"] is None:
            self._state["zygote"] = _Zygote(self.memory_mb)
            self.counts["zygotes_started"] += 1
        return self._state["zygote"]

    def _replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        worker.close()
        self._workers.remove(worker)
        self.counts["workers_replaced"] += 1
        return self._start_worker()

    def process_ids(self) -> list[int]:
        """Pids of the zygote and the workers (for tests and monitoring)."""
        zygote = self._state["zygote"]
        return ([zygote.process.pid] if zygote else []) + [w.pid for w in self._workers]

    # -- scoring ---------------------------------------------------------------------------

    def score(self, response: str, gold: str, *, fallback_last_number: bool | None = None) -> MathScore:
        return self.score_batch([response], [gold], fallback_last_number=fallback_last_number)[0]

    def score_batch(
        self,
        responses: Sequence[str],
        golds: Sequence[str],
        *,
        fallback_last_number: bool | None = None,
    ) -> list[MathScore]:
        """One MathScore per pair, in order. Each pair gets at most `timeout_s` of symbolic work."""
        if len(responses) != len(golds):
            raise ValueError(f"{len(responses)} responses but {len(golds)} gold answers")
        fallback = self.fallback_last_number if fallback_last_number is None else fallback_last_number
        with self._lock:
            if self._closed:
                raise RuntimeError("MathVerifierPool is closed")
            if os.getpid() != self._state["owner_pid"]:
                raise RuntimeError("MathVerifierPool was created in another process (this one is a fork): create a new pool here")
            results: list[MathScore | None] = [None] * len(responses)
            pending: collections.deque[tuple[int, SymbolicCheck]] = collections.deque()
            for i, (response, gold) in enumerate(zip(responses, golds)):
                first = fast_check(response, gold, fallback_last_number=fallback)
                if isinstance(first, MathScore):
                    results[i] = first
                else:
                    pending.append((i, first))
            if pending:
                self._run_symbolic(pending, results)
            for r in results:
                self.counts[f"path_{r.path}"] += 1
                self.counts[f"status_{r.status.value}"] += 1
            return results  # type: ignore[return-value]

    def _run_symbolic(self, pending: collections.deque, results: list) -> None:
        while len(self._workers) < min(self.num_workers, len(pending)):
            self._start_worker()
        inflight: dict[Connection, _InFlight] = {}
        try:
            self._dispatch(pending, results, inflight)
        except BaseException:
            # Interrupted (Ctrl-C, a failed replacement): a busy worker would later answer a
            # request of the *next* batch with this batch's result. Kill those workers.
            for f in inflight.values():
                if f.queue:
                    f.worker.kill()
                    f.worker.close()
                    self._workers.remove(f.worker)
            raise

    def _dispatch(self, pending: collections.deque, results: list, inflight: dict) -> None:
        """Keep up to QUEUE_DEPTH requests at each worker until every pending pair has a result.

        With a second request already in its pipe, a worker never waits for this process to be
        scheduled between two comparisons (on a busy machine that wait costs more than the
        comparison). Each request's deadline starts when its worker starts it: at the send
        for the head of an idle worker, else at the worker's reported finish of the one before.
        """
        soft_s = None if self.soft_deadline_fraction is None else self.timeout_s * self.soft_deadline_fraction
        for w in self._workers:
            inflight[w.conn] = _InFlight(w)
        # Pairs whose worker died under them once: a second death is the answer's doing.
        crashed_once: set[int] = set()

        def send(f: _InFlight, i: int, check: SymbolicCheck) -> None:
            f.worker.conn.send((check.pred, check.gold, soft_s))
            if not f.queue:
                f.head_started = time.monotonic()
            f.queue.append((i, check))

        def requeue_rest(f: _InFlight) -> None:
            pending.extendleft(reversed(f.queue))
            f.queue.clear()

        def replace(f: _InFlight) -> None:
            del inflight[f.worker.conn]
            new = self._replace(f.worker)
            inflight[new.conn] = _InFlight(new)

        while pending or any(f.queue for f in inflight.values()):
            for f in sorted(inflight.values(), key=lambda f: len(f.queue)):
                while pending and len(f.queue) < QUEUE_DEPTH:
                    i, check = pending.popleft()
                    try:
                        send(f, i, check)
                    except (OSError, ValueError):  # died while idle (killed from outside)
                        pending.appendleft((i, check))
                        requeue_rest(f)
                        replace(f)
                        break
            busy = [f for f in inflight.values() if f.queue]
            if not busy:
                continue
            next_deadline = min(f.head_started + self.timeout_s for f in busy)
            ready = multiprocessing.connection.wait([f.worker.conn for f in busy], timeout=max(0.0, next_deadline - time.monotonic()))
            for f in busy:
                if f.worker.conn in ready:
                    try:
                        while f.queue and f.worker.conn.poll():
                            status, detail, finished_at = f.worker.conn.recv()
                            i, check = f.queue.popleft()
                            results[i] = check.score(MathStatus(status), detail)
                            f.head_started = finished_at
                    except (EOFError, OSError):
                        # Killed from outside, or crashed by the answer: one more try in a fresh
                        # worker tells the two apart. A pair that crashes it again is wrong (a
                        # policy must not be able to turn its answer into an error).
                        i, check = f.queue.popleft()
                        self.counts["worker_died"] += 1
                        if i in crashed_once:
                            results[i] = check.score(MathStatus.WRONG, "the answer crashed the verifier worker twice")
                            requeue_rest(f)
                        else:
                            crashed_once.add(i)
                            requeue_rest(f)
                            pending.appendleft((i, check))
                        replace(f)
                elif time.monotonic() >= f.head_started + self.timeout_s:
                    i, check = f.queue.popleft()
                    results[i] = check.score(
                        MathStatus.TIMEOUT,
                        f"no verdict within {self.timeout_s:g}s; verifier worker killed and replaced",
                    )
                    self.counts["killed"] += 1
                    requeue_rest(f)
                    replace(f)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._finalizer()

    def __enter__(self) -> MathVerifierPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

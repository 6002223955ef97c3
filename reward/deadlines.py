"""Waiting for work queued on a thread pool, each job by its own deadline.

The one home of the queue arithmetic every in-process reward runner needs: jobs go to a pool
of `workers` threads in order, so job i starts once the threads have got through the jobs
before it, which takes at most (sum of their limits) / workers. Its deadline is that plus its
own limit. A job past its deadline is reported as timed out at once; its thread runs on (a
thread cannot be killed: code that may hang for good belongs in a process, reward.isolation).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

T = TypeVar("T")


class TimedOut:
    """Stands for the result of a job that missed its deadline."""

    def __init__(self, limit_s: float):
        self.limit_s = limit_s


def queue_deadlines(start: float, limits: Sequence[float], workers: int) -> list[float]:
    """Each job's deadline (module doc): start + (limits of the jobs before it) / workers + its own."""
    out, before = [], 0.0
    for limit in limits:
        out.append(start + before / max(1, workers) + limit)
        before += limit
    return out


def run_with_deadlines(pool: Executor, workers: int, jobs: Sequence[Callable[[], T]], limits: Sequence[float]) -> list[T | TimedOut]:
    """Submit `jobs` to `pool` (which has `workers` threads) and collect their results in order,
    each waited for until its queue deadline; a late one is a `TimedOut`."""
    futures = [pool.submit(job) for job in jobs]
    out: list[T | TimedOut] = []
    for fut, limit, deadline in zip(futures, limits, queue_deadlines(time.monotonic(), limits, workers)):
        try:
            out.append(fut.result(timeout=max(0.0, deadline - time.monotonic())))
        except FutureTimeout:
            fut.cancel()
            out.append(TimedOut(limit))
    return out

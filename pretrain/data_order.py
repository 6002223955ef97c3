"""Deterministic, resumable data order: which packed row goes into which step (pure numpy).

The whole order of a training phase is fixed up front from the seed: `order[k]` is the row
used at global sample position k, so step s uses `order[s*B : (s+1)*B]` whatever happened
before. Resuming at step s therefore needs nothing but s, and the order does not depend on
the number of workers (a worker takes its slice of each step's B rows).

Mixtures follow the Qwen2.5 report's domain re-balancing: each source gets a share of the
phase's rows proportional to its weight; a source with fewer rows than its share is
repeated (up-sampled, a new shuffle per pass), one with more is sub-sampled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mixture_counts(weights: Sequence[float], total: int) -> list[int]:
    """Split `total` into integer counts proportional to `weights` (largest remainder;
    ties go to the earlier source). The counts sum to `total` exactly."""
    w = np.asarray(weights, dtype=np.float64)
    if w.size == 0 or (w <= 0).any() or not np.isfinite(w).all():
        raise ValueError(f"mixture weights must be positive and finite, got {list(weights)}")
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    exact = w / w.sum() * total
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    # Largest fractional part first; a stable sort keeps earlier sources first on ties.
    for i in np.argsort(-(exact - counts), kind="stable")[:short]:
        counts[i] += 1
    return [int(c) for c in counts]


def epoch_draws(num_rows: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` row indices from a source of `num_rows`: whole shuffled passes, then part of
    one more shuffled pass (each row at most once per pass)."""
    if num_rows <= 0:
        raise ValueError("a source with no rows cannot be sampled")
    passes = -(-count // num_rows) if count else 0
    out = [rng.permutation(num_rows) for _ in range(passes)]
    return np.concatenate(out)[:count] if out else np.zeros(0, dtype=np.int64)


def build_order(source_rows: Sequence[int], weights: Sequence[float], total: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """The phase's order over the concatenation of all sources' rows (source 0's rows first).

    Returns (order of length `total`, rows drawn per source).
    """
    if len(source_rows) != len(weights):
        raise ValueError("one weight per source")
    rng = np.random.default_rng(seed)
    counts = mixture_counts(weights, total)
    offsets = np.concatenate([[0], np.cumsum(source_rows)[:-1]]).astype(np.int64)
    parts = [offsets[k] + epoch_draws(int(source_rows[k]), counts[k], rng) for k in range(len(source_rows))]
    order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    rng.shuffle(order)
    return order.astype(np.int64), counts


def step_rows(order: np.ndarray, step: int, global_batch: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """The rows worker `rank` of `world` trains on at (0-based, within the phase) `step`."""
    if global_batch % world:
        raise ValueError(f"global batch {global_batch} is not divisible by {world} workers")
    start = step * global_batch
    if start + global_batch > order.size:
        raise IndexError(f"step {step} needs rows up to {start + global_batch}, the order has {order.size}")
    per = global_batch // world
    return order[start + rank * per : start + (rank + 1) * per]

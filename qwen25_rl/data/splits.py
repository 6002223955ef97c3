"""Train / held-out assignment by problem identity.

A problem's split is a pure function of its canonical key (not of generation order), so the
same problem lands in the same split whatever seed, count or process generated it, and a
held-out problem can never leak into training data built from another run.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "heldout")


def problem_id(key: str) -> str:
    """A short stable id for a canonical problem key."""
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]


def split_of(key: str, heldout_fraction: float, salt: str = "qwen25-rl") -> str:
    """'heldout' for about `heldout_fraction` of all keys, 'train' for the rest."""
    if not 0.0 <= heldout_fraction <= 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1], got {heldout_fraction}")
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return "heldout" if bucket < heldout_fraction else "train"

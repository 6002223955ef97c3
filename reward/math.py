"""Math answer verifier: extraction, fast exact/numeric paths, math-verify, hard deadlines.

Public entry points (kept stable; outside checks call them):

- ``verify(response, gold) -> bool``: extraction included; returns within its deadline on any
  input (the symbolic stage runs in a worker process that is killed at the deadline).
- ``extract_answer(response) -> str | None``.

For rewards: ``score_math`` (one pair, in this process) and ``MathVerifierPool`` (batches,
worker processes, hard per-sample deadline) return a `MathScore` that says what was
extracted, which path decided, and why.

Pipeline for one (response, gold) pair:

1. extract the answer (`reward.math_extract`: which box, phrase or line counts, and why);
   none -> status ``no_answer``;
2. an answer that hedges, negates or points elsewhere ("9 or 10", "\\neg 9", "10 \\to 9") is
   wrong, path ``refused`` (`reward.math_normalize.commitment_problem`);
3. normalise both (`reward.math_normalize`); equal text -> ``correct`` via path ``exact``;
4. a number gold and an answer that is a number (or a chain of numbers "x = 3 + 2 = 5"
   whose links hold) -> exact rational comparison, path ``numeric`` (no sympy);
5. otherwise the symbolic stage (`reward.math_sympy`), path ``sympy``, under a deadline.

Who is to blame decides the status. The answer's fault is a verdict, ``wrong``: it does not
parse, states a false equation, or exhausts the deadline (``timeout`` is reported as such but
counts as wrong, so a policy cannot wipe out its group's reward signal by being slow to check).
Only a verifier failure is ``error``: a gold that is empty, too long or unparsable.

Conventions, each with its reason where it is applied: anchoring (which box or phrase is the
answer, several boxes) in `reward.math_extract`; percent, degrees, units, decimal comma,
thousands separators, mixed numbers and the one tolerance rule for decimals in
`reward.math_normalize`; equation chains, unparsable answers and the numeric cross-check of a
symbolic "equal" in `reward.math_sympy`.
"""

from __future__ import annotations

import os
import threading

from qwen25_rl.reward.math_check import (
    DEFAULT_TIMEOUT_S,
    MathScore,
    MathStatus,
    extract_answer,
    fast_check,
    score_math,
    symbolic_verdict,
)
from qwen25_rl.reward.math_pool import MathVerifierPool

_default_pool = None
_default_pool_pid: int | None = None
_default_pool_lock = threading.Lock()


def default_pool() -> MathVerifierPool:
    """The process-wide pool behind `verify` (one worker, started on first symbolic need)."""
    global _default_pool, _default_pool_pid
    with _default_pool_lock:
        # A forked child must not talk to its parent's workers.
        if _default_pool is None or _default_pool_pid != os.getpid():
            _default_pool = MathVerifierPool(num_workers=1, timeout_s=DEFAULT_TIMEOUT_S)
            _default_pool_pid = os.getpid()
        return _default_pool


def verify(response: str, gold: str, *, fallback_last_number: bool = False) -> bool:
    """True when the final answer in `response` is equivalent to `gold`.

    `gold` is the answer ("\\frac{14}{3}") or a reference solution ending in \\boxed{} or
    ``#### N``. Timeouts and verifier errors count as not verified (False); use
    `score_math`/`MathVerifierPool` to tell them apart. Returns within about
    DEFAULT_TIMEOUT_S on any input.
    """
    return default_pool().score(response, gold, fallback_last_number=fallback_last_number).correct


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MathScore",
    "MathStatus",
    "MathVerifierPool",
    "default_pool",
    "extract_answer",
    "fast_check",
    "score_math",
    "symbolic_verdict",
    "verify",
]

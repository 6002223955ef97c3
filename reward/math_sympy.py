"""The symbolic stage: math-verify (sympy) on two normalised answers, with a gold parse cache.

This is the only part of the verifier that can run for unbounded time (sympy on
``9^{9^{9^9}}`` computes a 370-million-digit integer inside one C call). Callers put a
deadline around it: `soft_deadline` (SIGALRM, main thread only, interrupts Python code) and,
for a hard guarantee, `reward.math_pool.MathVerifierPool`, which kills the worker process.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from functools import lru_cache

from math_verify import parse as mv_parse
from math_verify import verify as mv_verify
from sympy import FiniteSet, Union
from sympy.core.relational import Relational

from reward.math import GOLD_CACHE_SIZE
from reward.math_normalize import e_notation_to_latex, mixed_numbers_to_fractions



class _DropTimeoutDisabledWarning(logging.Filter):
    # We pass timeout=None to math-verify on purpose (its SIGALRM timeout fails outside the
    # main thread and cannot interrupt C code); its one-time warning about that is noise.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


class DeadlineExceeded(BaseException):
    """Raised inside the symbolic stage when its soft deadline fires.

    A BaseException so that the `except Exception` blocks inside math-verify and sympy do not
    swallow it and turn a timeout into a silent False.
    """


@contextlib.contextmanager
def soft_deadline(seconds: float | None) -> Iterator[bool]:
    """Raise DeadlineExceeded in this thread after `seconds` (yields whether it is armed).

    Uses ITIMER_REAL, so it works only in the main thread and only while Python bytecode runs;
    it is not armed elsewhere, or when the caller already has a timer running.
    """
    armed = (
        seconds is not None
        and seconds > 0
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )
    if not armed:
        yield False
        return

    def on_alarm(signum, frame):
        raise DeadlineExceeded(f"symbolic comparison exceeded {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield True
    finally:
        # The alarm can fire during this cleanup itself; retry so the caller's handler is
        # always restored (the work finished, so that late alarm is dropped).
        for _ in range(3):
            try:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
                break
            except DeadlineExceeded:
                continue


def prepare_for_sympy(normalized: str) -> str:
    """Rewrites math-verify gets wrong, applied to both sides before parsing."""
    return mixed_numbers_to_fractions(e_notation_to_latex(normalized))


def _parse(normalized: str) -> list:
    # Inline-math delimiters make math-verify read the whole text as one LaTeX expression
    # (unwrapped, "2\frac{1}{2}" would be read as its last number).
    return mv_parse(f"${prepare_for_sympy(normalized)}$", parsing_timeout=None)


@lru_cache(maxsize=GOLD_CACHE_SIZE)
def parse_gold(normalized_gold: str) -> tuple:
    """Gold answers repeat across the samples of a group: parse each once per process."""
    return tuple(_parse(normalized_gold))


def _relations_to_set(expr):
    """{x < 0, x > 1} (from "x<0 or x>1") -> (-oo, 0) U (1, oo), so it compares with a union.

    math-verify turns "or" into a set of relations and then cannot compare it with the gold
    interval union; a set of one-variable inequalities means the union of their solution sets.
    """
    if isinstance(expr, FiniteSet) and len(expr) > 1 and all(isinstance(a, Relational) for a in expr.args):
        symbols = set().union(*(a.free_symbols for a in expr.args))
        if len(symbols) == 1:
            try:
                return Union(*(a.as_set() for a in expr.args))
            except Exception:  # as_set refuses non-polynomial relations: keep the original
                return expr
    return expr


def sympy_equal(normalized_pred: str, normalized_gold: str) -> bool:
    """math-verify's verdict on two normalised answers (no deadline of its own: see module doc)."""
    gold = list(parse_gold(normalized_gold))
    pred = _parse(normalized_pred)
    if not gold or not pred:
        return False
    pred = [_relations_to_set(p) for p in pred]
    # allow_set_relation_comp: "1 < x \le 3" answers "(1, 3]" (math-verify only compares a
    # relation with a set when the *prediction* is the set).
    return bool(mv_verify(gold, pred, timeout_seconds=None, allow_set_relation_comp=True))

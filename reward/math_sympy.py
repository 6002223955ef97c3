"""The symbolic stage: two normalised answers compared with sympy, under a deadline.

This is the only part of the verifier that can run for unbounded time (sympy on
``9^{9^{9^9}}`` computes a 370-million-digit integer inside one C call). Callers put a
deadline around it: `soft_deadline` (SIGALRM, main thread only, interrupts Python code) and,
for a hard guarantee, `reward.math_pool.MathVerifierPool`, which kills the worker process.

What it does, in order (each rule has a reason in the comments below):

1. Parse the gold answer (cached per process). A gold that does not parse is a data error.
2. An answer written as a chain ("x = 3 + 2 = 5", "10 = 9", "2x = 9") must hold: every "="
   link between its values must be true (a false equation is wrong whatever its last value);
   the answer is the last value, and a named left side must name the gold's variable.
3. Parse the answer with the LaTeX parser directly. An answer that does not parse is wrong,
   never "equal" to anything (math-verify's own extraction would fall back to some number
   inside it, e.g. the 0 of ``\\sum_{k=0}`` after a failed ``\\bigl``).
4. A tuple answers a one-column (or one-row) matrix gold and the other way round.
5. math-verify's comparison (sets, intervals, relations, matrices, symbolic simplification),
   then the numeric rule: when both sides are numbers, their values decide, by the one
   tolerance rule of the fast path (reward.math_normalize.numbers_equal): equal to float
   precision, or a written decimal of at least six significant digits that is the other
   side's exact value rounded or truncated at its last place. So ``1 + \\frac{1}{e}`` is not
   ``1 - \\frac{1}{e}`` and ``0.0000673 + 0`` is not ``.0000672`` whatever the simplifier says.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from fractions import Fraction
from functools import lru_cache

import sympy
from latex2sympy2_extended import latex2sympy
from latex2sympy2_extended.math_normalization import NormalizationConfig, normalize_latex
from math_verify import verify as mv_verify
from math_verify.grader import should_treat_as_complex
from sympy import FiniteSet, Union
from sympy.core.relational import Relational

from qwen25_rl.reward.math_normalize import (
    GOLD_CACHE_SIZE,
    MIN_SIGNIFICANT_FOR_APPROX,
    Equation,
    answer_form,
    comparison_key,
    e_notation_to_latex,
    mixed_numbers_to_fractions,
    parse_plain_number,
    rounds_to,
    terminates,
    top_level_split,
)

# Containers (tuples, sets, matrices) are compared element by element by math-verify, which
# rounds decimals to this many places first: far enough out that a near-miss inside a tuple
# is not accepted (math-verify's default, 6, accepts 0.0000673 for 0.0000672).
CONTAINER_FLOAT_ROUNDING = 12
# Two numbers are the same to float precision when they differ by at most this, relatively.
SAME_VALUE_RELATIVE = 1e-12

# Only the rewrites that make LaTeX parseable: no units removal (it drops a trailing
# "\text{...}" whatever it says, and "\frac{1}{\mathrm{e}}" became "\frac{1}{"), no "answer
# extraction" and no equation splitting, which the rest of the verifier does explicitly.
_PARSE_NORMALIZATION = NormalizationConfig(
    basic_latex=True, units=False, malformed_operators=True, nits=False, boxed="none", equations=False
)


class _DropTimeoutDisabledWarning(logging.Filter):
    # We pass timeout_seconds=None to math-verify on purpose (its SIGALRM timeout fails outside
    # the main thread and cannot interrupt C code); its one-time warning about that is noise.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


class DeadlineExceeded(BaseException):
    """Raised inside the symbolic stage when its soft deadline fires.

    A BaseException so that the `except Exception` blocks inside math-verify and sympy do not
    swallow it and turn a timeout into a silent False.
    """


class Unparsable(ValueError):
    """The LaTeX parser could not read an answer."""


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
    """Rewrites the LaTeX parser gets wrong, applied to both sides before parsing."""
    return mixed_numbers_to_fractions(e_notation_to_latex(normalized))


def parse_answer(normalized: str):
    """The sympy object of a normalised answer; Unparsable when the parser cannot read it."""
    text = normalize_latex(prepare_for_sympy(normalized), _PARSE_NORMALIZATION).strip()
    if not text:
        raise Unparsable("empty")
    try:
        return latex2sympy(text, is_real=not should_treat_as_complex(text), convert_degrees=False, normalization_config=None)
    except (RecursionError, MemoryError):
        raise
    except Exception as exc:  # the parser raises many types on bad input
        raise Unparsable(f"{type(exc).__name__}") from None


@lru_cache(maxsize=GOLD_CACHE_SIZE)
def parse_cached(normalized: str):
    """parse_answer with a per-process cache: a gold repeats for every sample of its group, and
    the samples of a group often agree (sympy objects are immutable, so sharing is safe)."""
    return parse_answer(normalized)


parse_gold = parse_cached


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


# ---------------------------------------------------------------------------------------------
# numbers


def _numeric_value(expr):
    """`expr` evaluated to 40 digits when it is a finite number (no symbols, not a set,
    relation or matrix), else None."""
    if not isinstance(expr, sympy.Expr) or isinstance(expr, (sympy.Tuple,)):
        return None
    if not expr.is_number or expr.is_finite is False:
        return None
    value = sympy.N(expr, 40)
    if value.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo) or not value.is_number:
        return None
    return value


def _exact_fraction(value) -> Fraction:
    re_part = sympy.re(value)
    return Fraction(str(sympy.N(re_part, 60)))


def _approximates(decimal_text: str, exact_expr, exact_value) -> bool:
    """Is `decimal_text` a plain decimal of >= 6 significant digits that rounds or truncates
    `exact_expr` (a non-terminating exact value) at its last written place?"""
    number = parse_plain_number(decimal_text)
    if number is None or not number.decimal or number.significant < MIN_SIGNIFICANT_FOR_APPROX:
        return False
    if sympy.im(exact_value) != 0:
        return False
    if exact_expr.is_rational:
        exact = sympy.simplify(exact_expr)
        if isinstance(exact, sympy.Rational) and terminates(Fraction(int(exact.p), int(exact.q))):
            return False  # 0.5 stands for 1/2 exactly, or for nothing
    return rounds_to(_exact_fraction(exact_value), number)


def numbers_agree(gold_expr, pred_expr, gold_text: str, pred_text: str) -> bool | None:
    """The numeric rule (module doc), or None when either side is not a number."""
    a, b = _numeric_value(gold_expr), _numeric_value(pred_expr)
    if a is None or b is None:
        return None
    diff = abs(sympy.N(a - b, 40))
    scale = max(abs(a), abs(b))
    if diff == 0 or diff <= SAME_VALUE_RELATIVE * scale:
        return True
    return _approximates(pred_text, gold_expr, a) or _approximates(gold_text, pred_expr, b)


def _same(gold_expr, pred_expr, gold_text: str, pred_text: str) -> bool:
    numeric = numbers_agree(gold_expr, pred_expr, gold_text, pred_text)
    if numeric is not None:
        return numeric
    pred_expr = _relations_to_set(pred_expr)
    # allow_set_relation_comp: "1 < x \le 3" answers "(1, 3]" (math-verify only compares a
    # relation with a set when the *prediction* is the set).
    return bool(
        mv_verify(gold_expr, pred_expr, float_rounding=CONTAINER_FLOAT_ROUNDING, timeout_seconds=None, allow_set_relation_comp=True)
    )


# ---------------------------------------------------------------------------------------------
# vectors written as tuples


def _tuple_items(text: str) -> list[str] | None:
    """'(1, 2)' / '[1, 2]' / '\\langle 1, 2 \\rangle' -> ['1', '2'] (top-level commas)."""
    s = text.strip()
    for open_, close in (("(", ")"), ("[", "]"), ("\\langle", "\\rangle")):
        if s.startswith(open_) and s.endswith(close):
            items = top_level_split(s[len(open_) : len(s) - len(close)], ",")
            return items if len(items) > 1 else None
    return None


def _as_vector_like(matrix, text: str):
    """The tuple `text` as a matrix of `matrix`'s shape when `matrix` is a vector of as many
    entries, else None."""
    if not isinstance(matrix, sympy.MatrixBase) or 1 not in matrix.shape:
        return None
    items = _tuple_items(text)
    if items is None or len(items) != len(matrix):
        return None
    return sympy.Matrix(*matrix.shape, [parse_answer(i) for i in items])


# ---------------------------------------------------------------------------------------------
# the comparison


def is_relation(form: tuple[Equation, ...]) -> bool:
    """A gold like "x + y = 5": one equation in its own right, not a named value."""
    return len(form) == 1 and form[0].name is None and len(form[0].values) > 1


def _value_text(form: tuple[Equation, ...]) -> str:
    """The values an answer states, as one text: the last value of each listed chain."""
    return ", ".join(eq.values[-1] for eq in form)


def parse_gold_answer(gold: str):
    """The parsed gold (cached): the whole of a relation gold, else its values. Raises
    Unparsable for a gold the parser cannot read: a data error, not a verdict."""
    form = answer_form(gold)
    return parse_gold(gold if is_relation(form) else _value_text(form))


def _chain_problem(form: tuple[Equation, ...], gold_names: set[str]) -> str | None:
    """Why the answer's equations disqualify it: a false "=" link, or a named left side that
    names a quantity other than the gold's. None when they hold."""
    for eq in form:
        if eq.name is not None and gold_names and comparison_key(eq.name) not in gold_names:
            return "the answer names another variable"
        if len(eq.values) < 2:
            continue
        try:
            values = [parse_cached(v) for v in eq.values]
        except Unparsable:
            return "the answer could not be parsed"
        for k in range(1, len(values)):
            if not eq.approx[k] and not _same(values[k], values[k - 1], eq.values[k], eq.values[k - 1]):
                return "the answer states a false equation"
    return None


def compare(pred: str, gold: str) -> tuple[bool, str]:
    """(verdict, why when wrong) for two normalised answers. Raises Unparsable for a gold the
    parser cannot read (a data error); everything about the answer is a verdict."""
    gold_form = answer_form(gold)
    gold_expr = parse_gold_answer(gold)
    if is_relation(gold_form):
        try:
            pred_expr = parse_cached(pred)
        except Unparsable:
            return False, "the answer could not be parsed"
        return bool(mv_verify(gold_expr, pred_expr, timeout_seconds=None, allow_set_relation_comp=True)), ""
    pred_form = answer_form(pred)
    problem = _chain_problem(pred_form, {comparison_key(eq.name) for eq in gold_form if eq.name is not None})
    if problem is not None:
        return False, problem
    gold_value, pred_value = _value_text(gold_form), _value_text(pred_form)
    try:
        pred_expr = parse_cached(pred_value)
    except Unparsable:
        return False, "the answer could not be parsed"
    if isinstance(gold_expr, sympy.MatrixBase) and not isinstance(pred_expr, sympy.MatrixBase):
        pred_expr = _as_vector_like(gold_expr, pred_value) or pred_expr
    elif isinstance(pred_expr, sympy.MatrixBase) and not isinstance(gold_expr, sympy.MatrixBase):
        gold_expr = _as_vector_like(pred_expr, gold_value) or gold_expr
    return _same(gold_expr, pred_expr, gold_value, pred_value), ""

"""The math verifier's core: what a verification returns, the bounded fast paths, and the
symbolic stage with a soft deadline (one process). reward.math is the public face;
reward.math_pool runs the symbolic stage in worker processes with a hard deadline.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

from qwen25_rl.reward.math_extract import ExtractedAnswer, find_answer, gold_answer_text
from qwen25_rl.reward.math_normalize import (
    GOLD_CACHE_SIZE,
    PlainNumber,
    answer_form,
    commitment_problem,
    comparison_key,
    hedge_tokens,
    is_multi_valued,
    normalize_answer,
    numbers_equal,
    parse_plain_number,
)

# Seconds one verification may take before it is reported as a timeout. Real MATH-500 pairs
# take under 0.5 s; sympy on hostile input can take hours.
DEFAULT_TIMEOUT_S = 3.0
# Extracted answers longer than this are compared as text only: real answers are short, and
# math-verify's regexes and sympy get slower with length.
MAX_ANSWER_CHARS = 1000
MAX_CACHED_GOLD_CHARS = 4096

DecisionPath = Literal["exact", "numeric", "sympy", "refused", "none"]


class MathStatus(str, enum.Enum):
    CORRECT = "correct"
    WRONG = "wrong"
    NO_ANSWER = "no_answer"  # nothing extractable: a verdict (wrong), not an error
    TIMEOUT = "timeout"  # the answer exhausted the deadline: a verdict (wrong), reported as such
    ERROR = "error"  # the verifier failed (bad gold, worker crash): no verdict


@dataclass(frozen=True)
class MathScore:
    """One verification. `correct` is the verdict; `status` says whether there was one."""

    status: MathStatus
    extracted: str | None = None  # the answer found in the response, as written
    source: str | None = None  # which anchor found it: boxed, final, hash, answer_is, bare, last_number
    path: DecisionPath = "none"  # which stage decided: exact, numeric, sympy, refused
    detail: str = ""  # why, for timeouts/errors and refusals
    elapsed_s: float = 0.0

    @property
    def correct(self) -> bool:
        return self.status is MathStatus.CORRECT

    @property
    def has_verdict(self) -> bool:
        """False only for verifier errors (the caller decides what those are worth); a timeout
        is the answer's doing and a verdict: wrong."""
        return self.status is not MathStatus.ERROR


@dataclass(frozen=True)
class SymbolicCheck:
    """A pair the fast paths could not decide: what the symbolic stage must compare."""

    pred: str  # normalised prediction
    gold: str  # normalised gold
    found: ExtractedAnswer
    started: float

    def score(self, status: MathStatus, detail: str = "") -> MathScore:
        return MathScore(
            status,
            self.found.text,
            self.found.source,
            "sympy",
            detail,
            time.perf_counter() - self.started,
        )


def _verdict(ok: bool) -> MathStatus:
    return MathStatus.CORRECT if ok else MathStatus.WRONG


@dataclass(frozen=True)
class _GoldForms:
    text: str  # the answer inside the gold label
    normalized: str
    key: str  # comparison_key(normalized)
    var: str | None  # "x" of "x = 5"
    number: PlainNumber | None  # the value when it is a plain number
    multi: bool  # several values ("1, 2", "\{1, 2\}", "1 \pm \sqrt{2}", a union)
    relation: bool  # an equation in its own right ("x + y = 5"), not a named value
    hedges: frozenset[str]  # hedge_tokens(text): what an answer may contain because the gold does


def _gold_forms(gold: str) -> _GoldForms:
    """Everything the fast paths need from a gold label, once per distinct gold (golds repeat
    across the samples of a group). Long labels (whole reference solutions) are not cached,
    so the cache stays small whatever callers send."""
    if len(gold) > MAX_CACHED_GOLD_CHARS:
        return _compute_gold_forms(gold)
    return _cached_gold_forms(gold)


def _compute_gold_forms(gold: str) -> _GoldForms:
    text = gold_answer_text(gold)
    if len(text) > MAX_ANSWER_CHARS:
        return _GoldForms(text, text, comparison_key(text), None, None, False, False, frozenset())
    normalized = normalize_answer(text)
    plain = parse_plain_number(normalized)
    if plain is not None:  # most GSM8K golds: nothing more to find out
        return _GoldForms(text, normalized, comparison_key(normalized), None, plain, False, False, hedge_tokens(text))
    form = answer_form(normalized)
    relation = len(form) == 1 and form[0].name is None and len(form[0].values) > 1
    number = parse_plain_number(form[0].values[-1]) if len(form) == 1 and not relation else None
    multi = is_multi_valued(normalized)
    return _GoldForms(text, normalized, comparison_key(normalized), form[0].name, number, multi, relation, hedge_tokens(text))


_cached_gold_forms = lru_cache(maxsize=GOLD_CACHE_SIZE)(_compute_gold_forms)


def fast_check(response: str, gold: str, *, fallback_last_number: bool = False) -> MathScore | SymbolicCheck:
    """Steps 1-3 of the pipeline: a final MathScore, or the SymbolicCheck still to be done.

    Bounded time on any input (linear scans, capped number sizes): safe to run in the caller's
    process before anything is sent to a worker.
    """
    started = time.perf_counter()
    if not isinstance(response, str):
        raise TypeError(f"response must be str, got {type(response).__name__}")
    if not isinstance(gold, str):
        raise TypeError(f"gold must be str, got {type(gold).__name__}")

    def done(status: MathStatus, found: ExtractedAnswer | None, path: DecisionPath, detail: str = "") -> MathScore:
        return MathScore(
            status,
            found.text if found else None,
            found.source if found else None,
            path,
            detail,
            time.perf_counter() - started,
        )

    g = _gold_forms(gold)
    if not g.text.strip():
        return done(MathStatus.ERROR, None, "none", "gold answer is empty")
    found = find_answer(response, fallback_last_number=fallback_last_number)
    if found is None:
        return done(MathStatus.NO_ANSWER, None, "none", "no \\boxed{}, '####', 'answer is' or bare answer found")
    if found.group is not None and g.multi:
        # Several boxes answer a gold with several values together ("\boxed{1}, \boxed{2}").
        found = replace(found, text=", ".join(found.group))
    if len(g.text) > MAX_ANSWER_CHARS:
        return done(MathStatus.ERROR, found, "none", f"gold answer longer than {MAX_ANSWER_CHARS} characters")
    if len(found.text) > MAX_ANSWER_CHARS:
        same = comparison_key(found.text) == comparison_key(g.text)
        detail = "" if same else f"answer longer than {MAX_ANSWER_CHARS} characters: compared as text only"
        return done(_verdict(same), found, "exact", detail)
    refusal = commitment_problem(found.text, g.hedges, g.multi)
    if refusal is not None:
        return done(MathStatus.WRONG, found, "refused", refusal)

    pred_norm = normalize_answer(found.text)
    if not pred_norm:
        return done(MathStatus.NO_ANSWER, found, "none", "extracted answer is empty after normalisation")
    if comparison_key(pred_norm) == g.key:
        return done(MathStatus.CORRECT, found, "exact")
    if g.number is None or g.relation:
        return SymbolicCheck(pred_norm, g.normalized, found, started)
    plain = parse_plain_number(pred_norm)
    if plain is not None:
        return done(_verdict(numbers_equal(g.number, plain)), found, "numeric")

    # A number gold: the answer's value, after its equation chain if it wrote one.
    form = answer_form(pred_norm)
    if len(form) > 1:
        return SymbolicCheck(pred_norm, g.normalized, found, started)
    eq = form[0]
    numbers = [parse_plain_number(v) for v in eq.values]
    if any(n is None for n in numbers):
        return SymbolicCheck(pred_norm, g.normalized, found, started)
    for k in range(1, len(numbers)):
        if not eq.approx[k] and not numbers_equal(numbers[k - 1], numbers[k]):
            return done(MathStatus.WRONG, found, "numeric", "the answer states a false equation")
    # "x = 5" answers "5" and "5" answers "x = 5", but "y = 5" does not answer "x = 5".
    same_var = eq.name is None or g.var is None or comparison_key(eq.name) == comparison_key(g.var)
    return done(_verdict(same_var and numbers_equal(g.number, numbers[-1])), found, "numeric")


def symbolic_verdict(pred: str, gold: str, timeout_s: float | None) -> tuple[MathStatus, str]:
    """Step 4 on normalised answers in this process, with a soft (SIGALRM, main-thread) deadline.

    What goes wrong while the gold is parsed is a data error (ERROR: every sample of that
    gold would fail alike). What goes wrong on the answer's side (it does not parse, the
    comparison runs out of time, exhausts memory or recursion) makes the answer wrong: a
    policy must not be able to turn its answer into a non-verdict by making it hard to check.
    """
    from qwen25_rl.reward.math_sympy import DeadlineExceeded, Unparsable, compare, parse_gold_answer, soft_deadline

    phase = "gold"
    try:
        with soft_deadline(timeout_s):
            parse_gold_answer(gold)
            phase = "answer"
            ok, why = compare(pred, gold)
    except DeadlineExceeded:
        if phase == "gold":
            return MathStatus.ERROR, f"the gold answer did not parse within {timeout_s:g}s"
        return MathStatus.TIMEOUT, f"symbolic comparison exceeded {timeout_s:g}s"
    except Unparsable as exc:  # only the gold raises it: answers that do not parse are wrong
        return MathStatus.ERROR, f"the gold answer could not be parsed ({exc})"
    except Exception as exc:  # RecursionError, MemoryError, a sympy failure on odd input
        if phase == "gold":
            return MathStatus.ERROR, f"the gold answer: {_describe(exc)}"
        return MathStatus.WRONG, f"the comparison failed on this answer: {_describe(exc)}"
    return _verdict(ok), why


def symbolic_check(check: SymbolicCheck, timeout_s: float | None) -> MathScore:
    return check.score(*symbolic_verdict(check.pred, check.gold, timeout_s))


def _describe(exc: BaseException) -> str:
    # Never str() a sympy exception blindly: its message can embed a huge expression.
    msg = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
    return f"{type(exc).__name__}: {msg[:200]}" if msg else type(exc).__name__


def score_math(
    response: str,
    gold: str,
    *,
    fallback_last_number: bool = False,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
) -> MathScore:
    """Verify one pair in this process.

    The deadline is soft: it interrupts sympy's Python code from the main thread, but not C
    code that ignores signals (GMP arithmetic when sympy runs on gmpy2, regex backtracking),
    and it is not armed off the main thread. Use `MathVerifierPool` (or `verify`) where the
    input is untrusted and the deadline must hold.
    """
    first = fast_check(response, gold, fallback_last_number=fallback_last_number)
    if isinstance(first, MathScore):
        return first
    return symbolic_check(first, timeout_s)


def extract_answer(response: str, *, fallback_last_number: bool = False) -> str | None:
    """The final answer in `response` as written (\\boxed{}, ####, 'the answer is', bare), or None."""
    found = find_answer(response, fallback_last_number=fallback_last_number)
    return found.text if found else None

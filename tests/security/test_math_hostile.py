"""Hostile inputs to the math verifier: each returns within its deadline, earns nothing, and
the pool keeps working with no extra processes.

Inputs a policy under RL can produce (or an attacker can send to a served reward): power
towers and factorials sympy would evaluate for hours, expressions whose simplification
explodes, parser-recursion bombs, megabyte responses, unclosed boxes, NUL bytes and lone
surrogates, division by zero, exponents that would build billion-digit integers.
"""

from __future__ import annotations

import time

import pytest
from bounds import SLACK_S

from qwen25_rl.reward.math import DEFAULT_TIMEOUT_S, MathStatus, MathVerifierPool, verify

TIMEOUT_S = 1.5
# Time beyond the deadline for the caller's own bounded work (extraction over megabyte
# responses), forking a replacement worker, and a loaded machine (tests/bounds.py). The
# hostile inputs would run for hours without the deadline.
MARGIN_S = SLACK_S

HOSTILE: list[tuple[str, str, str]] = [
    ("power tower", "\\boxed{9^{9^{9^9}}}", "1"),
    ("huge power", "\\boxed{10^{10^{10}}}", "1"),
    ("power of power of two", "\\boxed{2^{2^{40}}}", "2"),
    ("factorial of a googol", "\\boxed{(10^{100})!}", "1"),
    ("huge factorial", "\\boxed{100000000!}", "1"),
    ("giant sum", "\\boxed{\\sum_{k=1}^{10^{12}} k^{k}}", "1"),
    ("expansion blow-up", "\\boxed{(x+1)^{1000}}", "x^{1000}+1"),
    ("variable power tower", "\\boxed{x" + "^{x" * 100 + "}" * 100 + "}", "x"),
    ("nested fractions", "\\boxed{" + "\\frac{1}{1+" * 80 + "1" + "}" * 80 + "}", "1"),
    ("unbalanced parentheses", "\\boxed{" + "(" * 990 + "}", "1"),
    ("hard integral", "\\boxed{\\int_0^1 e^{x^2}\\,dx}", "1"),
    ("big matrix", "\\boxed{\\begin{pmatrix}" + "\\\\".join(["&".join(["x"] * 15)] * 15) + "\\end{pmatrix}}", "0"),
    ("division by zero", "\\boxed{\\frac{1}{0}}", "1"),
    ("zero over zero", "\\boxed{0/0}", "0"),
    ("billion-digit exponent", "The answer is 1e999999999.", "1"),
    ("huge decimal", "#### " + "9" * 5000 + ".5", "1"),
    ("NUL and lone surrogate", "\\boxed{\x00\ud800}", "1"),
    ("deep braces", "\\boxed{" + "{" * 100_000 + "1" + "}" * 100_000 + "}", "1"),
    ("unclosed boxes", "\\boxed{" * 100_000, "1"),
    ("megabyte of digits", "1" * 1_000_000, "1"),
    ("megabyte of anchors", "the answer is " * 80_000, "1"),
    ("many boxes", "\\boxed{1}" * 100_000 + "\\boxed{2}", "1"),
    ("spaces then percent", "\\boxed{5" + " " * 900 + "\\%}", "4"),
]


@pytest.fixture(scope="module")
def pool():
    with MathVerifierPool(num_workers=2, timeout_s=TIMEOUT_S, fallback_last_number=True) as p:
        assert p.score("\\boxed{\\sqrt{8}}", "2\\sqrt2").correct  # workers up before timing
        yield p


@pytest.mark.parametrize(("name", "response", "gold"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_input_returns_within_deadline_without_reward(pool, name, response, gold):
    started = time.monotonic()
    score = pool.score(response, gold)
    elapsed = time.monotonic() - started
    assert elapsed < TIMEOUT_S + MARGIN_S, f"{name}: took {elapsed:.2f}s"
    assert not score.correct, f"{name}: {score}"
    assert score.status in (MathStatus.WRONG, MathStatus.TIMEOUT, MathStatus.NO_ANSWER, MathStatus.ERROR)
    # still working, and no process leaked or lost
    assert pool.score("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt2}").correct
    assert len(pool.process_ids()) <= 1 + pool.num_workers


def test_hostile_batch_is_bounded_by_deadline_times_rounds(pool):
    responses = [r for _, r, _ in HOSTILE] + ["\\boxed{3\\sqrt{2}}"]
    golds = [g for _, _, g in HOSTILE] + ["\\sqrt{18}"]
    started = time.monotonic()
    scores = pool.score_batch(responses, golds)
    elapsed = time.monotonic() - started
    rounds = -(-len(HOSTILE) // pool.num_workers)  # every hostile pair could use its full deadline
    assert elapsed < rounds * TIMEOUT_S + MARGIN_S * 2
    assert not any(s.correct for s in scores[:-1])
    assert scores[-1].correct


@pytest.mark.parametrize("name", ["power tower", "expansion blow-up", "unbalanced parentheses"])
def test_public_verify_returns_false_within_its_deadline(name):
    _, response, gold = next(h for h in HOSTILE if h[0] == name)
    verify("\\boxed{\\sqrt{8}}", "2\\sqrt2")  # the shared pool is up before timing
    started = time.monotonic()
    assert verify(response, gold) is False
    assert time.monotonic() - started < DEFAULT_TIMEOUT_S + MARGIN_S

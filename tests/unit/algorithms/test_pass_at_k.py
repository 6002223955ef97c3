"""pass@k (qwen25_rl.algorithms.pass_at_k) against brute force over every k-subset, exact
rational arithmetic where the binomials overflow a float, and its edge cases."""

from __future__ import annotations

import itertools
import math
import re
from fractions import Fraction

import pytest

from qwen25_rl.algorithms.pass_at_k import pass_at_k


def brute_force(n: int, c: int, k: int) -> float:
    """The fraction of all k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_matches_brute_force_over_all_subsets_for_every_c_and_k(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), rel=1e-12, abs=1e-15), (n, c, k)


def test_stays_exact_where_the_binomials_overflow_a_float():
    # C(1500, 750) ~ 1e450 is beyond float64; the product form never builds it.
    for n, c, k in [(1500, 1, 750), (1500, 3, 10), (2000, 1999, 1), (1200, 600, 600)]:
        exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
        assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-9), (n, c, k)


def test_no_correct_sample_gives_zero_and_all_correct_gives_one():
    assert all(pass_at_k(n, 0, k) == 0.0 for n in range(1, 20) for k in range(1, n + 1))
    assert all(pass_at_k(n, n, k) == 1.0 for n in range(1, 20) for k in range(1, n + 1))


def test_pass_at_1_is_the_fraction_correct():
    assert all(pass_at_k(n, c, 1) == pytest.approx(c / n) for n in range(1, 30) for c in range(n + 1))


@pytest.mark.parametrize(
    "n, c, k, message",
    [
        (4, 1, 5, "k must lie in 1..n"),
        (1, 0, 4, "k must lie in 1..n"),
        (4, 1, 0, "k must lie in 1..n"),
        (4, 5, 1, "c (correct samples) must lie in 0..n"),
        (4, -1, 1, "c (correct samples) must lie in 0..n"),
        (4.0, 1, 1, "n must be an integer"),
        (4, True, 1, "c must be an integer"),
    ],
)
def test_rejects_k_above_n_and_impossible_counts(n, c, k, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        pass_at_k(n, c, k)

"""Data order: mixture shares, passes over a source, independence from worker count, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen25_rl.pretrain.data_order import build_order, epoch_draws, mixture_counts, step_rows


@settings(max_examples=200, deadline=None)
@given(weights=st.lists(st.floats(0.01, 100), min_size=1, max_size=6), total=st.integers(0, 5000))
def test_mixture_counts_sum_to_total_and_stay_within_one_of_the_exact_share(weights, total):
    counts = mixture_counts(weights, total)
    assert sum(counts) == total
    exact = np.array(weights) / sum(weights) * total
    assert np.all(np.abs(np.array(counts) - exact) < 1.0 + 1e-9)


def test_mixture_counts_reject_non_positive_weights():
    with pytest.raises(ValueError, match="positive"):
        mixture_counts([1.0, 0.0], 10)


def test_upsampled_source_repeats_each_row_once_per_pass():
    draws = epoch_draws(7, 23, np.random.default_rng(0))
    assert draws.size == 23
    for p in range(3):
        assert sorted(draws[p * 7 : (p + 1) * 7]) == list(range(7))
    assert len(set(draws[21:])) == 2


def test_order_draws_each_source_its_share_from_its_own_rows():
    order, drawn = build_order([10, 100], [3.0, 1.0], 400, seed=0)
    assert drawn == [300, 100]
    assert ((order < 10).sum(), (order >= 10).sum()) == (300, 100)
    np.testing.assert_array_equal(np.bincount(order[order < 10], minlength=10), np.full(10, 30))


def test_order_is_deterministic_in_the_seed():
    a, _ = build_order([50, 20], [1, 1], 200, seed=3)
    b, _ = build_order([50, 20], [1, 1], 200, seed=3)
    c, _ = build_order([50, 20], [1, 1], 200, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_step_rows_do_not_depend_on_the_number_of_workers():
    order, _ = build_order([64], [1], 64, seed=0)
    for step in range(4):
        whole = step_rows(order, step, 16)
        for world in (2, 4):
            shards = [step_rows(order, step, 16, r, world) for r in range(world)]
            np.testing.assert_array_equal(np.concatenate(shards), whole)


def test_step_past_the_order_is_an_error():
    order, _ = build_order([8], [1], 16, seed=0)
    with pytest.raises(IndexError, match="step 2"):
        step_rows(order, 2, 8)

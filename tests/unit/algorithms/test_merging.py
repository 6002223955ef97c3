"""Online merging (OnDARE, OnTIES): the merged step against hand-computed numbers."""

import pytest
import torch

from qwen25_rl.algorithms.merging import MERGE_METHODS, get_merge_method, ondare_merge, onties_merge
from qwen25_rl.algorithms.registry import UnknownNameError

DELTA = torch.tensor([1.0, -2.0, 3.0, -4.0])
TAU = torch.tensor([10.0, 20.0, -30.0, 40.0])


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_the_seeded_draws_the_ondare_tests_rely_on():
    """Δ's mask is the first torch.rand draw < keep, τ's the second: with seed 0 and keep 0.5
    they keep entries (0, 2, 3) of Δ and (0, 2) of τ."""
    g = seeded(0)
    assert (torch.rand(4, generator=g) < 0.5).tolist() == [True, False, True, True]
    assert (torch.rand(4, generator=g) < 0.5).tolist() == [True, False, True, False]


def test_ondare_drops_entries_with_the_seeded_masks_and_does_not_rescale():
    got = ondare_merge(DELTA, TAU, alpha=0.25, keep=0.5, generator=seeded(0))
    # 0.75 * [1, 0, 3, -4] + 0.25 * [10, 0, -30, 0]
    assert got.tolist() == pytest.approx([3.25, 0.0, -5.25, -3.0])


def test_ondare_rescale_divides_the_kept_entries_by_keep():
    got = ondare_merge(DELTA, TAU, alpha=0.25, keep=0.5, generator=seeded(0), rescale=True)
    assert got.tolist() == pytest.approx([6.5, 0.0, -10.5, -6.0])


def test_ondare_same_seed_same_masks():
    big_d, big_t = torch.randn(1000), torch.randn(1000)
    a = ondare_merge(big_d, big_t, alpha=0.1, keep=0.3, generator=seeded(7))
    b = ondare_merge(big_d, big_t, alpha=0.1, keep=0.3, generator=seeded(7))
    c = ondare_merge(big_d, big_t, alpha=0.1, keep=0.3, generator=seeded(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ondare_keeps_about_keep_of_the_entries():
    got = ondare_merge(torch.ones(20_000), torch.zeros(20_000), alpha=0.0, keep=0.3, generator=seeded(1))
    assert (got != 0).float().mean().item() == pytest.approx(0.3, abs=0.02)


def test_ondare_with_keep_one_is_task_arithmetic():
    got = ondare_merge(DELTA, TAU, alpha=0.25, keep=1.0, generator=None)
    assert got.tolist() == pytest.approx((0.75 * DELTA + 0.25 * TAU).tolist())


def test_onties_with_keep_one_trims_nothing_and_only_elects():
    got = onties_merge(DELTA, TAU, alpha=0.25, keep=1.0)
    # a = [0.75, -1.5, 2.25, -3], b = [2.5, 5, -7.5, 10]; a + b = [3.25, 3.5, -5.25, 7]:
    # entry 0 keeps both, entries 1-3 keep tau's part only
    assert got.tolist() == pytest.approx([3.25, 5.0, -7.5, 10.0])


def test_alpha_zero_keep_one_is_the_plain_adam_step():
    for fn in (ondare_merge, onties_merge):
        assert torch.equal(fn(DELTA, TAU, alpha=0.0, keep=1.0, generator=seeded(0)), DELTA)


def test_onties_trims_each_term_to_its_largest_entries_then_elects_the_sign():
    got = onties_merge(DELTA, TAU, alpha=0.25, keep=0.5)
    # trim: a = 0.75 * [0, 0, 3, -4], b = 0.25 * [0, 0, -30, 40]; a + b = [0, 0, -5.25, 7]:
    # the elected signs (-, +) are tau's, so both of delta's surviving entries are dropped
    assert got.tolist() == pytest.approx([0.0, 0.0, -7.5, 10.0])


def test_onties_sign_consensus_keeps_the_heavier_side_where_delta_and_tau_disagree():
    delta, tau = torch.tensor([2.0, -1.0, 1.0]), torch.tensor([-1.0, -3.0, -1.0])
    got = onties_merge(delta, tau, alpha=0.5, keep=1.0)
    # a = [1, -0.5, 0.5], b = [-0.5, -1.5, -0.5]; a + b = [0.5, -2, 0] -> signs (+, -, none):
    # entry 0 keeps delta's part only, entry 1 both (they agree), entry 2 nothing (a tie)
    assert got.tolist() == pytest.approx([1.0, -2.0, 0.0])


def test_onties_elects_from_the_weighted_sum_not_the_raw_one():
    """Unweighted, tau (-10) would outvote delta (+1); weighted by alpha 0.01 delta wins."""
    got = onties_merge(torch.tensor([1.0]), torch.tensor([-10.0]), alpha=0.01, keep=1.0)
    assert got.tolist() == pytest.approx([0.99])


def test_onties_rescale_restores_each_terms_l1_norm():
    got = onties_merge(DELTA, torch.zeros(4), alpha=0.0, keep=0.5, rescale=True)
    # trimmed delta [0, 0, 3, -4] (L1 7) scaled to delta's L1 10
    assert got.tolist() == pytest.approx([0.0, 0.0, 30 / 7, -40 / 7])


def test_onties_keeps_round_keep_times_numel_entries_at_least_one():
    x = torch.arange(1.0, 11.0)
    assert (onties_merge(x, torch.zeros(10), alpha=0.0, keep=0.29) != 0).sum().item() == 3
    assert onties_merge(x, torch.zeros(10), alpha=0.0, keep=0.01).tolist() == [0.0] * 9 + [10.0]


def test_merges_work_on_matrices_per_tensor():
    delta = torch.tensor([[1.0, -5.0], [0.5, 2.0]])
    got = onties_merge(delta, torch.zeros(2, 2), alpha=0.0, keep=0.5)
    assert got.tolist() == [[0.0, -5.0], [0.0, 2.0]]


def test_the_registry_holds_both_methods_and_rejects_unknown_names():
    assert {"ondare", "onties"} <= set(MERGE_METHODS)
    assert get_merge_method("onties") is onties_merge
    with pytest.raises(UnknownNameError, match="ondare"):
        get_merge_method("dare")


@pytest.mark.parametrize("fn", [ondare_merge, onties_merge])
@pytest.mark.parametrize(("alpha", "keep"), [(-0.1, 0.5), (1.1, 0.5), (0.5, 0.0), (0.5, 1.5), (float("nan"), 0.5), (0.5, float("nan"))])
def test_out_of_range_alpha_or_keep_is_a_value_error(fn, alpha, keep):
    with pytest.raises(ValueError, match="alpha" if not 0 <= alpha <= 1 else "keep"):
        fn(DELTA, TAU, alpha=alpha, keep=keep, generator=seeded(0))


def test_shape_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match="shape"):
        ondare_merge(DELTA, TAU[:3], alpha=0.5, keep=0.5, generator=seeded(0))

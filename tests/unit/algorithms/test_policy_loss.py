"""PPO clipped loss, clip-higher, dual clip, truncated IS, in-loss KL / entropy, metrics."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen25_rl.algorithms import (
    LOSS_AGG_MODES,
    POLICY_LOSSES,
    UnknownNameError,
    policy_loss,
    ppo_clip_loss,
    truncated_importance_weights,
)


def _lp(ratios):
    """log-probs whose ratio to old log-probs 0 are `ratios`."""
    return torch.log(torch.tensor([ratios], dtype=torch.float64)).requires_grad_(True), torch.zeros(1, len(ratios), dtype=torch.float64)


def test_ppo_clips_the_ratio_to_the_band_in_the_pessimistic_direction():
    log_probs, old = _lp([1.5, 0.5, 1.1, 0.5])
    adv = torch.tensor([[1.0, -1.0, 1.0, 1.0]], dtype=torch.float64)
    loss, _ = ppo_clip_loss(log_probs, old, adv, torch.ones(1, 4, dtype=torch.bool), clip_low=0.2, clip_high=0.2)
    # min(1.5, 1.2) | min(-0.5, -0.8) | inside the band | A > 0 with ratio below: min(0.5, 0.8)
    assert loss.tolist() == [pytest.approx([-1.2, 0.8, -1.1, -0.5])]


def test_clip_higher_lets_positive_advantage_ratios_grow_further():
    log_probs, old = _lp([1.25, 1.25])
    adv = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    loss, _ = ppo_clip_loss(log_probs, old, adv, torch.ones(1, 2, dtype=torch.bool), clip_low=0.2, clip_high=0.28)
    assert loss.tolist() == [pytest.approx([-1.25, 1.25])]


def test_clipped_tokens_get_no_gradient():
    log_probs, old = _lp([1.5, 1.1])
    loss, _ = ppo_clip_loss(log_probs, old, torch.ones(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.bool))
    loss.sum().backward()
    # d(-rho A)/d log pi = -rho A for the unclipped token
    assert log_probs.grad.tolist() == [pytest.approx([0.0, -1.1])]


def test_dual_clip_bounds_the_loss_of_negative_advantages():
    log_probs, old = _lp([5.0, 5.0, 2.0])
    adv = torch.tensor([[-1.0, 1.0, -1.0]], dtype=torch.float64)
    loss, metrics = ppo_clip_loss(log_probs, old, adv, torch.ones(1, 3, dtype=torch.bool), dual_clip=3.0)
    # A<0, ratio 5: plain PPO gives 5, dual clip caps at 3 | A>0 unaffected | below the cap: 2
    assert loss.tolist() == [pytest.approx([3.0, -1.2, 2.0])]
    assert metrics["dual_clip_frac"].tolist() == [[True, False, False]]


def test_dual_clip_at_or_below_one_is_rejected():
    log_probs, old = _lp([1.0])
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        ppo_clip_loss(log_probs, old, torch.ones(1, 1), torch.ones(1, 1, dtype=torch.bool), dual_clip=1.0)


def test_truncated_importance_weights_clamp_the_trainer_sampler_ratio():
    old = torch.log(torch.tensor([[0.5, 0.9, 0.3]]))
    rollout = torch.log(torch.tensor([[0.1, 0.9, 0.6]]))
    weights, outside = truncated_importance_weights(old, rollout, mode="truncate", low=0.0, high=2.0)
    assert weights.tolist() == [pytest.approx([2.0, 1.0, 0.5])]
    assert outside.tolist() == [[True, False, False]]


def test_masked_importance_weights_drop_tokens_outside_the_band():
    old = torch.log(torch.tensor([[0.5, 0.9, 0.3]]))
    rollout = torch.log(torch.tensor([[0.1, 0.9, 0.6]]))
    weights, _ = truncated_importance_weights(old, rollout, mode="mask", low=0.6, high=2.0)
    assert weights.tolist() == [pytest.approx([0.0, 1.0, 0.0])]


def test_importance_weights_multiply_the_policy_term_only():
    log_probs, old = _lp([1.0, 1.0])
    rollout = torch.log(torch.tensor([[0.5, 1.0]], dtype=torch.float64))  # IS ratios 2 and 1
    out = policy_loss(log_probs, old, torch.ones(1, 2, dtype=torch.float64), torch.ones(1, 2), rollout_log_probs=rollout, tis_high=5.0)
    # token losses -1 * [2, 1], token-mean
    assert out.loss.item() == pytest.approx(-1.5)
    assert out.metrics["tis_weight_mean"].item() == pytest.approx(1.5)


def test_kl_term_adds_coef_times_aggregated_kl():
    log_probs, old = _lp([1.0, 1.0])
    ref = torch.log(torch.tensor([[0.5, 1.0]], dtype=torch.float64))
    out = policy_loss(
        log_probs, old, torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2), ref_log_probs=ref, kl_coef=0.1, kl_estimator="k1"
    )
    # policy term 0; k1 = [ln 2, 0], token-mean ln2 / 2
    assert out.loss.item() == pytest.approx(0.1 * math.log(2) / 2)
    assert out.metrics["kl"].item() == pytest.approx(math.log(2) / 2)


def test_entropy_bonus_is_subtracted():
    log_probs, old = _lp([1.0, 1.0])
    entropy = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    out = policy_loss(log_probs, old, torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2), entropy=entropy, entropy_coef=0.01)
    assert out.loss.item() == pytest.approx(-0.01 * 2.0)
    assert out.metrics["entropy"].item() == pytest.approx(2.0)


def test_metrics_report_clip_fractions_and_ratio_statistics_over_response_tokens():
    log_probs, old = _lp([1.5, 0.5, 1.0, 9.0])
    adv = torch.tensor([[1.0, -1.0, 1.0, 1.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0]])
    m = policy_loss(log_probs, old, adv, mask).metrics
    assert m["clip_frac_high"].item() == pytest.approx(1 / 3)
    assert m["clip_frac_low"].item() == pytest.approx(1 / 3)
    assert m["clip_frac"].item() == pytest.approx(2 / 3)
    assert m["ratio_max"].item() == pytest.approx(1.5)  # the masked 9.0 is not counted
    assert m["ratio_min"].item() == pytest.approx(0.5)
    assert m["ratio_mean"].item() == pytest.approx(1.0)
    assert m["response_tokens"].item() == 3
    # approx_kl is k3 of old vs new: mean of (1/r - 1 + ln r)
    want = sum(1 / r - 1 + math.log(r) for r in (1.5, 0.5, 1.0)) / 3
    assert m["approx_kl"].item() == pytest.approx(want)


def test_sequence_advantages_broadcast_over_tokens():
    log_probs, old = _lp([1.0, 1.0])
    per_seq = policy_loss(log_probs, old, torch.tensor([2.0], dtype=torch.float64), torch.ones(1, 2)).loss
    per_tok = policy_loss(log_probs, old, torch.full((1, 2), 2.0, dtype=torch.float64), torch.ones(1, 2)).loss
    assert per_seq.item() == per_tok.item() == pytest.approx(-2.0)


def test_kl_coef_without_reference_log_probs_is_rejected():
    log_probs, old = _lp([1.0])
    with pytest.raises(ValueError, match="ref_log_probs"):
        policy_loss(log_probs, old, torch.ones(1, 1), torch.ones(1, 1), kl_coef=0.1)


def test_unknown_policy_loss_is_rejected_with_the_known_names():
    log_probs, old = _lp([1.0])
    with pytest.raises(UnknownNameError, match="known: ppo"):
        policy_loss(log_probs, old, torch.ones(1, 1), torch.ones(1, 1), loss_type="ppo2")
    assert "ppo" in POLICY_LOSSES


@settings(max_examples=50, deadline=None)
@given(
    b=st.integers(1, 5),
    t=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    mode=st.sampled_from(LOSS_AGG_MODES),
    empty_row=st.booleans(),
)
def test_property_loss_and_gradient_are_finite_for_any_mask(b, t, seed, mode, empty_row):
    g = torch.Generator().manual_seed(seed)
    log_probs = (-torch.rand(b, t, generator=g) * 5).requires_grad_(True)
    old = -torch.rand(b, t, generator=g) * 5
    mask = torch.rand(b, t, generator=g) > 0.4
    if empty_row:
        mask[0] = False
    out = policy_loss(
        log_probs,
        old,
        torch.randn(b, generator=g),
        mask,
        loss_agg_mode=mode,
        dual_clip=3.0,
        rollout_log_probs=old + 0.1 * torch.randn(b, t, generator=g),
        ref_log_probs=old,
        kl_coef=0.05,
    )
    out.loss.backward()
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert torch.isfinite(log_probs.grad).all()
    assert (log_probs.grad[~mask] == 0).all()
    assert all(torch.isfinite(v) for v in out.metrics.values())

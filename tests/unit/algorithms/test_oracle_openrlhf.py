"""Oracle: our losses against OpenRLHF 0.11.2's `openrlhf.models.loss` / `openrlhf.models.utils`.

OpenRLHF is installed with --no-deps (`make setup`). Its `openrlhf/models/__init__.py` imports
the actor (peft, flash-attn, transformers models) which the loss code does not use, so the
fixture registers a bare package object for `openrlhf.models` in `sys.modules` (and removes it
afterwards): `loss.py` and `utils.py` then load on their own. Nothing else is stubbed; without
flash-attn, `log_probs_from_logits` takes its own pure-torch fallback.

Inputs are random float64 tensors with a pinned seed; agreement is required to 1e-6 (the
observed differences are ~1e-15). Settings that differ between the implementations:
- OpenRLHF's seq-level aggregation divides each sequence sum by (token count + 1e-8); ours by
  the exact count. The relative difference is ~1e-9, inside the tolerance.
- OpenRLHF reports `ppo_kl` as the k1 mean of (old - new); we report the k3 `approx_kl`, so only
  the clip fraction is compared among the metrics.
- OpenRLHF's IPO has no length normalisation: compared with ours at length_normalize=False.
- OpenRLHF ignores label_smoothing for IPO, we refuse it: IPO is compared at label_smoothing=0.
"""

import importlib
import importlib.util
import itertools
import pathlib
import sys
import types

import pytest
import torch
from environment import skip_missing

from qwen25_rl.algorithms import (
    aggregate_token_loss,
    bradley_terry_loss,
    dpo_loss,
    kl_divergence,
    lm_loss,
    policy_loss,
    token_log_probs,
)

TOL = 1e-6


@pytest.fixture(scope="module")
def openrlhf():
    spec = importlib.util.find_spec("openrlhf")
    if spec is None:
        skip_missing("openrlhf (make setup installs openrlhf==0.11.2 with --no-deps)")
    before = set(sys.modules)
    if "openrlhf.models" not in sys.modules:
        placeholder = types.ModuleType("openrlhf.models")
        placeholder.__path__ = [str(pathlib.Path(spec.submodule_search_locations[0]) / "models")]
        sys.modules["openrlhf.models"] = placeholder
    try:
        loss = importlib.import_module("openrlhf.models.loss")
        utils = importlib.import_module("openrlhf.models.utils")
    except ImportError as err:
        skip_missing(f"openrlhf.models.loss cannot be imported here: {err}")
    yield types.SimpleNamespace(loss=loss, utils=utils)
    for name in set(sys.modules) - before:
        if name == "openrlhf.models" or name.startswith("openrlhf.models."):
            del sys.modules[name]


def _rollout(seed, b=5, t=7, empty_row=False):
    g = torch.Generator().manual_seed(seed)
    log_probs = (-3 * torch.rand(b, t, generator=g, dtype=torch.float64)).requires_grad_(True)
    # ratios roughly in [0.5, 2]: many tokens on both sides of the clip band
    old = log_probs.detach() + 0.35 * torch.randn(b, t, generator=g, dtype=torch.float64)
    rollout = old + 0.4 * torch.randn(b, t, generator=g, dtype=torch.float64)
    advantages = torch.randn(b, t, generator=g, dtype=torch.float64)
    mask = torch.rand(b, t, generator=g) > 0.3
    mask[:, 0] = True
    # A few tokens where the dual clip bites: ratio e^1.5 ~ 4.5 (> 3) and a negative advantage.
    # Without them a loss that ignored `dual_clip` would match the oracle just the same.
    for row, col in ((0, 1), (1, 3), (2, 5)):
        old[row, col] = log_probs.detach()[row, col] - 1.5
        advantages[row, col] = -advantages[row, col].abs() - 0.5
        mask[row, col] = True
    if empty_row:
        mask[-1] = False
    return log_probs, old, rollout, advantages, mask


def test_the_oracle_inputs_exercise_the_dual_clip(openrlhf):
    """A policy loss that ignored `dual_clip` must fail the comparison above: on these inputs
    it gives another loss than OpenRLHF's with the dual clip on."""
    log_probs, old, _, adv, mask = _rollout(0)
    ratio = torch.exp(log_probs.detach() - old)
    assert ((ratio > 3.0) & (adv < 0) & mask).sum() >= 3
    theirs, _, _, _, _ = openrlhf.loss.PolicyLoss(clip_eps_low=0.2, clip_eps_high=0.2, dual_clip=3.0)(
        log_probs, old, adv, action_mask=mask.double()
    )
    ignoring = policy_loss(log_probs, old, adv, mask, loss_agg_mode="token-mean", clip_low=0.2, clip_high=0.2, dual_clip=None)
    honouring = policy_loss(log_probs, old, adv, mask, loss_agg_mode="token-mean", clip_low=0.2, clip_high=0.2, dual_clip=3.0)
    assert honouring.loss.item() == pytest.approx(theirs.item(), abs=TOL, rel=TOL)
    assert abs(ignoring.loss.item() - theirs.item()) > 100 * TOL


PPO_CASES = list(
    itertools.product(
        [(0.2, 0.2), (0.2, 0.28)],  # (clip low, clip high): symmetric and DAPO clip-higher
        [None, 3.0],  # dual clip
        ["token-mean", "seq-mean-token-mean"],  # OpenRLHF token_level_loss True / False
        [False, True],  # global counts passed
        ["off", "clip", "mask"],  # train/rollout mismatch correction at token level
    )
)


@pytest.mark.parametrize("clip,dual_clip,agg,global_counts,is_mode", PPO_CASES)
def test_ppo_loss_and_gradient_match_openrlhf(openrlhf, clip, dual_clip, agg, global_counts, is_mode):
    seed = PPO_CASES.index((clip, dual_clip, agg, global_counts, is_mode))
    log_probs, old, rollout, adv, mask = _rollout(seed, empty_row=agg != "token-mean")
    band = (0.5, 2.0)
    theirs_fn = openrlhf.loss.PolicyLoss(
        clip_eps_low=clip[0],
        clip_eps_high=clip[1],
        dual_clip=dual_clip,
        token_level_loss=agg == "token-mean",
        is_correction_level="off" if is_mode == "off" else "token",
        is_correction_mode="clip" if is_mode == "off" else is_mode,
        is_correction_threshold=band,
    )
    counts = {}
    if global_counts:  # the global step is pretended to be 3x this micro-batch
        counts = {"batch_num_tokens": 3.0 * mask.sum().item(), "global_batch_size": 3.0 * (mask.sum(-1) > 0).sum().item()}
    theirs, clip_ratio, _, _, _ = theirs_fn(
        log_probs,
        old,
        adv,
        action_mask=mask.double(),
        rollout_log_probs=None if is_mode == "off" else rollout,
        **counts,
    )
    ours = policy_loss(
        log_probs,
        old,
        adv,
        mask,
        loss_agg_mode=agg,
        clip_low=clip[0],
        clip_high=clip[1],
        dual_clip=dual_clip,
        rollout_log_probs=None if is_mode == "off" else rollout,
        tis_mode="truncate" if is_mode == "clip" else "mask",
        tis_low=band[0],
        tis_high=band[1],
        num_tokens=counts.get("batch_num_tokens"),
        num_seqs=counts.get("global_batch_size"),
    )
    assert ours.loss.item() == pytest.approx(theirs.item(), abs=TOL, rel=TOL)
    g_ours = torch.autograd.grad(ours.loss, log_probs)[0]
    g_theirs = torch.autograd.grad(theirs, log_probs)[0]
    assert torch.allclose(g_ours, g_theirs, atol=TOL, rtol=TOL)
    assert ours.metrics["clip_frac"].item() == pytest.approx(clip_ratio.item(), abs=TOL)


@pytest.mark.parametrize(
    "beta,label_smoothing,ipo",
    [(0.1, 0.0, False), (0.5, 0.0, False), (0.1, 0.2, False), (0.5, 0.1, False), (0.1, 0.0, True), (0.5, 0.0, True)],
)
def test_dpo_loss_gradient_and_rewards_match_openrlhf(openrlhf, beta, label_smoothing, ipo):
    g = torch.Generator().manual_seed(int(beta * 100) + int(label_smoothing * 10) + ipo)
    pc, pr = [(-20 * torch.rand(6, generator=g, dtype=torch.float64)).requires_grad_(True) for _ in range(2)]
    rc, rr = [-20 * torch.rand(6, generator=g, dtype=torch.float64) for _ in range(2)]
    theirs, chosen_rewards, rejected_rewards = openrlhf.loss.DPOLoss(beta, label_smoothing, ipo)(pc, pr, rc, rr)
    ours = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=label_smoothing, loss_type="ipo" if ipo else "sigmoid")
    assert ours.loss.item() == pytest.approx(theirs.item(), abs=TOL, rel=TOL)
    for a, b in zip(torch.autograd.grad(ours.loss, (pc, pr)), torch.autograd.grad(theirs, (pc, pr))):
        assert torch.allclose(a, b, atol=TOL, rtol=TOL)
    assert ours.metrics["rewards/chosen"].item() == pytest.approx(chosen_rewards.mean().item(), abs=TOL)
    assert ours.metrics["rewards/rejected"].item() == pytest.approx(rejected_rewards.mean().item(), abs=TOL)


@pytest.mark.parametrize("with_margin", [False, True])
def test_reward_model_pairwise_loss_matches_openrlhf(openrlhf, with_margin):
    g = torch.Generator().manual_seed(7)
    chosen, rejected = (torch.randn(8, generator=g, dtype=torch.float64) for _ in range(2))
    margin = torch.rand(8, generator=g, dtype=torch.float64) if with_margin else None
    theirs = openrlhf.loss.PairWiseLoss()(chosen, rejected, margin)
    assert bradley_terry_loss(chosen, rejected, margin=margin).loss.item() == pytest.approx(theirs.item(), abs=TOL)


def test_lm_loss_matches_openrlhf_gpt_lm_loss_after_the_shift(openrlhf):
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(3, 9, 23, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 23, (3, 9), generator=g)
    labels[0, :5] = -100
    theirs = openrlhf.loss.GPTLMLoss()(logits, labels)  # shifts internally
    ours = lm_loss(logits[:, :-1], labels[:, 1:])  # ours takes aligned labels: the caller shifts
    assert ours.item() == pytest.approx(theirs.item(), abs=TOL)
    assert torch.allclose(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(theirs, logits)[0], atol=TOL)


@pytest.mark.parametrize("token_level", [True, False])
@pytest.mark.parametrize("global_counts", [False, True])
def test_sft_loss_aggregation_matches_openrlhf(openrlhf, token_level, global_counts):
    g = torch.Generator().manual_seed(9)
    log_p = -torch.rand(4, 6, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 6, generator=g) > 0.3
    mask[:, 0] = True
    kwargs = {"batch_num_tokens": 40.0, "global_batch_size": 10.0} if global_counts else {}
    theirs = openrlhf.loss.SFTLoss(token_level_loss=token_level)(log_p, mask.double(), **kwargs)
    ours = aggregate_token_loss(
        -log_p,
        mask,
        "token-mean" if token_level else "seq-mean-token-mean",
        num_tokens=kwargs.get("batch_num_tokens"),
        num_seqs=kwargs.get("global_batch_size"),
    )
    assert ours.item() == pytest.approx(theirs.item(), abs=TOL)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_token_log_probs_match_openrlhf(openrlhf, temperature):
    g = torch.Generator().manual_seed(10)
    logits = torch.randn(2, 5, 31, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 31, (2, 5), generator=g)
    # OpenRLHF divides the logits by the temperature in place: give it a copy
    theirs = openrlhf.utils.log_probs_from_logits(logits.clone(), labels, temperature=temperature)
    assert torch.allclose(token_log_probs(logits, labels, temperature=temperature), theirs, atol=TOL)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_estimators_match_openrlhf_including_the_clamp(openrlhf, estimator):
    # float32: OpenRLHF computes the KL in float32 whatever the input dtype
    g = torch.Generator().manual_seed(11)
    log_probs = (-5 * torch.rand(4, 8, generator=g)).requires_grad_(True)
    ref = -5 * torch.rand(4, 8, generator=g)
    ref[0, :3] = torch.tensor([-40.0, -0.01, -30.0])  # far-off tokens: the clamp at 10 is active
    theirs = openrlhf.utils.compute_approx_kl(log_probs, ref, kl_estimator=estimator)
    ours = kl_divergence(log_probs, ref, estimator, clamp=10.0)
    assert torch.allclose(ours, theirs, atol=TOL, rtol=TOL)
    g_ours = torch.autograd.grad(ours.sum(), log_probs)[0]
    g_theirs = torch.autograd.grad(theirs.sum(), log_probs)[0]
    assert torch.allclose(g_ours, g_theirs, atol=TOL, rtol=TOL)

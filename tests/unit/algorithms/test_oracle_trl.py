"""Oracle: our GRPO/PPO and DPO losses against TRL 1.16's own trainer code.

TRL keeps these losses inside `GRPOTrainer._compute_loss` / `DPOTrainer._compute_loss`. The test
calls those methods unbound with a stand-in `self` that holds only the attributes they read,
and a stand-in model that returns the per-token log-probs we choose; the loss arithmetic that
runs is TRL's. Random float64 inputs, pinned seeds, agreement to 1e-6 in value and gradient.

Settings that differ, and how the comparison handles them:
- TRL's "grpo" and "dr_grpo" divide by the number of rows including rows without completion
  tokens; ours counts sequences with at least one response token. No empty rows here.
- TRL's KL is k3 without a clamp: ours is run with kl_clamp=None.
- TRL does not clamp the log-ratio; ours clamps it at +-20 (inactive on these inputs).
- TRL computes the vLLM importance-sampling ratio during generation (not in `_compute_loss`):
  the test builds it from TRL's formula (exp(old - sampling), clamped or masked) and passes it
  in, as TRL does; TRL's part under test is how the ratio enters the loss.
- TRL's DPO "sigmoid" has no label smoothing (cDPO is compared against OpenRLHF instead); TRL's
  IPO is length-normalised: ours with length_normalize=True. TRL's IPO takes lengths from the
  unshifted completion mask, so the first position is always a prompt token here (then both
  length definitions agree).
"""

import itertools
import types
from collections import defaultdict

import pytest
import torch
from environment import skip_missing

from qwen25_rl.algorithms import (
    dpo_loss,
    entropy_from_logits,
    policy_loss,
    token_log_probs,
)

TOL = 1e-6


@pytest.fixture(scope="module")
def trl():
    try:
        import trl.trainer.dpo_trainer as dpo
        import trl.trainer.grpo_trainer as grpo
        import trl.trainer.utils as utils
    except ImportError as err:
        skip_missing(f"trl (the test extra): {err}")
    return types.SimpleNamespace(GRPOTrainer=grpo.GRPOTrainer, DPOTrainer=dpo.DPOTrainer, utils=utils)


class _Accelerator:
    """The accelerator calls TRL's loss code makes, on one process."""

    num_processes = 1
    device = torch.device("cpu")

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x


def _trl_grpo_self(loss_type, eps_low, eps_high, delta, beta, is_mode, per_token_logps, max_completion_length):
    return types.SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (per_token_logps, torch.zeros_like(per_token_logps), None),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        args=types.SimpleNamespace(delta=delta, use_bias_correction_kl=False, steps_per_generation=1),
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        use_vllm=is_mode != "off",
        vllm_importance_sampling_correction=is_mode != "off",
        model=types.SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        max_completion_length=max_completion_length,
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        accelerator=_Accelerator(),
    )


# TRL loss type -> (our aggregation mode, what we pass as the global counts)
AGGREGATIONS = {
    "grpo": "seq-mean-token-mean",
    "bnpo": "token-mean",
    "dr_grpo": "seq-mean-token-sum-norm",
    "dapo": "token-mean",  # normalised by TRL's num_items_in_batch: the global token count
}

GRPO_CASES = list(
    itertools.product(
        list(AGGREGATIONS),
        [(0.2, 0.2), (0.2, 0.28)],  # epsilon low / high (DAPO clip-higher)
        [None, 3.0],  # TRL's two-sided `delta` = our dual clip
        [0.0, 0.04],  # beta: in-loss k3 KL
        ["off", "token_truncate", "token_mask"],
    )
)


def _trl_inputs(mask, advantages, old, num_items: float) -> dict:
    """The batch `GRPOTrainer._compute_loss` reads; the ids are placeholders (the stub from
    `_trl_grpo_self` returns the log-probs)."""
    b, t = mask.shape
    return {
        "prompt_ids": torch.zeros(b, 2, dtype=torch.long),
        "prompt_mask": torch.ones(b, 2, dtype=torch.long),
        "completion_ids": torch.zeros(b, t, dtype=torch.long),
        "completion_mask": mask.long(),
        "advantages": advantages,
        "old_per_token_logps": old,
        "num_items_in_batch": torch.tensor(num_items, dtype=torch.float64),
    }


def plant_dual_clip_tokens(log_probs, old, advantages, mask) -> None:
    """Rows 0 and 1 get a negative advantage and two tokens each with ratio e^1.5 ~ 4.5 (> the
    dual clip of 3): without them a loss that ignored `dual_clip` would match TRL's `delta`."""
    for row in (0, 1):
        advantages[row] = -advantages[row].abs() - 0.5
        for col in (1, 2):
            old[row, col] = log_probs.detach()[row, col] - 1.5
            mask[row, col] = True


def test_the_oracle_inputs_exercise_the_dual_clip(trl):
    """A policy loss that ignored `dual_clip` must fail the comparison below: it differs from
    TRL's loss with `delta` on these inputs."""
    g = torch.Generator().manual_seed(0)
    b, t = 6, 7
    log_probs = (-3 * torch.rand(b, t, generator=g, dtype=torch.float64)).requires_grad_(True)
    old = log_probs.detach() + 0.35 * torch.randn(b, t, generator=g, dtype=torch.float64)
    advantages = torch.randn(b, generator=g, dtype=torch.float64)
    mask = torch.rand(b, t, generator=g) > 0.3
    plant_dual_clip_tokens(log_probs, old, advantages, mask)
    inputs = _trl_inputs(mask, advantages, old, num_items=float(mask.sum()))
    theirs = trl.GRPOTrainer._compute_loss(_trl_grpo_self("bnpo", 0.2, 0.2, 3.0, 0.0, "off", log_probs, 10), None, inputs)
    kw = {"loss_agg_mode": "token-mean", "clip_low": 0.2, "clip_high": 0.2}
    assert policy_loss(log_probs, old, advantages, mask, dual_clip=3.0, **kw).loss.item() == pytest.approx(theirs.item(), abs=TOL, rel=TOL)
    assert abs(policy_loss(log_probs, old, advantages, mask, dual_clip=None, **kw).loss.item() - theirs.item()) > 100 * TOL


@pytest.mark.parametrize("loss_type,eps,delta,beta,is_mode", GRPO_CASES)
def test_grpo_loss_and_gradient_match_trl(trl, loss_type, eps, delta, beta, is_mode):
    seed = GRPO_CASES.index((loss_type, eps, delta, beta, is_mode))
    g = torch.Generator().manual_seed(seed)
    b, t, max_len = 6, 7, 10
    log_probs = (-3 * torch.rand(b, t, generator=g, dtype=torch.float64)).requires_grad_(True)
    old = log_probs.detach() + 0.35 * torch.randn(b, t, generator=g, dtype=torch.float64)
    sampling = old + 0.4 * torch.randn(b, t, generator=g, dtype=torch.float64)
    ref = log_probs.detach() + 0.3 * torch.randn(b, t, generator=g, dtype=torch.float64)
    advantages = torch.randn(b, generator=g, dtype=torch.float64)
    mask = torch.rand(b, t, generator=g) > 0.3
    mask[:, 0] = True
    plant_dual_clip_tokens(log_probs, old, advantages, mask)
    num_items = 3.0 * mask.sum().item()  # the generation batch is pretended to be 3x this one

    inputs = _trl_inputs(mask, advantages, old, num_items=num_items) | {"ref_per_token_logps": ref}
    band = (0.5, 2.0)
    if is_mode != "off":  # TRL's generation-time formula, see the module doc
        ratio = torch.exp((old - sampling) * mask)
        if is_mode == "token_truncate":
            ratio = ratio.clamp(min=None, max=band[1])
        else:
            ratio = ratio.masked_fill((ratio < band[0]) | (ratio > band[1]), 0.0)
        inputs["importance_sampling_ratio"] = ratio
    fake = _trl_grpo_self(loss_type, eps[0], eps[1], delta, beta, is_mode, log_probs, max_len)
    theirs = trl.GRPOTrainer._compute_loss(fake, None, inputs)

    ours = policy_loss(
        log_probs,
        old,
        advantages,
        mask,
        loss_agg_mode=AGGREGATIONS[loss_type],
        num_tokens=num_items if loss_type == "dapo" else None,
        max_response_length=max_len,
        clip_low=eps[0],
        clip_high=eps[1],
        dual_clip=delta,
        ref_log_probs=ref,
        kl_coef=beta,
        kl_estimator="k3",
        kl_clamp=None,
        rollout_log_probs=None if is_mode == "off" else sampling,
        tis_mode="truncate" if is_mode == "token_truncate" else "mask",
        tis_low=0.0 if is_mode == "token_truncate" else band[0],
        tis_high=band[1],
    )
    assert ours.loss.item() == pytest.approx(theirs.item(), abs=TOL, rel=TOL)
    g_ours = torch.autograd.grad(ours.loss, log_probs)[0]
    g_theirs = torch.autograd.grad(theirs, log_probs)[0]
    assert torch.allclose(g_ours, g_theirs, atol=TOL, rtol=TOL)
    region = fake._metrics["train"]["clip_ratio/region_mean"][-1]
    assert ours.metrics["clip_frac"].item() == pytest.approx(region, abs=TOL)


def _trl_dpo_self(loss_types, loss_weights, beta, per_token_logps):
    def model(**kwargs):
        return types.SimpleNamespace(
            log_probs=per_token_logps,
            entropy=torch.zeros_like(per_token_logps),
            mean_logits=torch.zeros_like(per_token_logps),
            is_top1=torch.zeros_like(per_token_logps, dtype=torch.bool),
        )

    fake = types.SimpleNamespace(
        model=types.SimpleNamespace(training=True),
        accelerator=_Accelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=loss_types,
        loss_weights=loss_weights,
        beta=beta,
        label_smoothing=0.0,
        use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
        args=types.SimpleNamespace(),
    )
    return fake, model


DPO_CASES = [
    # (TRL loss types, TRL weights, our options)
    (["sigmoid"], [1.0], {"loss_type": "sigmoid"}),
    (["hinge"], [1.0], {"loss_type": "hinge"}),
    (["ipo"], [1.0], {"loss_type": "ipo", "length_normalize": True}),
    (["sigmoid_norm"], [1.0], {"loss_type": "sigmoid", "length_normalize": True}),
    (["sigmoid", "sft"], [1.0, 0.7], {"loss_type": "sigmoid", "rpo_alpha": 0.7}),  # RPO
]


@pytest.mark.parametrize("beta", [0.1, 0.5])
@pytest.mark.parametrize("loss_types,weights,options", DPO_CASES)
def test_dpo_losses_match_trl(trl, loss_types, weights, options, beta):
    g = torch.Generator().manual_seed(len(loss_types) * 10 + int(beta * 10))
    pairs, length = 4, 9
    completion_mask = (torch.rand(2 * pairs, length, generator=g) > 0.35).long()
    completion_mask[:, 0] = 0  # position 0 is a prompt token (see module doc)
    completion_mask[:, 1] = 1
    shift_mask = completion_mask[:, 1:]
    per_token = -2 * torch.rand(2 * pairs, length - 1, generator=g, dtype=torch.float64) * shift_mask
    per_token.requires_grad_(True)
    ref_sums = -10 * torch.rand(2 * pairs, generator=g, dtype=torch.float64)
    inputs = {
        "input_ids": torch.zeros(2 * pairs, length, dtype=torch.long),
        "attention_mask": torch.ones(2 * pairs, length, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_sums[:pairs],
        "ref_rejected_logps": ref_sums[pairs:],
    }
    fake, model = _trl_dpo_self(loss_types, weights, beta, per_token)
    theirs = trl.DPOTrainer._compute_loss(fake, model, inputs, return_outputs=False)

    sums = (per_token * shift_mask).sum(-1)
    lengths = shift_mask.sum(-1)
    ours = dpo_loss(
        sums[:pairs],
        sums[pairs:],
        ref_sums[:pairs],
        ref_sums[pairs:],
        beta=beta,
        chosen_lengths=lengths[:pairs],
        rejected_lengths=lengths[pairs:],
        **options,
    )
    assert ours.loss.item() == pytest.approx(theirs.item(), abs=TOL, rel=TOL)
    # TRL sums all positions (its model returns 0 log-prob off the completion, so the value is the
    # same); the gradient is compared where it means something, on completion tokens
    g_ours = torch.autograd.grad(ours.loss, per_token)[0] * shift_mask
    g_theirs = torch.autograd.grad(theirs, per_token)[0] * shift_mask
    assert torch.allclose(g_ours, g_theirs, atol=TOL, rtol=TOL)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin", "logps/chosen", "logps/rejected"):
        key = {"rewards/accuracy": "rewards/accuracies", "rewards/margin": "rewards/margins"}.get(name, name)
        assert ours.metrics[name].item() == pytest.approx(fake._metrics["train"][key][-1], abs=TOL)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_log_probs_match_trl_selective_log_softmax(trl, temperature):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 6, 40, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 40, (3, 6), generator=g)
    theirs = trl.utils.selective_log_softmax(logits, labels, temperature=temperature)
    assert torch.allclose(token_log_probs(logits, labels, temperature=temperature), theirs, atol=TOL)


def test_entropy_matches_trl_entropy_from_logits(trl):
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 6, 40, generator=g, dtype=torch.float64)
    assert torch.allclose(entropy_from_logits(logits), trl.utils.entropy_from_logits(logits), atol=TOL)

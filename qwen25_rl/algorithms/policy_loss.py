"""Policy-gradient losses: one registry of per-token losses, one function that assembles the step loss.

`policy_loss(...)` does, per token (all [B, T], masked by the response mask):
  1. the registered per-token loss (default "ppo": clipped ratio, DAPO clip-higher, dual-clip),
  2. times the truncated importance weight w = clamp(pi_old / pi_rollout) when the sampler's
     log-probs are given (vLLM and the trainer disagree slightly; TIS corrects for it),
  3. plus kl_coef * KL(pi || pi_ref) (GRPO's in-loss KL), minus entropy_coef * entropy,
  4. aggregated with one of `LOSS_AGG_MODES`, normalised by the global counts when given.
Metrics (clip fractions, approx-KL, ratio statistics, entropy) are masked means over this
batch's response tokens; `response_tokens` is returned so that a logger can weight them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from qwen25_rl.algorithms.aggregation import aggregate_token_loss, check_mask
from qwen25_rl.algorithms.kl import kl_divergence
from qwen25_rl.algorithms.losses import LossOutput
from qwen25_rl.algorithms.registry import Registry

# (log_probs, old_log_probs, advantages, mask, **options) -> (per-token loss, per-token metrics)
PerTokenPolicyLoss = Callable[..., tuple[Tensor, dict[str, Tensor]]]

POLICY_LOSSES: Registry[PerTokenPolicyLoss] = Registry("policy loss")
register_policy_loss = POLICY_LOSSES.register

# exp(20) = 4.9e8: a log-ratio beyond it is a numerical accident, not a policy change, and an
# overflowing exp would poison the loss with inf (OpenRLHF clamps at the same value).
MAX_LOG_RATIO = 20.0

TIS_MODES = ("truncate", "mask")


def get_policy_loss(name: str) -> PerTokenPolicyLoss:
    """The registered per-token policy loss called `name`; an error listing the known names otherwise."""
    return POLICY_LOSSES.get(name)


@register_policy_loss("ppo")
def ppo_clip_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate per token, with separate lower/upper clip and optional dual clip.

      rho  = exp(log pi - log pi_old)
      l    = -min(rho A, clip(rho, 1 - clip_low, 1 + clip_high) A)
      dual clip (c > 1), for A < 0 only:  l = min(l, -c A)
    clip_high > clip_low is DAPO's clip-higher: low-probability tokens may grow more before
    the clip stops them, which keeps exploration (entropy) from collapsing. The dual clip bounds
    the loss of a token whose ratio exploded while its advantage is negative.
    Per-token metrics: clip_frac_low (rho < 1 - clip_low, A < 0), clip_frac_high (rho > 1 +
    clip_high, A > 0), clip_frac (either: the clip is active), dual_clip_frac.
    """
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"clip ranges must be >= 0, got clip_low={clip_low}, clip_high={clip_high}")
    if clip_low >= 1:
        raise ValueError(f"clip_low must be < 1 (the ratio is positive), got {clip_low}")
    ratio = torch.exp((log_probs - old_log_probs).clamp(min=-MAX_LOG_RATIO, max=MAX_LOG_RATIO))
    surrogate = ratio * advantages
    clipped_surrogate = ratio.clamp(1 - clip_low, 1 + clip_high) * advantages
    objective = torch.min(surrogate, clipped_surrogate)
    low = (ratio < 1 - clip_low) & (advantages < 0)
    high = (ratio > 1 + clip_high) & (advantages > 0)
    token_metrics = {"clip_frac_low": low, "clip_frac_high": high, "clip_frac": low | high}
    if dual_clip is not None:
        if dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        floor = dual_clip * advantages
        dual = (advantages < 0) & (objective < floor)
        objective = torch.where(dual, floor, objective)
        token_metrics["dual_clip_frac"] = dual
    return -objective, token_metrics


def truncated_importance_weights(
    old_log_probs: Tensor,
    rollout_log_probs: Tensor,
    *,
    mode: str = "truncate",
    low: float = 0.0,
    high: float = 2.0,
) -> tuple[Tensor, Tensor]:
    """(weights w, out-of-band flags) for the sampler/trainer mismatch, per token, no gradient.

    rho_is = exp(log pi_old - log pi_rollout)   (trainer's vs sampler's probability of the token)
    truncate: w = clamp(rho_is, low, high)      (TIS; low = 0 truncates from above only)
    mask:     w = rho_is if low <= rho_is <= high else 0   (drop tokens the engines disagree on)
    """
    if mode not in TIS_MODES:
        raise ValueError(f"unknown importance-sampling correction mode {mode!r}; known: {', '.join(TIS_MODES)}")
    if not 0 <= low < high:
        raise ValueError(f"importance-weight band must satisfy 0 <= low < high, got [{low}, {high}]")
    with torch.no_grad():
        rho = torch.exp((old_log_probs - rollout_log_probs).clamp(min=-MAX_LOG_RATIO, max=MAX_LOG_RATIO))
        outside = (rho < low) | (rho > high)
        if mode == "truncate":
            weights = rho.clamp(min=low, max=high)
        else:
            weights = torch.where(outside, torch.zeros_like(rho), rho)
    return weights, outside


def policy_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    *,
    loss_type: str = "ppo",
    loss_agg_mode: str = "token-mean",
    num_tokens: float | Tensor | None = None,
    num_seqs: float | Tensor | None = None,
    max_response_length: int | None = None,
    rollout_log_probs: Tensor | None = None,
    tis_mode: str = "truncate",
    tis_low: float = 0.0,
    tis_high: float = 2.0,
    ref_log_probs: Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    kl_clamp: float | None = 10.0,
    entropy: Tensor | None = None,
    entropy_coef: float = 0.0,
    **loss_options,
) -> LossOutput:
    """The policy loss of one micro-batch (see the module doc for the steps).

    `log_probs` [B, T] (with gradient), `old_log_probs` [B, T] (the trainer's log-probs at
    rollout time), `advantages` [B, T] or [B], `response_mask` [B, T]. `loss_options` go to the
    registered per-token loss (for "ppo": clip_low, clip_high, dual_clip). `num_tokens` /
    `num_seqs` / `max_response_length` are the global normalisers of the optimizer step (see
    `aggregate_token_loss`). `rollout_log_probs`: the sampler's log-probs, enabling the
    importance-sampling correction `tis_mode` with band [tis_low, tis_high].
    """
    mask = check_mask(response_mask, log_probs)
    for name, tensor in (
        ("old_log_probs", old_log_probs),
        ("rollout_log_probs", rollout_log_probs),
        ("ref_log_probs", ref_log_probs),
        ("entropy", entropy),
    ):
        if tensor is not None and tensor.shape != log_probs.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(log_probs.shape)}")
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    if advantages.shape not in (log_probs.shape, (log_probs.shape[0], 1)):
        raise ValueError(f"advantages have shape {tuple(advantages.shape)}, expected {tuple(log_probs.shape)} or [B]")
    advantages = advantages.detach()
    old_log_probs = old_log_probs.detach()

    per_token, token_metrics = get_policy_loss(loss_type)(log_probs, old_log_probs, advantages, mask, **loss_options)
    metrics: dict[str, Tensor] = {}

    if rollout_log_probs is not None:
        weights, outside = truncated_importance_weights(
            old_log_probs, rollout_log_probs.detach(), mode=tis_mode, low=tis_low, high=tis_high
        )
        per_token = per_token * weights
        token_metrics["tis_out_of_band_frac"] = outside
        token_metrics["tis_weight_mean"] = weights

    pg_loss = aggregate_token_loss(
        per_token,
        mask,
        loss_agg_mode,
        num_tokens=num_tokens,
        num_seqs=num_seqs,
        max_response_length=max_response_length,
    )
    total = pg_loss
    if kl_coef:
        if ref_log_probs is None:
            raise ValueError("kl_coef is set but ref_log_probs were not given")
        kl = kl_divergence(log_probs, ref_log_probs.detach(), kl_estimator, clamp=kl_clamp)
        kl_loss = aggregate_token_loss(
            kl,
            mask,
            loss_agg_mode,
            num_tokens=num_tokens,
            num_seqs=num_seqs,
            max_response_length=max_response_length,
        )
        total = total + kl_coef * kl_loss
        token_metrics["kl"] = kl
        metrics["kl_loss"] = kl_loss.detach()
    elif ref_log_probs is not None:
        token_metrics["kl"] = kl_divergence(log_probs, ref_log_probs, kl_estimator, clamp=kl_clamp)
    if entropy is not None:
        if entropy_coef:
            entropy_loss = aggregate_token_loss(
                entropy,
                mask,
                loss_agg_mode,
                num_tokens=num_tokens,
                num_seqs=num_seqs,
                max_response_length=max_response_length,
            )
            total = total - entropy_coef * entropy_loss
        token_metrics["entropy"] = entropy

    with torch.no_grad():
        log_ratio = (log_probs - old_log_probs).clamp(min=-MAX_LOG_RATIO, max=MAX_LOG_RATIO)
        ratio = log_ratio.exp()
        # k3 of pi_old against pi, a non-negative, low-variance estimate of how far this update moved
        token_metrics["approx_kl"] = torch.expm1(-log_ratio) + log_ratio
        token_metrics["ratio_mean"] = ratio
        metrics["pg_loss"] = pg_loss.detach()
        metrics.update({name: masked_mean(value, mask) for name, value in token_metrics.items()})
        any_token = bool(mask.any())
        metrics["ratio_max"] = ratio[mask].max() if any_token else ratio.new_tensor(1.0)
        metrics["ratio_min"] = ratio[mask].min() if any_token else ratio.new_tensor(1.0)
        metrics["response_tokens"] = mask.sum().to(ratio.dtype)
    return LossOutput(total, metrics)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` where `mask` is true (0 when nothing is), detached, float."""
    values = values.detach()
    dtype = values.dtype if torch.is_floating_point(values) else torch.float32
    mask = mask != 0
    total = torch.where(mask, values.to(dtype), torch.zeros((), dtype=dtype, device=values.device)).sum()
    return total / mask.sum().clamp(min=1)

"""Advantage estimators for critic-free RL: one registry, per-token advantages out.

Every estimator takes
  rewards        [N]     outcome reward of each sampled response,
  group_ids      [N]     which prompt each response answers (ints, strings, any hashable; the
                         responses of a group need not be contiguous or equally many),
  response_mask  [N, T]  true on the response tokens,
and returns advantages [N, T], 0 outside the mask. Advantages carry no gradient.

A group whose rewards are all equal gets advantage exactly 0 (it carries no preference signal),
and a group of one response also gets 0 (there is nothing to compare it with), never NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch
from torch import Tensor

from qwen25_rl.algorithms.registry import Registry

AdvantageEstimator = Callable[..., Tensor]

ADVANTAGE_ESTIMATORS: Registry[AdvantageEstimator] = Registry("advantage estimator")
register_advantage_estimator = ADVANTAGE_ESTIMATORS.register


def get_advantage_estimator(name: str) -> AdvantageEstimator:
    """The registered estimator called `name`; an error listing the known names otherwise."""
    return ADVANTAGE_ESTIMATORS.get(name)


def compute_advantages(
    name: str,
    rewards: Tensor,
    group_ids: Tensor | Sequence[Hashable],
    response_mask: Tensor,
    **options,
) -> Tensor:
    """Validate the inputs and run the estimator `name` with its `options`; see the module doc."""
    estimator = get_advantage_estimator(name)
    _validate(rewards, group_ids, response_mask)
    with torch.no_grad():
        return estimator(rewards, group_ids, response_mask, **options)


# ----------------------------------------------------------------------------------------------
# Group statistics


def group_index(group_ids: Tensor | Sequence[Hashable]) -> tuple[Tensor, int]:
    """(index [N] in 0..G-1, G): groups numbered in order of first appearance."""
    if isinstance(group_ids, Tensor):
        if group_ids.dim() != 1:
            raise ValueError(f"group_ids must be one id per response, got shape {tuple(group_ids.shape)}")
        ids = group_ids.tolist()
    else:
        ids = list(group_ids)
    numbering: dict[Hashable, int] = {}
    try:
        index = [numbering.setdefault(g, len(numbering)) for g in ids]
    except TypeError as err:
        raise TypeError(f"group ids must be hashable: {err}") from None
    return torch.tensor(index, dtype=torch.long), len(numbering)


class GroupStats:
    """Per-response statistics of its group: size, mean, sum, unbiased std, all-equal flag."""

    def __init__(self, rewards: Tensor, group_ids: Tensor | Sequence[Hashable]) -> None:
        index, num_groups = group_index(group_ids)
        index = index.to(rewards.device)
        r = rewards
        counts = torch.bincount(index, minlength=num_groups).to(r.dtype)
        sums = torch.zeros(num_groups, dtype=r.dtype, device=r.device).index_add_(0, index, r)
        means = sums / counts
        centered = r - means[index]
        sq = torch.zeros(num_groups, dtype=r.dtype, device=r.device).index_add_(0, index, centered.square())
        # Bessel-corrected (as torch.std, TRL, OpenRLHF, veRL); a group of one has std 0 here.
        var = torch.where(counts > 1, sq / (counts - 1).clamp(min=1), torch.zeros_like(sq))
        lo = torch.full((num_groups,), float("inf"), dtype=r.dtype, device=r.device).scatter_reduce(0, index, r, reduce="amin")
        hi = torch.full((num_groups,), float("-inf"), dtype=r.dtype, device=r.device).scatter_reduce(0, index, r, reduce="amax")
        self.size = counts[index]
        self.sum = sums[index]
        self.mean = means[index]
        self.std = var.sqrt()[index]
        # Exact test, not std < eps: floating-point mean of equal numbers can differ from them.
        self.all_equal = (lo == hi)[index]


def _per_token(advantage: Tensor, response_mask: Tensor) -> Tensor:
    mask = response_mask != 0
    return torch.where(mask, advantage.unsqueeze(-1), torch.zeros((), dtype=advantage.dtype, device=advantage.device))


def _float(rewards: Tensor) -> Tensor:
    return rewards.to(torch.promote_types(rewards.dtype, torch.float32))


# ----------------------------------------------------------------------------------------------
# Estimators


@register_advantage_estimator("grpo")
def grpo_advantages(
    rewards: Tensor,
    group_ids: Tensor | Sequence[Hashable],
    response_mask: Tensor,
    *,
    eps: float = 1e-6,
    scale_by_std: bool = True,
) -> Tensor:
    """GRPO group-relative advantage: A_i = (r_i - mean_g) / (std_g + eps), std_g unbiased.

    With `scale_by_std=False` (Dr. GRPO) A_i = r_i - mean_g: dividing by std up-weights groups
    that are nearly all right or all wrong, a difficulty bias Dr. GRPO removes.
    """
    r = _float(rewards)
    stats = GroupStats(r, group_ids)
    advantage = r - stats.mean
    if scale_by_std:
        advantage = advantage / (stats.std + eps)
    advantage = torch.where(stats.all_equal, torch.zeros_like(advantage), advantage)
    return _per_token(advantage, response_mask)


@register_advantage_estimator("dr_grpo")
def dr_grpo_advantages(rewards: Tensor, group_ids: Tensor | Sequence[Hashable], response_mask: Tensor) -> Tensor:
    """Dr. GRPO: A_i = r_i - mean_g (GRPO without the std normalisation)."""
    return grpo_advantages(rewards, group_ids, response_mask, scale_by_std=False)


@register_advantage_estimator("rloo")
def rloo_advantages(rewards: Tensor, group_ids: Tensor | Sequence[Hashable], response_mask: Tensor) -> Tensor:
    """RLOO: A_i = r_i - (sum_{j in g, j != i} r_j) / (n_g - 1)  =  n_g / (n_g - 1) * (r_i - mean_g).

    The baseline of each response is the mean of the OTHER responses to the same prompt, so it
    is independent of the response itself (an unbiased policy-gradient baseline).
    """
    r = _float(rewards)
    stats = GroupStats(r, group_ids)
    baseline = (stats.sum - r) / (stats.size - 1).clamp(min=1)
    advantage = torch.where((stats.size > 1) & ~stats.all_equal, r - baseline, torch.zeros_like(r))
    return _per_token(advantage, response_mask)


@register_advantage_estimator("reinforce_pp_baseline")
def reinforce_pp_baseline_advantages(
    rewards: Tensor,
    group_ids: Tensor | Sequence[Hashable],
    response_mask: Tensor,
    *,
    token_rewards: Tensor | None = None,
    eps: float = 1e-8,
) -> Tensor:
    """REINFORCE++ with baseline: group-mean baseline, then whitening over the whole batch.

      G_it = (r_i - mean_g) + sum_{s >= t, s in response} u_is        (u: `token_rewards`, e.g.
                                                                      the KL penalty; gamma = 1)
      A_it = (G_it - mu) / sqrt(max(var, eps)),  mu, var over all response tokens of the batch.

    The batch-level normalisation makes the advantage scale independent of the reward scale
    without the per-group std division that GRPO uses. Call it on the whole rollout batch
    (not per micro-batch): the statistics are global to the batch.
    """
    r = _float(rewards)
    stats = GroupStats(r, group_ids)
    shaped = torch.where(stats.all_equal, torch.zeros_like(r), r - stats.mean)
    return _whitened_returns(shaped, response_mask, token_rewards, eps)


@register_advantage_estimator("reinforce_pp")
def reinforce_pp_advantages(
    rewards: Tensor,
    group_ids: Tensor | Sequence[Hashable],
    response_mask: Tensor,
    *,
    token_rewards: Tensor | None = None,
    eps: float = 1e-8,
) -> Tensor:
    """REINFORCE++ without group baseline: G_it = r_i + sum_{s >= t} u_is, whitened over the batch.

    `group_ids` is accepted for a uniform signature and not used.
    """
    return _whitened_returns(_float(rewards), response_mask, token_rewards, eps)


def _whitened_returns(outcome: Tensor, response_mask: Tensor, token_rewards: Tensor | None, eps: float) -> Tensor:
    mask = response_mask != 0
    returns = _per_token(outcome, mask)
    if token_rewards is not None:
        if token_rewards.shape != mask.shape:
            raise ValueError(f"token_rewards has shape {tuple(token_rewards.shape)}, expected {tuple(mask.shape)}")
        u = torch.where(mask, token_rewards.to(returns.dtype), torch.zeros((), dtype=returns.dtype, device=returns.device))
        # return-to-go: reverse cumulative sum over the token axis
        returns = returns + u.flip(-1).cumsum(-1).flip(-1)
        returns = torch.where(mask, returns, torch.zeros_like(returns))
    count = mask.sum().clamp(min=1)
    mean = returns.sum() / count
    var = torch.where(mask, (returns - mean).square(), torch.zeros_like(returns)).sum() / count
    whitened = (returns - mean) * var.clamp(min=eps).rsqrt()
    return torch.where(mask, whitened, torch.zeros_like(whitened))


# ----------------------------------------------------------------------------------------------


def _validate(rewards: Tensor, group_ids: Tensor | Sequence[Hashable], response_mask: Tensor) -> None:
    if not isinstance(rewards, Tensor) or rewards.dim() != 1:
        raise ValueError(f"rewards must be a 1-D tensor (one reward per response), got {getattr(rewards, 'shape', rewards)!r}")
    if not torch.is_floating_point(rewards):
        raise TypeError(f"rewards must be floating point, got {rewards.dtype}")
    if response_mask.dim() != 2 or response_mask.shape[0] != rewards.shape[0]:
        raise ValueError(
            f"response_mask must be [{rewards.shape[0]}, tokens] to match {rewards.shape[0]} rewards, got {tuple(response_mask.shape)}"
        )
    n_ids = group_ids.shape[0] if isinstance(group_ids, Tensor) and group_ids.dim() else len(group_ids)
    if n_ids != rewards.shape[0]:
        raise ValueError(f"got {n_ids} group ids for {rewards.shape[0]} rewards")
    bad = ~torch.isfinite(rewards)
    if bool(bad.any()):
        rows = bad.nonzero().squeeze(-1).tolist()
        raise ValueError(
            f"rewards must be finite; responses {rows[:10]}{' ...' if len(rows) > 10 else ''} have "
            f"{[rewards[i].item() for i in rows[:10]]} (a failed reward must be handled before advantages)"
        )

"""Combining reward components into the one reward per response that advantages are computed from.

A response's components are the values of the rule rewards (math verifier, code sandbox,
plug-ins) and of every learned reward model's criteria; `values` [N, K] holds them (NaN where a
component does not apply to a response, e.g. a function limited to other data sources), and
`weights` [K] their weights. One registry, `REWARD_COMBINERS`:

  sum               r_i = sum_k w_k * v_ik                      (NaN components count 0)
  group_normalized  r_i = sum_k w_k * (v_ik - mean_gk) / (std_gk + eps)
                    mean / std (unbiased) over the responses of i's group g that have component
                    k; a component equal across the group (or present once) contributes 0.
                    GDPO (arXiv 2601.05242): normalising each component within its group before
                    weighting keeps a component with a large scale or spread (a reward model's
                    raw score) from drowning one with a small spread (a 0/1 verifier).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch
from torch import Tensor

from qwen25_rl.algorithms.advantages import GroupStats
from qwen25_rl.algorithms.registry import Registry

RewardCombiner = Callable[..., Tensor]
REWARD_COMBINERS: Registry[RewardCombiner] = Registry("reward combination")
register_reward_combiner = REWARD_COMBINERS.register


def combine_rewards(values: Tensor, weights: Tensor, group_ids: Tensor | Sequence[Hashable], mode: str = "sum", **options) -> Tensor:
    """The registered combiner `mode` applied to `values` [N, K], `weights` [K]: rewards [N]."""
    if values.dim() != 2 or weights.shape != (values.shape[1],):
        raise ValueError(f"values must be [N, K] and weights [K]; got {tuple(values.shape)} and {tuple(weights.shape)}")
    if len(group_ids) != values.shape[0]:
        raise ValueError(f"{len(group_ids)} group ids for {values.shape[0]} responses")
    return REWARD_COMBINERS.get(mode)(values, weights, group_ids, **options)


@register_reward_combiner("sum")
def weighted_sum(values: Tensor, weights: Tensor, group_ids, **_) -> Tensor:
    """r_i = sum_k w_k * v_ik, components a response does not have (NaN) counting 0."""
    v = values.to(torch.promote_types(values.dtype, torch.float32))
    return (torch.nan_to_num(v, nan=0.0) * weights.to(v)).sum(-1)


@register_reward_combiner("group_normalized")
def group_normalized_sum(values: Tensor, weights: Tensor, group_ids, *, eps: float = 1e-6) -> Tensor:
    """r_i = sum_k w_k * (v_ik - mean_gk) / (std_gk + eps), per group g and component k (GDPO)."""
    v = values.to(torch.promote_types(values.dtype, torch.float32))
    out = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
    for k in range(v.shape[1]):
        present = ~torch.isnan(v[:, k])
        if not bool(present.any()):
            continue
        rows = present.nonzero().squeeze(-1)
        col = v[rows, k]
        ids = [group_ids[int(i)] for i in rows] if not isinstance(group_ids, Tensor) else group_ids[rows]
        stats = GroupStats(col, ids)
        normalized = torch.where(stats.all_equal, torch.zeros_like(col), (col - stats.mean) / (stats.std + eps))
        out.index_add_(0, rows, weights[k].to(v) * normalized)
    return out

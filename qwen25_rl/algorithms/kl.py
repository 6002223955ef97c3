"""Per-token KL estimators between the policy and the reference policy.

The tokens were sampled from the policy, so KL(pi || pi_ref) = E_pi[log pi - log pi_ref] is
estimated per token from x = log pi_ref(y) - log pi(y) (Schulman, "Approximating KL
divergence", 2020):
  k1 = -x                  unbiased, high variance, can be negative
  k2 = x^2 / 2             biased, low variance, >= 0
  k3 = exp(x) - x - 1      unbiased, low variance, >= 0 (GRPO's choice)
Each is usable in the loss (GRPO: beta * KL added per token) or as a reward penalty
(`kl_penalty_token_rewards`, REINFORCE++ / PPO: -coef * KL added to the token rewards).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from qwen25_rl.algorithms.aggregation import check_mask
from qwen25_rl.algorithms.registry import Registry

KLEstimator = Callable[[Tensor, Tensor], Tensor]

KL_ESTIMATORS: Registry[KLEstimator] = Registry("KL estimator")
register_kl_estimator = KL_ESTIMATORS.register

# exp(20) = 4.9e8 is finite in every float type we use; beyond it k3's value is clamped anyway,
# and an overflowing exp would turn the clamped gradient 0 * inf into NaN.
_K3_MAX_EXPONENT = 20.0


def get_kl_estimator(name: str) -> KLEstimator:
    """The registered estimator called `name`; an error listing the known names otherwise."""
    return KL_ESTIMATORS.get(name)


@register_kl_estimator("k1")
def k1(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """k1 = log pi - log pi_ref."""
    return log_probs - ref_log_probs


@register_kl_estimator("k2")
def k2(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """k2 = (log pi - log pi_ref)^2 / 2."""
    return (log_probs - ref_log_probs).square() / 2


@register_kl_estimator("k3")
def k3(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """k3 = exp(x) - x - 1 with x = log pi_ref - log pi (x capped at 20 before the exp)."""
    x = ref_log_probs - log_probs
    return torch.exp(x.clamp(max=_K3_MAX_EXPONENT)) - x - 1


def kl_divergence(
    log_probs: Tensor,
    ref_log_probs: Tensor,
    estimator: str = "k3",
    *,
    clamp: float | None = 10.0,
) -> Tensor:
    """Per-token KL estimate [B, T], clamped to [-clamp, clamp] (None: not clamped).

    The clamp bounds the damage of a few tokens where the policy has moved far from the
    reference (one such token would otherwise dominate the loss); OpenRLHF and veRL clamp at 10.
    """
    if log_probs.shape != ref_log_probs.shape:
        raise ValueError(f"log_probs {tuple(log_probs.shape)} and ref_log_probs {tuple(ref_log_probs.shape)} differ in shape")
    value = get_kl_estimator(estimator)(log_probs, ref_log_probs)
    if clamp is not None:
        if clamp <= 0:
            raise ValueError(f"KL clamp must be positive or None, got {clamp}")
        value = value.clamp(min=-clamp, max=clamp)
    return value


def kl_penalty_token_rewards(
    kl: Tensor,
    response_mask: Tensor,
    kl_coef: float,
) -> Tensor:
    """Token rewards -kl_coef * KL_t on response tokens, 0 elsewhere: the KL-as-reward penalty.

    Pass the result as `token_rewards` to a REINFORCE++ advantage estimator, which adds the
    return-to-go of these rewards to the outcome reward of each token.
    """
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
    mask = check_mask(response_mask, kl)
    return torch.where(mask, -kl_coef * kl, torch.zeros((), dtype=kl.dtype, device=kl.device))

"""Direct preference optimisation losses on summed response log-probs.

Inputs are per pair: the summed log-probs of the chosen and rejected responses under the policy
(with gradient) and under the frozen reference. With optional length normalisation each sum is
divided by its response length first. The preference logit is

  h = (log pi(y_w) - log pi(y_l)) - (log pi_ref(y_w) - log pi_ref(y_l))

and the registered losses (one per `loss_type`) are, per pair:
  sigmoid: -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)   (DPO; eps > 0 is the
           conservative / label-smoothed cDPO, for pairs whose labels may be flipped w.p. eps)
  ipo:     (h - 1 / (2 beta))^2                                        (IPO, Eq. 17; usually
           with length normalisation, as TRL does)
  hinge:   max(0, 1 - beta h)                                          (SLiC)
RPO adds rpo_alpha * NLL(chosen), the chosen responses' token-mean negative log-likelihood,
which keeps DPO from lowering the probability of the chosen answers themselves.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from qwen25_rl.algorithms.losses import LossOutput
from qwen25_rl.algorithms.registry import Registry

# (h [P], *, beta, label_smoothing) -> per-pair loss [P]
PairLoss = Callable[..., Tensor]

DPO_LOSSES: Registry[PairLoss] = Registry("DPO loss")
register_dpo_loss = DPO_LOSSES.register


def get_dpo_loss(name: str) -> PairLoss:
    """The registered per-pair DPO loss called `name`; an error listing the known names otherwise."""
    return DPO_LOSSES.get(name)


@register_dpo_loss("sigmoid")
def sigmoid_dpo_loss(h: Tensor, *, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """-(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)."""
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    loss = -F.logsigmoid(beta * h)
    if label_smoothing:
        loss = (1 - label_smoothing) * loss - label_smoothing * F.logsigmoid(-beta * h)
    return loss


@register_dpo_loss("ipo")
def ipo_loss(h: Tensor, *, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """(h - 1 / (2 beta))^2."""
    _no_label_smoothing("ipo", label_smoothing)
    return (h - 1 / (2 * beta)).square()


@register_dpo_loss("hinge")
def hinge_loss(h: Tensor, *, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """max(0, 1 - beta h)."""
    _no_label_smoothing("hinge", label_smoothing)
    return torch.relu(1 - beta * h)


def _no_label_smoothing(name: str, label_smoothing: float) -> None:
    if label_smoothing:
        raise ValueError(f"label_smoothing applies to the sigmoid loss only, not to {name!r}")


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    length_normalize: bool = False,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
    rpo_alpha: float = 0.0,
    num_pairs: float | Tensor | None = None,
    num_chosen_tokens: float | Tensor | None = None,
) -> LossOutput:
    """DPO-family loss of a batch of pairs: sum of per-pair losses / N (+ RPO term).

    All log-prob inputs are [P] SUMS over response tokens. `chosen_lengths` / `rejected_lengths`
    [P] are response token counts, needed for `length_normalize` (average log-prob per token)
    and, chosen only, for `rpo_alpha`. N = `num_pairs` (global count of the optimizer step) or the
    local P; the RPO NLL is divided by `num_chosen_tokens` (global) or the local chosen-token
    count. Metrics (from the unnormalised sums, as TRL and OpenRLHF log them): rewards/chosen and
    rewards/rejected = beta * (log pi - log pi_ref), rewards/accuracy (chosen reward higher),
    rewards/margin, logps/chosen, logps/rejected, and nll when RPO is on.
    """
    inputs = {
        "policy_chosen_logps": policy_chosen_logps,
        "policy_rejected_logps": policy_rejected_logps,
        "ref_chosen_logps": ref_chosen_logps,
        "ref_rejected_logps": ref_rejected_logps,
    }
    num = policy_chosen_logps.shape[0] if policy_chosen_logps.dim() == 1 else -1
    for name, tensor in inputs.items():
        if tensor.dim() != 1 or tensor.shape[0] != num:
            raise ValueError(f"{name} must be [num_pairs] like policy_chosen_logps, got {tuple(tensor.shape)}")
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    per_pair_loss_fn = get_dpo_loss(loss_type)
    if rpo_alpha < 0:
        raise ValueError(f"rpo_alpha must be >= 0, got {rpo_alpha}")
    needs_lengths = length_normalize or rpo_alpha
    if needs_lengths and (chosen_lengths is None or (length_normalize and rejected_lengths is None)):
        raise ValueError("length_normalize needs chosen_lengths and rejected_lengths; rpo_alpha needs chosen_lengths")
    for name, lengths in (("chosen_lengths", chosen_lengths), ("rejected_lengths", rejected_lengths)):
        if lengths is not None and lengths.shape != (num,):
            raise ValueError(f"{name} must be [num_pairs]={num}, got {tuple(lengths.shape)}")

    pc, pr, rc, rr = policy_chosen_logps, policy_rejected_logps, ref_chosen_logps.detach(), ref_rejected_logps.detach()
    if length_normalize:
        c_len = chosen_lengths.to(pc.dtype).clamp(min=1)
        r_len = rejected_lengths.to(pc.dtype).clamp(min=1)
        pc, rc, pr, rr = pc / c_len, rc / c_len, pr / r_len, rr / r_len
    h = (pc - pr) - (rc - rr)
    per_pair = per_pair_loss_fn(h, beta=beta, label_smoothing=label_smoothing)
    denom = _positive(num_pairs, "num_pairs", default=max(num, 1))
    loss = per_pair.sum() / denom

    metrics: dict[str, Tensor] = {}
    if rpo_alpha:
        tokens = _positive(num_chosen_tokens, "num_chosen_tokens", default=chosen_lengths.sum().clamp(min=1))
        nll = -policy_chosen_logps.sum() / tokens
        loss = loss + rpo_alpha * nll
        metrics["nll"] = nll.detach()

    with torch.no_grad():
        chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
        rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
        metrics.update(
            {
                "rewards/chosen": chosen_rewards.mean(),
                "rewards/rejected": rejected_rewards.mean(),
                "rewards/accuracy": (chosen_rewards > rejected_rewards).to(chosen_rewards.dtype).mean(),
                "rewards/margin": (chosen_rewards - rejected_rewards).mean(),
                "logps/chosen": policy_chosen_logps.detach().mean(),
                "logps/rejected": policy_rejected_logps.detach().mean(),
                "loss/preference": (per_pair.sum() / denom).detach(),
            }
        )
    return LossOutput(loss, metrics)


def _positive(value: float | Tensor | None, name: str, *, default: float | Tensor) -> float | Tensor:
    if value is None:
        return default
    if float(value) <= 0:
        raise ValueError(f"{name} must be positive, got {float(value)}")
    return value

"""Reward-model losses with one output per named criterion (Qwen2.5 technical report).

The reward model scores a (prompt, response) sequence with C numbers, one per criterion
(`DEFAULT_CRITERIA`: truthfulness, helpfulness, conciseness, relevance, harmlessness,
debiasing). A preference pair is labelled per criterion, and any label may be missing, so every
loss here takes the labels as a [P, C] tensor and sums only over the labelled entries:

  multi_criterion_bt_loss   Bradley-Terry on pairs: -log sigmoid(pref * (r_chosen - r_rejected) - margin)
  rating_loss               regression on absolute ratings: (pred - target)^2

Both divide by N = the number of labelled entries of the whole optimizer step when it is given
(`num_labels`, summed over micro-batches and ranks), so the gradient does not depend on how the
step is split, or else by the local count (at least 1: an all-unlabelled batch is a loss of 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from qwen25_rl.algorithms.losses import LossOutput

DEFAULT_CRITERIA: tuple[str, ...] = ("truthfulness", "helpfulness", "conciseness", "relevance", "harmlessness", "debiasing")


def multi_criterion_bt_loss(
    chosen: Tensor,
    rejected: Tensor,
    preference: Tensor,
    *,
    margin: Tensor | float | None = None,
    num_labels: float | Tensor | None = None,
    centering_coef: float = 0.0,
) -> LossOutput:
    """Bradley-Terry loss per criterion, over the labelled entries only:

      L = [ sum_{(p,c): pref_pc != 0} -log sigmoid(pref_pc * (r_ch_pc - r_rej_pc) - m_p)
            + centering_coef * sum_{(p,c): pref_pc != 0} (r_ch_pc + r_rej_pc)^2 ] / N

    `chosen`, `rejected` [P, C] are the reward model's scores of the two responses; `preference`
    [P, C] is +1 where the chosen response is better on criterion c, -1 where the rejected one
    is, and 0 where there is no preference (label missing, or a tie): such entries add nothing.
    `margin` (one number or [P], per pair) asks the preferred score to lead by that much. The
    centering term (Eisenstein et al. 2023) keeps each criterion's scores near zero,
    which the BT term alone leaves free (it only sees differences). N = `num_labels` (the
    global count of the optimizer step) or the local count of labelled entries, at least 1.

    Metrics (detached): accuracy (pref * (r_ch - r_rej) > 0 over labelled entries; an exact tie
    of scores is wrong), labels (the local count) and margin (mean pref * (r_ch - r_rej)).
    """
    _check_pairs(chosen, rejected, preference)
    # A soft label (0.5) would silently rescale the score difference: refuse it.
    invalid = (preference != 0) & (preference != 1) & (preference != -1)
    if bool(invalid.any()):
        bad = sorted({float(v) for v in preference[invalid].tolist()}, key=str)
        raise ValueError(f"preference must hold only +1, -1 and 0 (no label), got {bad[:5]}")
    dtype = torch.promote_types(chosen.dtype, torch.float32)  # sigmoid tails in at least float32
    chosen, rejected = chosen.to(dtype), rejected.to(dtype)
    pref = preference.to(dtype)
    labelled = preference != 0
    diff = pref * (chosen - rejected)  # > 0 where the preferred response scores higher
    z = diff
    if margin is not None:
        if isinstance(margin, Tensor):
            if margin.shape not in ((), chosen.shape[:1]):
                raise ValueError(f"margin has shape {tuple(margin.shape)}, expected () or ({chosen.shape[0]},) (one per pair)")
            margin = margin.to(dtype).reshape(-1, 1) if margin.dim() else margin.to(dtype)
        z = diff - margin
    zero = torch.zeros((), dtype=dtype, device=chosen.device)
    # torch.where, not a multiplication by the mask: an unlabelled entry must add exactly 0 and
    # pass no gradient even if its term overflows.
    total = torch.where(labelled, -F.logsigmoid(z), zero).sum()
    if centering_coef:
        total = total + centering_coef * torch.where(labelled, (chosen + rejected).square(), zero).sum()
    count = labelled.sum()
    with torch.no_grad():
        n = count.clamp(min=1).to(dtype)
        metrics = {
            "accuracy": ((diff > 0) & labelled).sum().to(dtype) / n,
            "labels": count.to(dtype),
            "margin": torch.where(labelled, diff, zero).sum() / n,
        }
    return LossOutput(total / _label_count(num_labels, count), metrics)


def rating_loss(pred: Tensor, target: Tensor, mask: Tensor, *, num_labels: float | Tensor | None = None) -> LossOutput:
    """Regression on absolute ratings: L = sum_{(i,c): mask_ic} (pred_ic - target_ic)^2 / N.

    `pred` [N, C] are the reward model's scores of rated responses, `target` [N, C] the ratings
    (anything, NaN included, where `mask` [N, C] (bool) is False), N = `num_labels` (global
    count of the optimizer step) or the local count of rated entries, at least 1.
    Metrics (detached): mse (mean over rated entries) and labels (the local count).
    """
    if pred.shape != target.shape or pred.shape != mask.shape or pred.dim() != 2:
        raise ValueError(
            f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and mask {tuple(mask.shape)} must all be [num_responses, num_criteria]"
        )
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    dtype = torch.promote_types(pred.dtype, torch.float32)
    pred = pred.to(dtype)
    zero = torch.zeros((), dtype=dtype, device=pred.device)
    # The missing targets are replaced BEFORE the subtraction: NaN - pred inside a masked-out
    # branch would still send NaN * 0 = NaN into pred's gradient.
    safe_target = torch.where(mask, target.to(dtype), zero)
    total = torch.where(mask, (pred - safe_target).square(), zero).sum()
    count = mask.sum()
    with torch.no_grad():
        metrics = {"mse": total.detach() / count.clamp(min=1).to(dtype), "labels": count.to(dtype)}
    return LossOutput(total / _label_count(num_labels, count), metrics)


def pairwise_accuracy(chosen: Tensor, rejected: Tensor, preference: Tensor) -> tuple[Tensor, Tensor]:
    """Per criterion: (correct [C], labelled [C]) counts (int64) over the pairs with a
    preference (pref != 0); a pair is correct iff pref * (r_ch - r_rej) > 0, so an exact tie of
    scores counts as wrong. Counts, not a ratio, so they add up across batches and ranks."""
    _check_pairs(chosen, rejected, preference)
    with torch.no_grad():
        labelled = preference != 0
        correct = (preference.to(chosen.dtype) * (chosen - rejected) > 0) & labelled
        return correct.sum(dim=0), labelled.sum(dim=0)


def _check_pairs(chosen: Tensor, rejected: Tensor, preference: Tensor) -> None:
    if chosen.shape != rejected.shape or chosen.shape != preference.shape or chosen.dim() != 2:
        raise ValueError(
            f"chosen {tuple(chosen.shape)}, rejected {tuple(rejected.shape)} and preference {tuple(preference.shape)} "
            "must all be [num_pairs, num_criteria]"
        )


def _label_count(num_labels: float | Tensor | None, local: Tensor) -> Tensor | float:
    if num_labels is None:
        return local.clamp(min=1)
    value = float(num_labels.item()) if isinstance(num_labels, Tensor) else float(num_labels)
    if value <= 0:
        raise ValueError(f"num_labels must be positive, got {value}")
    return num_labels

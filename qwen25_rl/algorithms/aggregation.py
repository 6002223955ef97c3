"""Reducing a per-token loss matrix to the scalar an optimizer step minimises.

Every mode divides by a count that the caller may pass for the WHOLE optimizer step (all
micro-batches on all data-parallel ranks). With those global counts, the loss of one
micro-batch is that micro-batch's share of the step's loss, so summing the micro-batch losses
(gradient accumulation) gives exactly the loss, and the gradient, of the unsplit batch. Without
them, the local micro-batch counts are used and the result depends on how the step was split.

Data-parallel note: DDP/DeepSpeed AVERAGE gradients over ranks. A worker that passes global
counts must multiply its loss by the data-parallel world size before `backward()` so that the
average becomes the sum; these functions do not know about ranks.
"""

from __future__ import annotations

import torch
from torch import Tensor

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def check_mask(mask: Tensor, like: Tensor, name: str = "response_mask") -> Tensor:
    """`mask` as a bool tensor of `like`'s shape; a clear error when the shapes differ."""
    if mask.shape != like.shape:
        raise ValueError(f"{name} has shape {tuple(mask.shape)}, expected {tuple(like.shape)}")
    return mask if mask.dtype == torch.bool else mask != 0


def token_and_sequence_counts(mask: Tensor) -> tuple[int, int]:
    """(number of response tokens, number of sequences with at least one response token).

    These are the local counts; a worker sums them over its micro-batches and ranks to get the
    global counts that `aggregate_token_loss` takes.
    """
    mask = mask != 0
    return int(mask.sum().item()), int((mask.sum(dim=-1) > 0).sum().item())


def aggregate_token_loss(
    per_token_loss: Tensor,
    mask: Tensor,
    mode: str = "token-mean",
    *,
    num_tokens: float | Tensor | None = None,
    num_seqs: float | Tensor | None = None,
    max_response_length: int | None = None,
) -> Tensor:
    """Scalar loss from `per_token_loss` [B, T] over the positions where `mask` [B, T] is true.

    With l_it the loss of token t of sequence i, m_it the mask, n_i = sum_t m_it:
      token-mean:               sum_it m_it l_it / N_tok
      seq-mean-token-mean:      sum_i (sum_t m_it l_it / n_i) / N_seq
      seq-mean-token-sum:       sum_i (sum_t m_it l_it) / N_seq
      seq-mean-token-sum-norm:  sum_it m_it l_it / (N_seq * L)        (Dr. GRPO: a constant
                                normaliser, so long answers are not down-weighted per token)
    N_tok = `num_tokens`, N_seq = `num_seqs` (global counts of the optimizer step) or, when not
    given, the local number of response tokens / of sequences with at least one response token.
    A sequence without response tokens adds nothing and is not counted in the local N_seq.
    L = `max_response_length` (the generation budget; pass it so that every micro-batch uses the
    same constant) or, when not given, the padded width T of this batch.

    Masked positions never reach the result, even when they hold NaN or inf. With no response
    tokens at all the loss is 0 (with a gradient of 0), not NaN.
    """
    if per_token_loss.dim() != 2:
        raise ValueError(f"per_token_loss must be [batch, tokens], got shape {tuple(per_token_loss.shape)}")
    mask = check_mask(mask, per_token_loss, "mask")
    masked = torch.where(mask, per_token_loss, torch.zeros((), dtype=per_token_loss.dtype, device=per_token_loss.device))
    seq_token_counts = mask.sum(dim=-1)

    if mode == "token-mean":
        total = masked.sum()
        denom = _count(num_tokens, "num_tokens", default=seq_token_counts.sum())
    elif mode == "seq-mean-token-mean":
        total = (masked.sum(dim=-1) / seq_token_counts.clamp(min=1).to(masked.dtype)).sum()
        denom = _count(num_seqs, "num_seqs", default=(seq_token_counts > 0).sum())
    elif mode == "seq-mean-token-sum":
        total = masked.sum()
        denom = _count(num_seqs, "num_seqs", default=(seq_token_counts > 0).sum())
    elif mode == "seq-mean-token-sum-norm":
        length = per_token_loss.shape[-1] if max_response_length is None else max_response_length
        if length <= 0:
            raise ValueError(f"max_response_length must be positive, got {max_response_length}")
        if max_response_length is not None and per_token_loss.shape[-1] > max_response_length:
            raise ValueError(
                f"batch has {per_token_loss.shape[-1]} response positions, more than max_response_length={max_response_length}"
            )
        total = masked.sum()
        denom = _count(num_seqs, "num_seqs", default=(seq_token_counts > 0).sum()) * length
    else:
        raise ValueError(f"unknown loss aggregation mode {mode!r}; known: {', '.join(LOSS_AGG_MODES)}")
    return total / denom


def _count(value: float | Tensor | None, name: str, *, default: Tensor) -> Tensor | float:
    """A normalising count: the given global one (must be positive) or the local one (min 1)."""
    if value is None:
        # An all-masked batch sums to exactly 0; dividing by 1 keeps it 0 instead of 0/0 = NaN.
        return default.clamp(min=1)
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(value.shape)}")
        if not bool(value > 0):
            raise ValueError(f"{name} must be positive, got {value.item()}")
        return value
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value

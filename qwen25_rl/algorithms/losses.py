"""Language-model loss (pretraining / SFT) and the Bradley-Terry reward-model loss."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from qwen25_rl.algorithms.logprobs import DEFAULT_CHUNK_SIZE, _check_inputs, _compute_dtype, token_log_probs


@dataclass
class LossOutput:
    """A scalar loss to call `backward()` on, plus detached metrics (scalars) for logging."""

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


def lm_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    num_tokens: float | Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """Token-level negative log-likelihood: -sum_{t: labels_t != ignore} log softmax(logits_t)[labels_t] / N.

    `labels` are ALREADY aligned with `logits` (labels[:, t] is the target of logits[:, t]; the
    caller shifts). N = `num_tokens`, the number of non-ignored tokens in the whole optimizer
    step (all micro-batches, all ranks), which makes the gradient independent of how the step
    is split; without it, the local count (at least 1, so an all-ignored batch gives 0, not NaN).
    Only per-token scalars are saved for backward (no second [..., V] tensor).
    """
    valid = labels != ignore_index
    safe_labels = torch.where(valid, labels, torch.zeros((), dtype=labels.dtype, device=labels.device))
    log_p = token_log_probs(logits, safe_labels, chunk_size=chunk_size)
    total = -torch.where(valid, log_p, torch.zeros((), dtype=log_p.dtype, device=log_p.device)).sum()
    return total / _token_count(num_tokens, valid)


def lm_loss_from_hidden(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    bias: Tensor | None = None,
    ignore_index: int = -100,
    num_tokens: float | Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """`lm_loss` of the logits hidden @ weight.T + bias, without ever materialising them.

    `hidden` [..., H] are the last hidden states, `weight` [V, H] the output projection,
    `labels` [...] aligned with `hidden`. Ignored positions are skipped entirely (SFT prompt
    tokens cost nothing). Because the loss is a scalar, the gradients w.r.t. `hidden`,
    `weight` and `bias` are computed during the forward chunk loop (d(-log p_y)/dz = p - 1[y]),
    so each chunk's logits are made once instead of being recomputed in backward; backward only
    scales them by the incoming gradient. When no gradient is needed, none is computed.
    """
    # Decided here: inside Function.forward autograd is always off.
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias))
    return _LMLossFromHidden.apply(hidden, weight, bias, labels, int(ignore_index), num_tokens, int(chunk_size), need_grad)


def _token_count(num_tokens: float | Tensor | None, valid: Tensor) -> Tensor | float:
    if num_tokens is None:
        return valid.sum().clamp(min=1)
    value = float(num_tokens.item()) if isinstance(num_tokens, Tensor) else float(num_tokens)
    if value <= 0:
        raise ValueError(f"num_tokens must be positive, got {value}")
    return num_tokens


class _LMLossFromHidden(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, ignore_index, num_tokens, chunk_size, need_grad):
        if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"hidden [..., {hidden.shape[-1]}] does not match output projection weight {tuple(weight.shape)} (expected [vocab, hidden])"
            )
        if hidden.dtype != weight.dtype:
            raise TypeError(f"hidden is {hidden.dtype} but the output projection weight is {weight.dtype}")
        vocab = weight.shape[0]
        if bias is not None and bias.shape != (vocab,):
            raise ValueError(f"bias has shape {tuple(bias.shape)}, expected ({vocab},)")
        if labels.shape != hidden.shape[:-1]:
            raise ValueError(f"labels have shape {tuple(labels.shape)}, expected {tuple(hidden.shape[:-1])}")
        flat_labels = labels.reshape(-1)
        valid_rows = (flat_labels != ignore_index).nonzero().squeeze(-1)
        targets = flat_labels[valid_rows].long()
        _check_inputs(targets, targets.shape, vocab, 1.0, chunk_size)
        denom = _token_count(num_tokens, flat_labels != ignore_index)
        denom = float(denom.item()) if isinstance(denom, Tensor) else float(denom)

        flat = hidden.reshape(-1, hidden.shape[-1])
        rows = flat[valid_rows]  # [n_valid, H]: a small copy, the hidden size is tiny next to V
        n = rows.shape[0]
        cdtype = _compute_dtype(hidden.dtype)
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        need_grad = need_grad and (need_hidden or need_weight or need_bias)
        grad_rows = torch.empty_like(rows) if need_grad and need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=cdtype, device=weight.device) if need_grad and need_weight else None
        grad_bias = torch.zeros(vocab, dtype=cdtype, device=weight.device) if need_grad and need_bias else None

        total = torch.zeros((), dtype=cdtype, device=hidden.device)
        if n:
            buffer = torch.empty((min(chunk_size, n), vocab), dtype=hidden.dtype, device=hidden.device)
            for start in range(0, n, chunk_size):
                end = min(start + chunk_size, n)
                h, y = rows[start:end], targets[start:end]
                z = buffer[: end - start]
                torch.matmul(h, weight.t(), out=z)
                if bias is not None:
                    z += bias
                s = z if z.dtype == cdtype else z.to(cdtype)
                # log-sum-exp in place in the reused buffer (no fresh [n, V] temporaries)
                s_y = s.gather(-1, y.unsqueeze(-1)).squeeze(-1)
                row_max = s.amax(dim=-1, keepdim=True)
                e = s.sub_(row_max).exp_()
                row_sum = e.sum(dim=-1, keepdim=True)
                lse = row_max.squeeze(-1) + row_sum.squeeze(-1).log()
                total -= (s_y - lse).sum()
                if not need_grad:
                    continue
                # d(-log p_y)/dz_j = p_j - 1[j = y], scaled by 1/N here so backward only multiplies
                grad_z = e.div_(row_sum)
                grad_z.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(lse, -1.0).unsqueeze(-1))
                grad_z.div_(denom)
                grad_z = grad_z.to(weight.dtype)
                if grad_rows is not None:
                    torch.matmul(grad_z, weight, out=grad_rows[start:end])
                if grad_weight is not None:
                    grad_weight.addmm_(grad_z.t().to(cdtype), h.to(cdtype))
                if grad_bias is not None:
                    grad_bias += grad_z.sum(dim=0).to(cdtype)
            del buffer
        ctx.hidden_shape, ctx.hidden_dtype = hidden.shape, hidden.dtype
        # Intermediate results (not inputs or outputs), so kept on ctx directly.
        ctx.precomputed = (
            valid_rows,
            grad_rows,
            grad_weight.to(weight.dtype) if grad_weight is not None else None,
            grad_bias.to(bias.dtype) if grad_bias is not None else None,
        )
        return (total / denom).to(cdtype)

    @staticmethod
    def backward(ctx, grad_output):
        valid_rows, grad_rows, grad_weight, grad_bias = ctx.precomputed
        # The usual upstream gradient is exactly 1 (loss.backward()): hand the precomputed
        # gradients over without another full pass over the [V, H] weight gradient.
        unit = bool(grad_output == 1)

        def scaled(grad):
            return grad if unit else grad * grad_output.to(grad.dtype)

        grad_hidden = None
        if grad_rows is not None:
            shape = ctx.hidden_shape
            grad_hidden = torch.zeros((math.prod(shape[:-1]), shape[-1]), dtype=ctx.hidden_dtype, device=grad_rows.device)
            grad_hidden.index_copy_(0, valid_rows, scaled(grad_rows))
            grad_hidden = grad_hidden.view(shape)
        return (
            grad_hidden,
            scaled(grad_weight) if grad_weight is not None else None,
            scaled(grad_bias) if grad_bias is not None else None,
            None,
            None,
            None,
            None,
            None,
        )


def bradley_terry_loss(
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    *,
    margin: Tensor | float | None = None,
    num_pairs: float | Tensor | None = None,
) -> LossOutput:
    """Reward-model loss: sum_i -log sigmoid(r_chosen_i - r_rejected_i - margin_i) / N.

    `margin` (per pair or one number) asks the chosen reward to lead by at least that much
    (Llama-2 style preference strength). N = `num_pairs` (global count of the optimizer step)
    or the local number of pairs. Metrics: accuracy (r_chosen > r_rejected), mean margin
    r_chosen - r_rejected, mean chosen and rejected rewards.
    """
    if chosen_rewards.shape != rejected_rewards.shape or chosen_rewards.dim() != 1:
        raise ValueError(
            f"chosen_rewards {tuple(chosen_rewards.shape)} and rejected_rewards {tuple(rejected_rewards.shape)} must both be [num_pairs]"
        )
    diff = chosen_rewards - rejected_rewards
    if margin is not None:
        if isinstance(margin, Tensor) and margin.shape not in ((), diff.shape):
            raise ValueError(f"margin has shape {tuple(margin.shape)}, expected () or {tuple(diff.shape)}")
        diff_with_margin = diff - margin
    else:
        diff_with_margin = diff
    total = -F.logsigmoid(diff_with_margin).sum()
    if num_pairs is None:
        denom: Tensor | float = max(diff.shape[0], 1)
    else:
        denom = num_pairs
        if float(denom) <= 0:
            raise ValueError(f"num_pairs must be positive, got {float(denom)}")
    with torch.no_grad():
        metrics = {
            "accuracy": (diff > 0).to(diff.dtype).mean(),
            "margin": diff.mean(),
            "chosen_reward": chosen_rewards.mean(),
            "rejected_reward": rejected_rewards.mean(),
        }
    return LossOutput(total / denom, metrics)

"""A loss of per-token log-probs computed straight from hidden states, gradients included, in one pass.

`token_log_probs_from_hidden` must recompute each chunk's logits in backward because it does
not know, during forward, what the log-probs will be used for: 4 [tokens x H x V] matmuls per
step instead of 3. When the loss is known up front, as in the policy update, its gradient with
respect to a chunk's log-probs can be taken as soon as the chunk's log-probs exist, and the
chunk's contribution to d/d hidden and d/d weight follows from the softmax still in the buffer:

  per chunk of rows:  z = h W^T (+ b),  s = z / tau,  p = softmax(s)
                      log p_y, H  ->  loss_c = loss_fn(rows, log p_y, H)
                      g = d loss_c / d log p_y,  g_H = d loss_c / d H   (autograd on [rows, T])
                      d/ds_j = g (1[j = y] - p_j) - g_H p_j (log p_j + H)
                      d/dh += (d/ds) W / tau,  d/dW += (d/ds)^T h / tau

Backward then only scales the stored gradients. The requirement on `loss_fn`: the total loss is
the SUM of `loss_fn` over the row chunks, i.e. the loss is additive over sequences. Every policy
loss here is, once the normalising counts are fixed for the whole batch (they are the same
global counts that make micro-batches additive, see `aggregation.py`); `policy_loss_from_hidden`
passes them. Tensors that `loss_fn` closes over are constants: gradients flow only through the
log-probs and entropies to `hidden`, `weight` and `bias`.

Chunks are whole rows (sequences) so that sequence-level terms stay exact; the scratch memory is
about rows_per_chunk x T x V floats (x2 with entropy). When a single row's logits do not fit,
use `token_log_probs_from_hidden` (token chunks, recompute in backward) instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from qwen25_rl.algorithms.aggregation import token_and_sequence_counts
from qwen25_rl.algorithms.logprobs import _check_inputs, _compute_dtype
from qwen25_rl.algorithms.losses import LossOutput
from qwen25_rl.algorithms.policy_loss import policy_loss

# loss_fn(rows, log_probs [r, T], entropy [r, T] or None) -> scalar
ChunkLoss = Callable[[slice, Tensor, "Tensor | None"], Tensor]


@dataclass
class FusedPolicyLossOutput(LossOutput):
    """`LossOutput` plus the per-token log-probs (and entropies) computed on the way, detached."""

    log_probs: Tensor | None = None
    entropy: Tensor | None = None


@dataclass
class FusedLossOutput:
    loss: Tensor  # scalar, differentiable w.r.t. hidden / weight / bias
    log_probs: Tensor  # [B, T], detached
    entropy: Tensor | None  # [B, T], detached, when requested


def fused_loss_from_hidden(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    loss_fn: ChunkLoss,
    *,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    rows_per_chunk: int = 1,
    with_entropy: bool = False,
    response_mask: Tensor | None = None,
) -> FusedLossOutput:
    """sum over row chunks of loss_fn(rows, log p(labels), entropy), from `hidden` [B, T, H] and
    the output projection `weight` [V, H]; see the module doc for the contract on `loss_fn`.

    Positions where `response_mask` [B, T] is false are not scored (no logits, any label): their
    log-prob and entropy are 0 and they receive no gradient.
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [batch, tokens, hidden], got shape {tuple(hidden.shape)}")
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"hidden [..., {hidden.shape[-1]}] does not match output projection weight {tuple(weight.shape)} (expected [vocab, hidden])"
        )
    if hidden.dtype != weight.dtype:
        raise TypeError(f"hidden is {hidden.dtype} but the output projection weight is {weight.dtype}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias has shape {tuple(bias.shape)}, expected ({weight.shape[0]},)")
    if rows_per_chunk <= 0:
        raise ValueError(f"rows_per_chunk must be positive, got {rows_per_chunk}")
    if response_mask is None:
        mask = torch.ones(labels.shape, dtype=torch.bool, device=labels.device)
    elif response_mask.shape != labels.shape:
        raise ValueError(f"response_mask has shape {tuple(response_mask.shape)}, expected {tuple(labels.shape)}")
    else:
        mask = response_mask != 0
    safe_labels = torch.where(mask, labels, torch.zeros((), dtype=labels.dtype, device=labels.device))
    _check_inputs(safe_labels, hidden.shape[:-1], weight.shape[0], temperature, rows_per_chunk)
    cdtype = _compute_dtype(hidden.dtype)
    log_probs = torch.empty(labels.shape, dtype=cdtype, device=hidden.device)
    entropy = torch.empty(labels.shape, dtype=cdtype, device=hidden.device) if with_entropy else None
    # Decided here: inside Function.forward autograd is always off.
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias))
    loss = _FusedLossFromHidden.apply(
        hidden,
        weight,
        bias,
        safe_labels,
        mask,
        loss_fn,
        float(temperature),
        int(rows_per_chunk),
        need_grad,
        log_probs,
        entropy,
    )
    return FusedLossOutput(loss, log_probs, entropy)


def _spread(values: Tensor, picked: Tensor, rows: int, length: int) -> Tensor:
    """[n] values at the flat positions `picked` -> [rows, length], 0 elsewhere."""
    full = torch.zeros(rows * length, dtype=values.dtype, device=values.device)
    return full.index_copy_(0, picked, values).view(rows, length)


class _FusedLossFromHidden(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, mask, loss_fn, temperature, rows_per_chunk, need_grad, log_probs_out, entropy_out):
        batch, length, width = hidden.shape
        vocab = weight.shape[0]
        cdtype = log_probs_out.dtype
        with_entropy = entropy_out is not None
        need_hidden, need_weight, need_bias = (need_grad and bool(x) for x in ctx.needs_input_grad[:3])
        # zeros: positions outside the mask get no gradient
        grad_hidden = torch.zeros(hidden.shape, dtype=hidden.dtype, device=hidden.device) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=cdtype, device=weight.device) if need_weight else None
        grad_bias = torch.zeros(vocab, dtype=cdtype, device=weight.device) if need_bias else None
        total = torch.zeros((), dtype=cdtype, device=hidden.device)

        rows_cap = min(rows_per_chunk, batch) * length
        logits_buffer = torch.empty((rows_cap, vocab), dtype=hidden.dtype, device=hidden.device)
        p_buffer = torch.empty((rows_cap, vocab), dtype=cdtype, device=hidden.device) if with_entropy else None
        for r0 in range(0, batch, rows_per_chunk):
            r1 = min(r0 + rows_per_chunk, batch)
            rows = slice(r0, r1)
            picked = mask[rows].reshape(-1).nonzero().squeeze(-1)  # response positions of these rows
            h = hidden[rows].reshape(-1, width).index_select(0, picked)
            y = labels[rows].reshape(-1)[picked].long()
            n = h.shape[0]
            z = logits_buffer[:n]
            torch.matmul(h, weight.t(), out=z)
            if bias is not None:
                z += bias
            s = z if z.dtype == cdtype else z.to(cdtype)
            if temperature != 1.0:
                s.div_(temperature)
            s_y = s.gather(-1, y.unsqueeze(-1)).squeeze(-1)
            row_max = s.amax(dim=-1, keepdim=True)
            shifted = s.sub_(row_max)  # s_j - m
            if with_entropy:
                p = torch.exp(shifted, out=p_buffer[:n])
            else:
                p = shifted.exp_()  # the buffer now holds exp(s_j - m)
            row_sum = p.sum(dim=-1, keepdim=True)
            p.div_(row_sum)  # softmax
            log_sum = row_sum.squeeze(-1).log()
            lse = row_max.squeeze(-1) + log_sum
            chunk_log_p = s_y - lse
            chunk_entropy = None
            if with_entropy:
                # H = -sum_j p_j log p_j = log S - sum_j p_j (s_j - m)
                chunk_entropy = log_sum - (p * shifted).sum(dim=-1)

            lp_leaf = _spread(chunk_log_p, picked, r1 - r0, length).requires_grad_(need_grad)
            ent_leaf = _spread(chunk_entropy, picked, r1 - r0, length).requires_grad_(need_grad) if with_entropy else None
            with torch.enable_grad():
                chunk_loss = loss_fn(rows, lp_leaf, ent_leaf)
                if not isinstance(chunk_loss, Tensor) or chunk_loss.dim() != 0:
                    raise ValueError("loss_fn must return a scalar tensor")
                grads = (None, None)
                if need_grad and chunk_loss.requires_grad:
                    leaves = [lp_leaf] + ([ent_leaf] if with_entropy else [])
                    grads = torch.autograd.grad(chunk_loss, leaves, allow_unused=True) + (None,)
            total += chunk_loss.detach().to(cdtype)
            log_probs_out[rows] = lp_leaf.detach()
            if with_entropy:
                entropy_out[rows] = ent_leaf.detach()
            if not need_grad or n == 0:
                continue

            g_lp = grads[0].reshape(-1)[picked] if grads[0] is not None else torch.zeros_like(chunk_log_p)
            g_h = grads[1].reshape(-1)[picked] if grads[1] is not None else None
            if g_h is not None:
                # coef_j = -g - g_H (log p_j + H), log p_j = (s_j - m) - log S
                coef = shifted.sub_(log_sum.unsqueeze(-1)).add_(chunk_entropy.unsqueeze(-1))
                coef.mul_(-g_h.unsqueeze(-1)).sub_(g_lp.unsqueeze(-1))
                grad_s = coef.mul_(p)
            else:
                grad_s = p.mul_(-g_lp.unsqueeze(-1))
            grad_s.scatter_add_(-1, y.unsqueeze(-1), g_lp.unsqueeze(-1).to(grad_s.dtype))
            if temperature != 1.0:
                grad_s.div_(temperature)
            grad_z = grad_s.to(weight.dtype)
            if need_hidden:
                grad_hidden[rows].view(-1, width).index_copy_(0, picked, grad_z @ weight)
            if need_weight:
                _add_product(grad_weight, grad_z.t(), h)
            if need_bias:
                grad_bias += grad_z.sum(dim=0).to(cdtype)
        del logits_buffer, p_buffer
        # intermediate results (not inputs or outputs), so kept on ctx directly
        ctx.precomputed = (
            grad_hidden,
            grad_weight.to(weight.dtype) if grad_weight is not None else None,
            grad_bias.to(bias.dtype) if grad_bias is not None else None,
        )
        return total

    @staticmethod
    def backward(ctx, grad_output):
        unit = bool(grad_output == 1)

        def scaled(grad):
            if grad is None:
                return None
            return grad if unit else grad * grad_output.to(grad.dtype)

        grad_hidden, grad_weight, grad_bias = ctx.precomputed
        return (scaled(grad_hidden), scaled(grad_weight), scaled(grad_bias)) + (None,) * 8


def _add_product(acc: Tensor, a: Tensor, b: Tensor) -> None:
    """acc += a @ b. Low-precision `a`, `b` (bf16 training, `acc` float32) multiply on the
    tensor cores, never as a float32 GEMM (about 12x slower on an H100): with a float32 result
    where the device has that kernel (CUDA), else rounded to their dtype per chunk and summed
    in float32 (bf16-precision gradients, as bf16 training keeps them anyway)."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
        return
    if a.is_cuda:
        try:
            acc.add_(torch.mm(a, b, out_dtype=acc.dtype))
            return
        except (RuntimeError, TypeError):  # a torch without mm's out_dtype: round per chunk
            pass
    acc.add_(a @ b)


def policy_loss_from_hidden(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    old_log_probs: Tensor | None,
    advantages: Tensor,
    response_mask: Tensor,
    *,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    rows_per_chunk: int = 1,
    compute_entropy: bool = False,
    num_tokens: float | Tensor | None = None,
    num_seqs: float | Tensor | None = None,
    max_response_length: int | None = None,
    rollout_log_probs: Tensor | None = None,
    ref_log_probs: Tensor | None = None,
    **policy_options,
) -> FusedPolicyLossOutput:
    """`policy_loss` of the log-probs of `labels` under (hidden @ weight.T + bias) / temperature,
    computed with 3 instead of 4 vocabulary-sized matmuls (see the module doc).

    Same arguments and result as `policy_loss` (which it calls per row chunk), plus the hidden
    states, output projection and labels [B, T] instead of the log-probs. The normalising counts
    default to this batch's own, fixed for all chunks. `compute_entropy` (implied by a non-zero
    `entropy_coef`) adds the entropy term and metric at the cost of one more [chunk, V] buffer.
    Padding positions (outside `response_mask`) are not scored at all. The result also carries
    the per-token `log_probs` and `entropy` ([B, T], detached), which a
    worker needs anyway (e.g. as the old log-probs of the next PPO epoch).

    `old_log_probs=None` means on-policy (one pass over the rollout's batch): the policy before
    the update is the current one, so the old log-probs are the current ones, detached (the
    ratio is exactly 1 and its gradient is the plain policy gradient).
    """
    if response_mask.shape != labels.shape:
        raise ValueError(f"response_mask has shape {tuple(response_mask.shape)}, expected {tuple(labels.shape)}")
    if "entropy" in policy_options:
        raise ValueError("entropy is computed here from the hidden states; pass compute_entropy=True instead")
    with_entropy = compute_entropy or bool(policy_options.get("entropy_coef", 0.0))
    local_tokens, local_seqs = token_and_sequence_counts(response_mask)
    counts = {
        "num_tokens": num_tokens if num_tokens is not None else max(local_tokens, 1),
        "num_seqs": num_seqs if num_seqs is not None else max(local_seqs, 1),
        "max_response_length": max_response_length if max_response_length is not None else labels.shape[-1],
    }
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)

    def rows_of(t: Tensor | None, rows: slice) -> Tensor | None:
        return None if t is None else t[rows]

    def chunk_loss(rows: slice, log_probs: Tensor, entropy: Tensor | None) -> Tensor:
        old = log_probs.detach() if old_log_probs is None else old_log_probs[rows]
        return policy_loss(
            log_probs,
            old,
            advantages[rows],
            response_mask[rows],
            rollout_log_probs=rows_of(rollout_log_probs, rows),
            ref_log_probs=rows_of(ref_log_probs, rows),
            entropy=entropy,
            **counts,
            **policy_options,
        ).loss

    fused = fused_loss_from_hidden(
        hidden,
        weight,
        labels,
        chunk_loss,
        bias=bias,
        temperature=temperature,
        rows_per_chunk=rows_per_chunk,
        with_entropy=with_entropy,
        response_mask=response_mask,
    )
    # Metrics over the whole batch, from the detached log-probs (elementwise work on [B, T]).
    with torch.no_grad():
        metrics = policy_loss(
            fused.log_probs,
            fused.log_probs if old_log_probs is None else old_log_probs,
            advantages,
            response_mask,
            rollout_log_probs=rollout_log_probs,
            ref_log_probs=ref_log_probs,
            entropy=fused.entropy,
            **counts,
            **policy_options,
        ).metrics
    return FusedPolicyLossOutput(fused.loss, metrics, log_probs=fused.log_probs, entropy=fused.entropy)

"""Per-token log-probabilities and entropies of the sampled tokens, memory-bounded.

At real scale the vocabulary is 151,936 wide: one [batch, tokens, vocab] float32 tensor for
4 x 1024 tokens is 2.5 GB, and the textbook `log_softmax(logits).gather(...)` keeps two of them
alive for backward (plus two more during it). Both paths here work on row chunks:

* `token_log_probs(logits, labels)`: logits are given; only per-row scalars (the log-partition
  function) are saved for backward, which recomputes the softmax chunk by chunk. The gradient
  w.r.t. the logits is full-size, as it must be for a full-size input.
* `token_log_probs_from_hidden(hidden, weight, labels)`: the last hidden states and the output
  projection are given, and full logits never exist: forward computes each chunk's logits,
  keeps two numbers per token and drops them; backward recomputes them per chunk and
  accumulates the gradients of the hidden states and of the projection. This is the path the
  reference worker (no backward) and any caller that needs log-probs as a tensor use.
* `fused.policy_loss_from_hidden` goes one step further for the policy update, where the loss
  is known up front: no recompute in backward (see `fused.py`).
With a `response_mask`, padding positions score 0; the hidden-state path does not compute
logits for them at all.

Temperature is applied as the sampler applies it: log p(y) = log softmax(z / tau)[y], so the
trainer scores tokens under the same distribution vLLM sampled them from.

Formulas, for logits z of one position, tau the temperature and s = z / tau:
  lse     = log sum_j exp(s_j)
  log p_y = s_y - lse
  H       = -sum_j p_j log p_j = lse - sum_j p_j s_j
  d log p_y / d s_j = 1[j = y] - p_j
  d H / d s_j       = -p_j (log p_j + H)
"""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_CHUNK_SIZE = 1024


def token_log_probs(
    logits: Tensor,
    labels: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    response_mask: Tensor | None = None,
) -> Tensor:
    """log softmax(logits / temperature)[..., labels]: shape `labels.shape`, float32 or wider.

    `logits` [..., V] and `labels` [...] are aligned (labels[..., t] is the token scored by
    logits[..., t]; the caller shifts). Every label must be in [0, V), except where
    `response_mask` (optional, `labels.shape`) is false: there the result is 0 and the label is
    not looked at (padding ids such as -100 are fine).
    """
    return _from_logits(logits, labels, temperature, chunk_size, response_mask, with_entropy=False)[0]


def token_log_probs_and_entropy(
    logits: Tensor,
    labels: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    response_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """(log-probs of `labels`, entropy of softmax(logits / temperature)), both `labels.shape`,
    0 where `response_mask` is false."""
    return _from_logits(logits, labels, temperature, chunk_size, response_mask, with_entropy=True)


def entropy_from_logits(logits: Tensor, *, temperature: float = 1.0, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tensor:
    """Entropy of softmax(logits / temperature) per position: shape `logits.shape[:-1]`."""
    labels = torch.zeros(logits.shape[:-1], dtype=torch.long, device=logits.device)
    return token_log_probs_and_entropy(logits, labels, temperature=temperature, chunk_size=chunk_size)[1]


def token_log_probs_from_hidden(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    response_mask: Tensor | None = None,
) -> Tensor:
    """Log-probs of `labels` under softmax((hidden @ weight.T + bias) / temperature), chunked.

    `hidden` [..., H] are the last hidden states (after the final norm), `weight` [V, H] the
    output projection (`lm_head.weight`, tied or not), `labels` [...] aligned with `hidden`.
    Peak extra memory is a few [chunk_size, V] buffers instead of [..., V] logits. Positions where
    `response_mask` is false are skipped entirely (no logits are computed for padding) and get 0.
    """
    return _from_hidden(hidden, weight, bias, labels, temperature, chunk_size, response_mask, with_entropy=False)[0]


def token_log_probs_and_entropy_from_hidden(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    response_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """(log-probs, entropy) from hidden states and the output projection; see above."""
    return _from_hidden(hidden, weight, bias, labels, temperature, chunk_size, response_mask, with_entropy=True)


def _from_logits(logits, labels, temperature, chunk_size, response_mask, *, with_entropy):
    if response_mask is None:
        return _LogProbsFromLogits.apply(logits, labels, float(temperature), int(chunk_size), with_entropy)
    mask = _check_response_mask(response_mask, labels)
    safe_labels = torch.where(mask, labels, torch.zeros((), dtype=labels.dtype, device=labels.device))
    # Rows of the given logits are scored in place; selecting the masked rows would copy them.
    log_p, entropy = _LogProbsFromLogits.apply(logits, safe_labels, float(temperature), int(chunk_size), with_entropy)
    zero = torch.zeros((), dtype=log_p.dtype, device=log_p.device)
    return torch.where(mask, log_p, zero), (torch.where(mask, entropy, zero) if entropy is not None else None)


def _from_hidden(hidden, weight, bias, labels, temperature, chunk_size, response_mask, *, with_entropy):
    args = (float(temperature), int(chunk_size), with_entropy)
    if response_mask is None:
        return _LogProbsFromHidden.apply(hidden, weight, bias, labels, *args)
    mask = _check_response_mask(response_mask, labels)
    rows = mask.reshape(-1).nonzero().squeeze(-1)
    # Only the masked-in rows reach the vocabulary-sized work; the row copy is [n, H], small.
    picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows)
    log_p, entropy = _LogProbsFromHidden.apply(picked, weight, bias, labels.reshape(-1)[rows], *args)

    def scatter(values: Tensor) -> Tensor:
        full = torch.zeros(labels.numel(), dtype=values.dtype, device=values.device)
        return full.index_copy(0, rows, values).view(labels.shape)

    return scatter(log_p), (scatter(entropy) if entropy is not None else None)


def _check_response_mask(response_mask: Tensor, labels: Tensor) -> Tensor:
    if response_mask.shape != labels.shape:
        raise ValueError(f"response_mask has shape {tuple(response_mask.shape)}, expected {tuple(labels.shape)}")
    return response_mask if response_mask.dtype == torch.bool else response_mask != 0


# ----------------------------------------------------------------------------------------------
# Shared chunk math. `s` is a float32 (or wider) [n, V] scratch buffer of scaled logits that the
# functions overwrite: one reused buffer instead of fresh [n, V] temporaries, because on CPU each
# fresh multi-hundred-MB tensor costs page faults plus a full memory pass.


def _check_inputs(labels: Tensor, lead_shape: torch.Size, vocab: int, temperature: float, chunk_size: int) -> None:
    if labels.shape != lead_shape:
        raise ValueError(f"labels have shape {tuple(labels.shape)}, expected {tuple(lead_shape)}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if labels.numel():
        bad = (labels < 0) | (labels >= vocab)
        if bool(bad.any()):
            position = tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"label {int(labels[position])} at position {position} is outside the vocabulary [0, {vocab}); "
                "mask ignored positions with a valid token id (e.g. 0) before scoring them"
            )


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Softmax statistics in at least float32: bf16 log-partition values are off by ~0.1 nats.
    return torch.promote_types(dtype, torch.float32)


def _chunk_forward(s: Tensor, labels: Tensor, with_entropy: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """(lse, log p_y, H) for scaled logits `s` [n, V]; `s` is overwritten."""
    s_y = s.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    row_max = s.amax(dim=-1, keepdim=True)
    if with_entropy:
        # H = lse - sum_j p_j s_j = log S - sum_j e_j (s_j - m) / S, with e_j = exp(s_j - m), S = sum e_j
        shifted = s.sub_(row_max)
        e = torch.exp(shifted)  # the one extra [n, V] temporary of the entropy path
        total = e.sum(dim=-1)
        e_dot_shifted = (e.mul_(shifted)).sum(dim=-1)
        del e
        log_total = total.log()
        lse = row_max.squeeze(-1) + log_total
        entropy = log_total - e_dot_shifted / total
    else:
        total = s.sub_(row_max).exp_().sum(dim=-1)
        lse = row_max.squeeze(-1) + total.log()
        entropy = None
    return lse, s_y - lse, entropy


def _chunk_grad_scaled_logits(
    s: Tensor,
    labels: Tensor,
    lse: Tensor,
    entropy: Tensor | None,
    grad_log_p: Tensor | None,
    grad_entropy: Tensor | None,
) -> Tensor:
    """d loss / d s for one chunk, computed in place in `s` (the recomputed scaled logits)."""
    g_lp = grad_log_p if grad_log_p is not None else torch.zeros_like(lse)
    if grad_entropy is not None and entropy is not None:
        # d/ds_j = p_j (-g_lp - g_H (log p_j + H))   (+ g_lp at j = y, added below)
        log_p_all = s.sub_(lse.unsqueeze(-1))
        p = torch.exp(log_p_all)
        grad = log_p_all.add_(entropy.unsqueeze(-1)).mul_(-grad_entropy.unsqueeze(-1))
        grad = grad.sub_(g_lp.unsqueeze(-1)).mul_(p)
        del p
    else:
        # d/ds_j = -g_lp p_j   (+ g_lp at j = y)
        grad = s.sub_(lse.unsqueeze(-1)).exp_().mul_(-g_lp.unsqueeze(-1))
    grad.scatter_add_(-1, labels.unsqueeze(-1), g_lp.unsqueeze(-1).to(grad.dtype))
    return grad


# ----------------------------------------------------------------------------------------------


class _LogProbsFromLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, temperature: float, chunk_size: int, with_entropy: bool):
        vocab = logits.shape[-1]
        _check_inputs(labels, logits.shape[:-1], vocab, temperature, chunk_size)
        flat = logits.reshape(-1, vocab)
        flat_labels = labels.reshape(-1).long()
        cdtype = _compute_dtype(logits.dtype)
        n = flat.shape[0]
        lse = torch.empty(n, dtype=cdtype, device=logits.device)
        log_p = torch.empty(n, dtype=cdtype, device=logits.device)
        entropy = torch.empty(n, dtype=cdtype, device=logits.device) if with_entropy else None
        buffer = torch.empty((min(chunk_size, n), vocab), dtype=cdtype, device=logits.device)
        for start in range(0, n, chunk_size):
            end = min(start + chunk_size, n)
            s = _scaled_copy(flat[start:end], temperature, buffer)
            c_lse, c_lp, c_h = _chunk_forward(s, flat_labels[start:end], with_entropy)
            lse[start:end], log_p[start:end] = c_lse, c_lp
            if with_entropy:
                entropy[start:end] = c_h
        del buffer
        ctx.save_for_backward(logits, flat_labels, lse, entropy if with_entropy else None)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        shape = labels.shape
        if not with_entropy:
            return log_p.view(shape), None
        return log_p.view(shape), entropy.view(shape)

    @staticmethod
    def backward(ctx, grad_log_p: Tensor | None, grad_entropy: Tensor | None):
        logits, flat_labels, lse, entropy = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        vocab = logits.shape[-1]
        flat = logits.reshape(-1, vocab)
        n = flat.shape[0]
        g_lp = grad_log_p.reshape(-1).to(lse.dtype) if grad_log_p is not None else None
        g_h = grad_entropy.reshape(-1).to(lse.dtype) if (grad_entropy is not None and entropy is not None) else None
        grad_logits = torch.empty_like(flat)
        # Same dtype: each chunk's gradient is computed directly in its slice of grad_logits.
        buffer = (
            None if grad_logits.dtype == lse.dtype else torch.empty((min(ctx.chunk_size, n), vocab), dtype=lse.dtype, device=logits.device)
        )
        for start in range(0, n, ctx.chunk_size):
            end = min(start + ctx.chunk_size, n)
            s = _scaled_copy(flat[start:end], ctx.temperature, grad_logits[start:end] if buffer is None else buffer)
            grad = _chunk_grad_scaled_logits(
                s,
                flat_labels[start:end],
                lse[start:end],
                entropy[start:end] if g_h is not None else None,
                g_lp[start:end] if g_lp is not None else None,
                g_h[start:end] if g_h is not None else None,
            )
            if ctx.temperature != 1.0:
                grad.div_(ctx.temperature)  # ds/dz = 1 / temperature
            if buffer is not None:
                grad_logits[start:end] = grad
        return grad_logits.view_as(logits), None, None, None, None


class _LogProbsFromHidden(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        labels: Tensor,
        temperature: float,
        chunk_size: int,
        with_entropy: bool,
    ):
        if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"hidden [..., {hidden.shape[-1]}] does not match output projection weight {tuple(weight.shape)} (expected [vocab, hidden])"
            )
        if hidden.dtype != weight.dtype:
            raise TypeError(f"hidden is {hidden.dtype} but the output projection weight is {weight.dtype}")
        vocab = weight.shape[0]
        if bias is not None and bias.shape != (vocab,):
            raise ValueError(f"bias has shape {tuple(bias.shape)}, expected ({vocab},)")
        _check_inputs(labels, hidden.shape[:-1], vocab, temperature, chunk_size)
        flat = hidden.reshape(-1, hidden.shape[-1])
        flat_labels = labels.reshape(-1).long()
        cdtype = _compute_dtype(hidden.dtype)
        n = flat.shape[0]
        lse = torch.empty(n, dtype=cdtype, device=hidden.device)
        log_p = torch.empty(n, dtype=cdtype, device=hidden.device)
        entropy = torch.empty(n, dtype=cdtype, device=hidden.device) if with_entropy else None
        logits_buffer = torch.empty((min(chunk_size, n), vocab), dtype=hidden.dtype, device=hidden.device)
        for start in range(0, n, chunk_size):
            end = min(start + chunk_size, n)
            s = _chunk_logits(flat[start:end], weight, bias, temperature, logits_buffer, cdtype)
            c_lse, c_lp, c_h = _chunk_forward(s, flat_labels[start:end], with_entropy)
            lse[start:end], log_p[start:end] = c_lse, c_lp
            if with_entropy:
                entropy[start:end] = c_h
        del logits_buffer
        ctx.save_for_backward(hidden, weight, bias, flat_labels, lse, entropy if with_entropy else None)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        shape = labels.shape
        if not with_entropy:
            return log_p.view(shape), None
        return log_p.view(shape), entropy.view(shape)

    @staticmethod
    def backward(ctx, grad_log_p: Tensor | None, grad_entropy: Tensor | None):
        hidden, weight, bias, flat_labels, lse, entropy = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        if not (need_hidden or need_weight or need_bias):
            return None, None, None, None, None, None, None
        flat = hidden.reshape(-1, hidden.shape[-1])
        n, vocab = flat.shape[0], weight.shape[0]
        cdtype = lse.dtype
        g_lp = grad_log_p.reshape(-1).to(cdtype) if grad_log_p is not None else None
        g_h = grad_entropy.reshape(-1).to(cdtype) if (grad_entropy is not None and entropy is not None) else None
        grad_hidden = torch.empty_like(flat) if need_hidden else None
        # Accumulate the projection's gradient in float32 or wider even for bf16 weights.
        grad_weight = torch.zeros(weight.shape, dtype=cdtype, device=weight.device) if need_weight else None
        grad_bias = torch.zeros(vocab, dtype=cdtype, device=weight.device) if need_bias else None
        logits_buffer = torch.empty((min(ctx.chunk_size, n), vocab), dtype=hidden.dtype, device=hidden.device)
        for start in range(0, n, ctx.chunk_size):
            end = min(start + ctx.chunk_size, n)
            h = flat[start:end]
            s = _chunk_logits(h, weight, bias, ctx.temperature, logits_buffer, cdtype)  # recomputed
            grad_s = _chunk_grad_scaled_logits(
                s,
                flat_labels[start:end],
                lse[start:end],
                entropy[start:end] if g_h is not None else None,
                g_lp[start:end] if g_lp is not None else None,
                g_h[start:end] if g_h is not None else None,
            )
            if ctx.temperature != 1.0:
                grad_s.div_(ctx.temperature)  # ds/dz = 1 / temperature
            grad_z = grad_s.to(weight.dtype)
            if need_hidden:
                torch.matmul(grad_z, weight, out=grad_hidden[start:end])
            if need_weight:
                grad_weight.addmm_(grad_z.t().to(cdtype), h.to(cdtype))
            if need_bias:
                grad_bias += grad_z.sum(dim=0).to(cdtype)
        return (
            grad_hidden.view_as(hidden) if need_hidden else None,
            grad_weight.to(weight.dtype) if need_weight else None,
            grad_bias.to(bias.dtype) if need_bias else None,
            None,
            None,
            None,
            None,
        )


def _scaled_copy(chunk: Tensor, temperature: float, buffer: Tensor) -> Tensor:
    """chunk / temperature written into (the first rows of) `buffer`, in the buffer's dtype."""
    out = buffer[: chunk.shape[0]]
    out.copy_(chunk)
    if temperature != 1.0:
        out.div_(temperature)
    return out


def _chunk_logits(h: Tensor, weight: Tensor, bias: Tensor | None, temperature: float, buffer: Tensor, cdtype: torch.dtype) -> Tensor:
    """Scaled logits (h @ weight.T + bias) / temperature of one chunk, in `cdtype`."""
    z = buffer[: h.shape[0]]
    torch.matmul(h, weight.t(), out=z)
    if bias is not None:
        z += bias
    s = z if z.dtype == cdtype else z.to(cdtype)
    if temperature != 1.0:
        s.div_(temperature)  # `s` is scratch (the reused buffer or a fresh upcast copy)
    return s

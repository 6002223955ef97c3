"""Fused loss from hidden states: same value and gradient as log-probs + loss through autograd."""

import pytest
import torch

from qwen25_rl.algorithms import (
    LOSS_AGG_MODES,
    fused_loss_from_hidden,
    policy_loss,
    policy_loss_from_hidden,
    token_log_probs_and_entropy_from_hidden,
)

B, T, H, V = 5, 6, 4, 17


def _case(seed):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(V, H, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(V, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, V, (B, T), generator=g)
    old = -3 * torch.rand(B, T, generator=g, dtype=torch.float64)
    rollout = old + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    ref = old + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, generator=g) > 0.3
    mask[1] = False  # an empty response
    return hidden, weight, bias, labels, old, rollout, ref, adv, mask


def _grads(loss, *params):
    return torch.autograd.grad(loss, params)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("rows_per_chunk", [1, 2, 8])
def test_fused_policy_loss_matches_log_probs_then_policy_loss(mode, rows_per_chunk):
    hidden, weight, bias, labels, old, rollout, ref, adv, mask = _case(LOSS_AGG_MODES.index(mode))
    options = dict(
        loss_agg_mode=mode,
        clip_low=0.2,
        clip_high=0.28,
        dual_clip=3.0,
        rollout_log_probs=rollout,
        ref_log_probs=ref,
        kl_coef=0.1,
        entropy_coef=0.02,
    )
    log_p, entropy = token_log_probs_and_entropy_from_hidden(hidden, weight, labels, bias=bias, temperature=0.8, response_mask=mask)
    want = policy_loss(log_p, old, adv, mask, entropy=entropy, **options)
    got = policy_loss_from_hidden(
        hidden, weight, labels, old, adv, mask, bias=bias, temperature=0.8, rows_per_chunk=rows_per_chunk, **options
    )
    assert got.loss.item() == pytest.approx(want.loss.item(), abs=1e-12)
    for a, b in zip(_grads(got.loss, hidden, weight, bias), _grads(want.loss, hidden, weight, bias)):
        assert torch.allclose(a, b, atol=1e-12)
    assert torch.allclose(got.log_probs, log_p.detach(), atol=1e-12)
    assert torch.allclose(got.entropy, entropy.detach(), atol=1e-12)
    for name, value in want.metrics.items():
        assert got.metrics[name].item() == pytest.approx(value.item(), abs=1e-12), name


def test_fused_policy_loss_with_global_counts_matches_unfused():
    hidden, weight, bias, labels, old, _, _, adv, mask = _case(11)
    log_p, _ = token_log_probs_and_entropy_from_hidden(hidden, weight, labels)
    want = policy_loss(log_p, old, adv, mask, loss_agg_mode="seq-mean-token-mean", num_seqs=40, num_tokens=99)
    got = policy_loss_from_hidden(hidden, weight, labels, old, adv, mask, loss_agg_mode="seq-mean-token-mean", num_seqs=40, num_tokens=99)
    assert got.loss.item() == pytest.approx(want.loss.item(), abs=1e-12)
    assert got.entropy is None


@pytest.mark.parametrize("rows_per_chunk", [1, 3])
def test_on_policy_fused_loss_uses_the_current_log_probs_as_old(rows_per_chunk):
    # old_log_probs=None: ratio exactly 1, the gradient is the plain policy gradient
    # (+ KL), as with the current log-probs detached and passed as old
    hidden, weight, bias, labels, _, _, ref, adv, mask = _case(13)
    options = dict(loss_agg_mode="token-mean", clip_low=0.2, clip_high=0.28, ref_log_probs=ref, kl_coef=0.1)
    log_p, _ = token_log_probs_and_entropy_from_hidden(hidden, weight, labels, bias=bias, temperature=0.7, response_mask=mask)
    want = policy_loss(log_p, log_p.detach(), adv, mask, **options)
    got = policy_loss_from_hidden(
        hidden, weight, labels, None, adv, mask, bias=bias, temperature=0.7, rows_per_chunk=rows_per_chunk, **options
    )
    assert got.loss.item() == pytest.approx(want.loss.item(), abs=1e-12)
    for a, b in zip(_grads(got.loss, hidden, weight, bias), _grads(want.loss, hidden, weight, bias)):
        assert torch.allclose(a, b, atol=1e-12)
    assert got.metrics["clip_frac"].item() == 0.0
    assert got.metrics["ratio_max"].item() == pytest.approx(1.0, abs=1e-12)


def test_sequence_level_loss_is_exact_with_row_chunks():
    # a GSPO-style loss: per-sequence mean log-ratio, exponentiated; not additive over tokens
    hidden, weight, _, labels, old, _, _, adv, mask = _case(12)
    m = mask.double()

    def seq_loss(log_p, rows=slice(None)):
        mean_ratio = ((log_p - old[rows]) * m[rows]).sum(-1) / m[rows].sum(-1).clamp(min=1)
        return -(mean_ratio.exp() * adv[rows]).sum() / B

    log_p, _ = token_log_probs_and_entropy_from_hidden(hidden, weight, labels)
    want = seq_loss(log_p)
    got = fused_loss_from_hidden(hidden, weight, labels, lambda rows, lp, ent: seq_loss(lp, rows), rows_per_chunk=2)
    assert got.loss.item() == pytest.approx(want.item(), abs=1e-12)
    for a, b in zip(_grads(got.loss, hidden, weight), _grads(want, hidden, weight)):
        assert torch.allclose(a, b, atol=1e-12)


def test_fused_loss_passes_gradcheck():
    hidden, weight, bias, labels, old, _, _, adv, mask = _case(13)

    def f(h, w, b):
        return policy_loss_from_hidden(h, w, labels, old, adv, mask, bias=b, temperature=0.9, rows_per_chunk=2, entropy_coef=0.1).loss

    # fast mode (random directional derivatives): every full evaluation runs the policy loss per chunk
    assert torch.autograd.gradcheck(f, (hidden, weight, bias), fast_mode=True)


def test_fused_loss_under_no_grad_gives_the_value_and_log_probs():
    hidden, weight, _, labels, old, _, _, adv, mask = _case(14)
    with torch.no_grad():
        got = policy_loss_from_hidden(hidden, weight, labels, old, adv, mask)
    log_p, _ = token_log_probs_and_entropy_from_hidden(hidden, weight, labels, response_mask=mask)
    assert got.loss.grad_fn is None
    assert got.loss.item() == pytest.approx(policy_loss(log_p, old, adv, mask).loss.item(), abs=1e-12)
    assert torch.allclose(got.log_probs, log_p.detach())


def test_padding_positions_are_not_scored_and_get_no_gradient():
    hidden, weight, _, labels, old, _, _, adv, mask = _case(17)
    padded = labels.masked_fill(~mask, -100)  # padding ids outside the vocabulary are fine
    got = policy_loss_from_hidden(hidden, weight, padded, old, adv, mask, compute_entropy=True)
    grad = torch.autograd.grad(got.loss, hidden)[0]
    assert torch.equal(got.log_probs[~mask], torch.zeros(int((~mask).sum()), dtype=torch.float64))
    assert torch.equal(got.entropy[~mask], torch.zeros(int((~mask).sum()), dtype=torch.float64))
    assert torch.equal(grad[~mask], torch.zeros(int((~mask).sum()), H, dtype=torch.float64))


def test_loss_fn_returning_a_non_scalar_is_rejected():
    hidden, weight, _, labels, *_ = _case(15)
    with pytest.raises(ValueError, match="scalar"):
        fused_loss_from_hidden(hidden, weight, labels, lambda rows, lp, ent: lp)


def test_passing_entropy_to_the_fused_policy_loss_is_rejected():
    hidden, weight, _, labels, old, _, _, adv, mask = _case(16)
    with pytest.raises(ValueError, match="compute_entropy"):
        policy_loss_from_hidden(hidden, weight, labels, old, adv, mask, entropy=torch.zeros(B, T))


def test_bf16_inputs_give_the_float32_loss_and_gradients_to_bf16_precision():
    """bf16 hidden states and head (bf16 training): logits come out of the matmul in bf16 (as in
    Liger's fused losses), the softmax statistics are float32 and the head's gradient
    accumulates in float32 over chunks: the float32 computation from bf16-rounded logits, to
    bf16 rounding of the per-chunk gradient products."""
    g = torch.Generator().manual_seed(3)
    b, t, h, v = 4, 16, 32, 256
    hidden = torch.randn(b, t, h, generator=g).to(torch.bfloat16)
    weight = (torch.randn(v, h, generator=g) / h**0.5).to(torch.bfloat16)
    labels = torch.randint(0, v, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    adv = torch.randn(b, generator=g)
    old = -5 + 0.2 * torch.randn(b, t, generator=g)
    h16, w16 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    got = policy_loss_from_hidden(h16, w16, labels, old, adv, mask, rows_per_chunk=1)
    g_h16, g_w16 = _grads(got.loss, h16, w16)
    assert g_h16.dtype == g_w16.dtype == torch.bfloat16
    h32, w32 = hidden.float().requires_grad_(), weight.float().requires_grad_()
    logits = h32 @ w32.T
    logits = logits + (logits.detach().bfloat16().float() - logits.detach())  # bf16 values, float32 gradient
    log_p = torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    want = policy_loss(log_p, old, adv, mask)
    g_h32, g_w32 = _grads(want.loss, h32, w32)
    assert got.loss.item() == pytest.approx(want.loss.item(), rel=1e-5)
    for got_g, want_g in ((g_h16, g_h32), (g_w16, g_w32)):
        assert (got_g.float() - want_g).abs().max() <= 1e-2 * want_g.abs().max()

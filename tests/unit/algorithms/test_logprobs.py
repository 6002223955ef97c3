"""Chunked log-probs / entropy: hand-computed values, agreement with plain autograd, memory shape."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen25_rl.algorithms import (
    entropy_from_logits,
    token_log_probs,
    token_log_probs_and_entropy,
    token_log_probs_and_entropy_from_hidden,
    token_log_probs_from_hidden,
)


def _reference(logits, labels, temperature=1.0):
    log_p = torch.log_softmax(logits / temperature, dim=-1)
    return log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1), -(log_p.exp() * log_p).sum(-1)


def test_log_prob_and_entropy_of_a_known_distribution():
    # softmax(log [1, 2, 1]) = [1/4, 1/2, 1/4]
    logits = torch.log(torch.tensor([[1.0, 2.0, 1.0]]))
    log_p, entropy = token_log_probs_and_entropy(logits, torch.tensor([1]))
    assert log_p.item() == pytest.approx(math.log(0.5))
    assert entropy.item() == pytest.approx(1.5 * math.log(2))


def test_temperature_divides_the_logits_before_the_softmax():
    # [0, ln 4] / 2 = [0, ln 2] -> p = [1/3, 2/3]
    logits = torch.tensor([[0.0, math.log(4.0)]])
    log_p = token_log_probs(logits, torch.tensor([1]), temperature=2.0)
    assert log_p.item() == pytest.approx(math.log(2 / 3))


def test_entropy_of_uniform_logits_is_log_vocab():
    assert entropy_from_logits(torch.zeros(3, 5, 7)).allclose(torch.full((3, 5), math.log(7)))


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 64])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logits_path_matches_autograd_in_value_and_gradient(chunk_size, temperature):
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 11, (3, 5))
    w_lp, w_h = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    ref_lp, ref_h = _reference(logits, labels, temperature)
    ref_grad = torch.autograd.grad((ref_lp * w_lp).sum() + (ref_h * w_h).sum(), logits)[0]
    lp, h = token_log_probs_and_entropy(logits, labels, temperature=temperature, chunk_size=chunk_size)
    grad = torch.autograd.grad((lp * w_lp).sum() + (h * w_h).sum(), logits)[0]
    assert torch.allclose(lp, ref_lp, atol=1e-12) and torch.allclose(h, ref_h, atol=1e-12)
    assert torch.allclose(grad, ref_grad, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_hidden_path_matches_materialised_lm_head_in_value_and_gradient(chunk_size):
    torch.manual_seed(1)
    hidden = torch.randn(2, 7, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(13, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(13, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 13, (2, 7))
    w_lp, w_h = torch.randn(2, 7, dtype=torch.float64), torch.randn(2, 7, dtype=torch.float64)
    ref_lp, ref_h = _reference(hidden @ weight.T + bias, labels, 0.8)
    ref_grads = torch.autograd.grad((ref_lp * w_lp).sum() + (ref_h * w_h).sum(), (hidden, weight, bias))
    lp, h = token_log_probs_and_entropy_from_hidden(hidden, weight, labels, bias=bias, temperature=0.8, chunk_size=chunk_size)
    grads = torch.autograd.grad((lp * w_lp).sum() + (h * w_h).sum(), (hidden, weight, bias))
    assert torch.allclose(lp, ref_lp, atol=1e-12) and torch.allclose(h, ref_h, atol=1e-12)
    for got, want in zip(grads, ref_grads):
        assert torch.allclose(got, want, atol=1e-12)


def test_hidden_path_passes_gradcheck():
    torch.manual_seed(2)
    hidden = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 6, (2, 3))
    assert torch.autograd.gradcheck(
        lambda h, w: token_log_probs_and_entropy_from_hidden(h, w, labels, temperature=0.9, chunk_size=4), (hidden, weight)
    )


def test_hidden_path_without_entropy_returns_log_probs_only():
    torch.manual_seed(3)
    hidden, weight = torch.randn(4, 3), torch.randn(9, 3)
    labels = torch.randint(0, 9, (4,))
    expected = _reference(hidden @ weight.T, labels)[0]
    assert torch.allclose(token_log_probs_from_hidden(hidden, weight, labels, chunk_size=3), expected, atol=1e-6)


def test_hidden_path_saves_no_vocab_sized_tensor_for_backward():
    # B*T = 64 tokens, V = 1000: full logits would be 64,000 numbers; chunks are 8 x 1000.
    hidden = torch.randn(4, 16, 8, requires_grad=True)
    weight = torch.randn(1000, 8, requires_grad=True)
    labels = torch.randint(0, 1000, (4, 16))
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        token_log_probs_and_entropy_from_hidden(hidden, weight, labels, chunk_size=8)
    # the inputs themselves (hidden 512, weight 8000) plus per-token scalars; nothing of 64 x 1000
    assert max(saved) == weight.numel()


def test_logits_path_saves_only_its_input_and_per_token_scalars():
    logits = torch.randn(4, 16, 1000, requires_grad=True)
    labels = torch.randint(0, 1000, (4, 16))
    saved = []

    def pack(t):
        saved.append((t.numel(), t.data_ptr() == logits.data_ptr()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        token_log_probs_and_entropy(logits, labels, chunk_size=8)
    big = [is_input for numel, is_input in saved if numel >= logits.numel()]
    assert big == [True]  # the only full-size tensor kept is the given logits, not a copy


def test_bfloat16_logits_are_scored_in_float32():
    torch.manual_seed(4)
    logits = torch.randn(2, 3, 50).to(torch.bfloat16)
    labels = torch.randint(0, 50, (2, 3))
    log_p = token_log_probs(logits, labels)
    assert log_p.dtype == torch.float32
    assert torch.allclose(log_p, _reference(logits.float(), labels)[0], atol=1e-6)


def test_label_outside_the_vocabulary_is_rejected_with_its_position():
    labels = torch.tensor([[1, 2], [-100, 0]])
    with pytest.raises(ValueError, match=r"label -100 at position \(1, 0\)"):
        token_log_probs(torch.randn(2, 2, 5), labels)


def test_labels_of_the_wrong_shape_are_rejected():
    with pytest.raises(ValueError, match="labels have shape"):
        token_log_probs(torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))


def test_hidden_and_weight_of_different_width_are_rejected():
    with pytest.raises(ValueError, match="does not match output projection"):
        token_log_probs_from_hidden(torch.randn(2, 4), torch.randn(10, 5), torch.zeros(2, dtype=torch.long))


def test_non_positive_temperature_is_rejected():
    with pytest.raises(ValueError, match="temperature must be positive"):
        token_log_probs(torch.randn(2, 5), torch.zeros(2, dtype=torch.long), temperature=0.0)


def test_masked_positions_score_zero_and_may_hold_padding_labels():
    torch.manual_seed(5)
    logits = torch.randn(2, 4, 9, dtype=torch.float64)
    labels = torch.randint(0, 9, (2, 4))
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    padded = labels.masked_fill(~mask, -100)
    log_p, entropy = token_log_probs_and_entropy(logits, padded, response_mask=mask)
    want_lp, want_h = _reference(logits, labels)
    assert torch.equal(log_p[~mask], torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(log_p[mask], want_lp[mask]) and torch.allclose(entropy[mask], want_h[mask])


def test_hidden_path_skips_masked_positions_in_value_gradient_and_work():
    torch.manual_seed(6)
    hidden = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 11, (2, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    saved = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        log_p, entropy = token_log_probs_and_entropy_from_hidden(hidden, weight, labels.masked_fill(~mask, -100), response_mask=mask)
    assert (4, 4) in saved and (10, 4) not in saved  # only the 4 response rows were scored
    want_lp, want_h = _reference(hidden @ weight.T, labels)
    want_lp, want_h = want_lp * mask, want_h * mask
    assert torch.allclose(log_p, want_lp) and torch.allclose(entropy, want_h)
    grads = torch.autograd.grad((log_p + entropy).sum(), (hidden, weight))
    want = torch.autograd.grad((want_lp + want_h).sum(), (hidden, weight))
    assert torch.allclose(grads[0], want[0]) and torch.allclose(grads[1], want[1])
    assert torch.equal(grads[0][~mask], torch.zeros(6, 4, dtype=torch.float64))


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 3),
    t=st.integers(1, 6),
    v=st.integers(2, 40),
    chunk=st.integers(1, 8),
    temperature=st.sampled_from([0.5, 1.0, 1.7]),
    seed=st.integers(0, 2**16),
)
def test_property_log_probs_are_valid_and_independent_of_the_chunking(b, t, v, chunk, temperature, seed):
    g = torch.Generator().manual_seed(seed)
    logits = 5 * torch.randn(b, t, v, generator=g, dtype=torch.float64)
    labels = torch.randint(0, v, (b, t), generator=g)
    log_p, entropy = token_log_probs_and_entropy(logits, labels, temperature=temperature, chunk_size=chunk)
    whole_lp, whole_h = token_log_probs_and_entropy(logits, labels, temperature=temperature, chunk_size=b * t)
    assert log_p.shape == entropy.shape == labels.shape
    assert (log_p <= 1e-12).all()
    assert (entropy >= -1e-12).all() and (entropy <= math.log(v) + 1e-9).all()
    assert torch.allclose(log_p, whole_lp, atol=1e-12) and torch.allclose(entropy, whole_h, atol=1e-12)

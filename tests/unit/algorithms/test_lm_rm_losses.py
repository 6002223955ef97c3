"""Language-model loss (logits and fused hidden-state variants) and the Bradley-Terry RM loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from qwen25_rl.algorithms import bradley_terry_loss, lm_loss, lm_loss_from_hidden


def test_lm_loss_of_uniform_logits_is_log_vocab_per_scored_token():
    logits = torch.zeros(1, 3, 4)
    labels = torch.tensor([[1, -100, 2]])
    assert lm_loss(logits, labels).item() == pytest.approx(math.log(4))


def test_lm_loss_divides_by_the_given_global_token_count():
    logits = torch.zeros(1, 3, 4)
    labels = torch.tensor([[1, -100, 2]])
    # two scored tokens of ln 4 each, over a step-wide count of 8 tokens
    assert lm_loss(logits, labels, num_tokens=8).item() == pytest.approx(2 * math.log(4) / 8)


def test_lm_loss_matches_cross_entropy_with_ignore_index():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 17, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 17, (3, 6))
    labels[0, :4] = -100
    expected = F.cross_entropy(logits.reshape(-1, 17), labels.reshape(-1), ignore_index=-100)
    got = lm_loss(logits, labels, chunk_size=5)
    assert got.item() == pytest.approx(expected.item(), abs=1e-12)
    g_want = torch.autograd.grad(expected, logits)[0]
    g_got = torch.autograd.grad(got, logits)[0]
    assert torch.allclose(g_got, g_want, atol=1e-12)


def test_lm_loss_of_an_all_ignored_batch_is_zero_not_nan():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    loss = lm_loss(logits, torch.full((2, 3), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_lm_loss_rejects_a_target_outside_the_vocabulary():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        lm_loss(torch.randn(1, 2, 5), torch.tensor([[1, 7]]))


def _hidden_case(seed=1):
    torch.manual_seed(seed)
    hidden = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(9, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 9, (2, 5))
    labels[1, :3] = -100
    return hidden, weight, bias, labels


@pytest.mark.parametrize("chunk_size", [1, 3, 100])
def test_fused_hidden_lm_loss_matches_materialised_logits(chunk_size):
    hidden, weight, bias, labels = _hidden_case()
    want = lm_loss(hidden @ weight.T + bias, labels, num_tokens=11)
    got = lm_loss_from_hidden(hidden, weight, labels, bias=bias, num_tokens=11, chunk_size=chunk_size)
    assert got.item() == pytest.approx(want.item(), abs=1e-12)
    for g_got, g_want in zip(torch.autograd.grad(got, (hidden, weight, bias)), torch.autograd.grad(want, (hidden, weight, bias))):
        assert torch.allclose(g_got, g_want, atol=1e-12)


def test_fused_hidden_lm_loss_scales_its_gradient_by_the_upstream_gradient():
    hidden, weight, bias, labels = _hidden_case(2)
    g1 = torch.autograd.grad(lm_loss_from_hidden(hidden, weight, labels, bias=bias), weight)[0]
    g3 = torch.autograd.grad(3.0 * lm_loss_from_hidden(hidden, weight, labels, bias=bias), weight)[0]
    assert torch.allclose(g3, 3 * g1, atol=1e-12)


def test_fused_hidden_lm_loss_gives_ignored_positions_zero_gradient():
    hidden, weight, bias, labels = _hidden_case(3)
    grad = torch.autograd.grad(lm_loss_from_hidden(hidden, weight, labels, bias=bias), hidden)[0]
    assert torch.equal(grad[1, :3], torch.zeros_like(grad[1, :3]))
    assert grad[1, 3:].abs().sum() > 0


def test_fused_hidden_lm_loss_under_no_grad_returns_the_same_value():
    hidden, weight, bias, labels = _hidden_case(4)
    with torch.no_grad():
        value = lm_loss_from_hidden(hidden, weight, labels, bias=bias)
    assert value.item() == pytest.approx(lm_loss_from_hidden(hidden, weight, labels, bias=bias).item(), abs=1e-12)
    assert value.grad_fn is None


def test_fused_hidden_lm_loss_passes_gradcheck():
    hidden, weight, bias, labels = _hidden_case(5)
    assert torch.autograd.gradcheck(lambda h, w, b: lm_loss_from_hidden(h, w, labels, bias=b, chunk_size=3), (hidden, weight, bias))


def test_bradley_terry_loss_is_minus_log_sigmoid_of_the_reward_gap():
    out = bradley_terry_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]))
    # (-log sigmoid(1) - log sigmoid(0)) / 2
    assert out.loss.item() == pytest.approx((math.log1p(math.exp(-1)) + math.log(2)) / 2)
    assert out.metrics["accuracy"].item() == 0.5
    assert out.metrics["margin"].item() == pytest.approx(0.5)


def test_bradley_terry_margin_is_subtracted_from_the_reward_gap():
    out = bradley_terry_loss(torch.tensor([3.0]), torch.tensor([1.0]), margin=torch.tensor([2.0]))
    assert out.loss.item() == pytest.approx(math.log(2))


def test_bradley_terry_divides_by_the_global_pair_count():
    out = bradley_terry_loss(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.0]), num_pairs=8)
    assert out.loss.item() == pytest.approx(2 * math.log(2) / 8)


def test_bradley_terry_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="must both be"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(2))

"""DPO family: sigmoid, conservative (label-smoothed), IPO, hinge, length normalisation, RPO, metrics."""

import math

import pytest
import torch

from qwen25_rl.algorithms import DPO_LOSSES, UnknownNameError, dpo_loss

# policy chosen -1, rejected -3; reference both -2  ->  h = (-1 - -3) - (-2 - -2) = 2
PAIR = (torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]))


def test_sigmoid_loss_is_minus_log_sigmoid_of_beta_h():
    assert dpo_loss(*PAIR, beta=0.5).loss.item() == pytest.approx(math.log1p(math.exp(-1.0)))


def test_label_smoothing_mixes_in_the_flipped_preference():
    got = dpo_loss(*PAIR, beta=0.5, label_smoothing=0.1).loss.item()
    assert got == pytest.approx(0.9 * math.log1p(math.exp(-1.0)) + 0.1 * math.log1p(math.exp(1.0)))


def test_ipo_loss_is_the_squared_distance_to_one_over_two_beta():
    assert dpo_loss(*PAIR, beta=0.5, loss_type="ipo").loss.item() == pytest.approx((2 - 1) ** 2)


def test_hinge_loss_is_one_minus_beta_h_clipped_at_zero():
    assert dpo_loss(*PAIR, beta=0.25, loss_type="hinge").loss.item() == pytest.approx(0.5)
    assert dpo_loss(*PAIR, beta=0.5, loss_type="hinge").loss.item() == 0.0


def test_length_normalisation_divides_each_sum_by_its_length():
    out = dpo_loss(
        *PAIR, beta=1.0, loss_type="ipo", length_normalize=True, chosen_lengths=torch.tensor([2]), rejected_lengths=torch.tensor([4])
    )
    # (-1/2 + 3/4) - (-2/2 + 2/4) = 0.75; (0.75 - 0.5)^2
    assert out.loss.item() == pytest.approx(0.25**2)


def test_rpo_adds_alpha_times_the_token_mean_nll_of_chosen():
    out = dpo_loss(*PAIR, beta=0.5, rpo_alpha=2.0, chosen_lengths=torch.tensor([2]))
    assert out.metrics["nll"].item() == pytest.approx(0.5)
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-1.0)) + 2.0 * 0.5)


def test_metrics_are_implicit_rewards_accuracy_margin_and_log_probs():
    policy_chosen = torch.tensor([-1.0, -4.0])
    policy_rejected = torch.tensor([-3.0, -1.0])
    ref = torch.tensor([-2.0, -2.0])
    m = dpo_loss(policy_chosen, policy_rejected, ref, ref, beta=0.5).metrics
    # chosen rewards .5 * [1, -2], rejected .5 * [-1, 1]
    assert m["rewards/chosen"].item() == pytest.approx(-0.25)
    assert m["rewards/rejected"].item() == pytest.approx(0.0)
    assert m["rewards/accuracy"].item() == pytest.approx(0.5)
    assert m["rewards/margin"].item() == pytest.approx(-0.25)
    assert m["logps/chosen"].item() == pytest.approx(-2.5)
    assert m["logps/rejected"].item() == pytest.approx(-2.0)


def test_loss_divides_by_the_global_pair_count():
    assert dpo_loss(*PAIR, beta=0.5, num_pairs=4).loss.item() == pytest.approx(math.log1p(math.exp(-1.0)) / 4)


def test_gradient_flows_to_policy_log_probs_only():
    pc, pr = torch.tensor([-1.0], requires_grad=True), torch.tensor([-3.0], requires_grad=True)
    rc, rr = torch.tensor([-2.0], requires_grad=True), torch.tensor([-2.0], requires_grad=True)
    dpo_loss(pc, pr, rc, rr, beta=0.5).loss.backward()
    # d/dh -log sigmoid(beta h) = -beta sigmoid(-beta h)
    assert pc.grad.item() == pytest.approx(-0.5 / (1 + math.e))
    assert pr.grad.item() == pytest.approx(0.5 / (1 + math.e))
    assert rc.grad is None and rr.grad is None


def test_label_smoothing_with_ipo_is_rejected():
    with pytest.raises(ValueError, match="sigmoid loss only"):
        dpo_loss(*PAIR, loss_type="ipo", label_smoothing=0.1)


def test_length_normalisation_without_lengths_is_rejected():
    with pytest.raises(ValueError, match="chosen_lengths and rejected_lengths"):
        dpo_loss(*PAIR, length_normalize=True)


def test_unknown_loss_type_is_rejected_with_the_known_names():
    with pytest.raises(UnknownNameError, match="hinge, ipo, sigmoid"):
        dpo_loss(*PAIR, loss_type="kto")
    assert set(DPO_LOSSES) == {"sigmoid", "ipo", "hinge"}


def test_pairs_of_different_counts_are_rejected():
    with pytest.raises(ValueError, match="policy_rejected_logps must be"):
        dpo_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2))

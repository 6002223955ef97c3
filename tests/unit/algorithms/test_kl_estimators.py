"""KL estimators k1/k2/k3, clamping, and the KL-as-reward penalty."""

import math

import pytest
import torch

from qwen25_rl.algorithms import KL_ESTIMATORS, UnknownNameError, kl_divergence, kl_penalty_token_rewards

# pi(y) = 1/2, pi_ref(y) = 1/4: log-ratio log pi - log pi_ref = ln 2
LP = torch.tensor([[math.log(0.5)]])
REF = torch.tensor([[math.log(0.25)]])


def test_k1_is_the_log_ratio():
    assert kl_divergence(LP, REF, "k1").item() == pytest.approx(math.log(2))


def test_k2_is_half_the_squared_log_ratio():
    assert kl_divergence(LP, REF, "k2").item() == pytest.approx(math.log(2) ** 2 / 2)


def test_k3_is_ratio_minus_log_ratio_minus_one():
    # x = ln(1/4) - ln(1/2) = -ln 2: exp(x) - x - 1 = 1/2 + ln 2 - 1
    assert kl_divergence(LP, REF, "k3").item() == pytest.approx(0.5 + math.log(2) - 1)


def test_k3_estimates_the_true_kl_on_average():
    torch.manual_seed(0)
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.5, 0.3])
    samples = torch.multinomial(p, 200_000, replacement=True)
    estimate = kl_divergence(p.log()[samples], q.log()[samples], "k3").mean().item()
    assert estimate == pytest.approx((p * (p / q).log()).sum().item(), abs=0.01)


@pytest.mark.parametrize("name", ["k1", "k2", "k3"])
def test_values_are_clamped_to_the_bound(name):
    far = kl_divergence(torch.tensor([0.0]), torch.tensor([-50.0]), name, clamp=10.0)
    assert far.item() == 10.0


def test_k3_gradient_stays_finite_when_the_policy_moved_far_below_the_reference():
    log_probs = torch.tensor([-200.0], requires_grad=True)
    kl_divergence(log_probs, torch.tensor([0.0]), "k3", clamp=None).sum().backward()
    assert torch.isfinite(log_probs.grad).all()


def test_unclamped_k1_can_be_negative():
    assert kl_divergence(REF, LP, "k1", clamp=None).item() == pytest.approx(-math.log(2))


def test_unknown_estimator_is_rejected_with_the_known_names():
    with pytest.raises(UnknownNameError, match="k1, k2, k3"):
        kl_divergence(LP, REF, "k4")
    assert set(KL_ESTIMATORS) >= {"k1", "k2", "k3"}


def test_penalty_rewards_are_minus_coef_times_kl_on_response_tokens():
    kl = torch.tensor([[0.5, 1.0, 2.0]])
    rewards = kl_penalty_token_rewards(kl, torch.tensor([[1, 1, 0]]), kl_coef=0.1)
    assert rewards.tolist() == [pytest.approx([-0.05, -0.1, 0.0])]

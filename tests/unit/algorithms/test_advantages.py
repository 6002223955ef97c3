"""Advantage estimators: hand-computed values, group handling, validation, and hypothesis properties."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen25_rl.algorithms import (
    ADVANTAGE_ESTIMATORS,
    UnknownNameError,
    compute_advantages,
    register_advantage_estimator,
)

FULL = torch.ones(4, 2, dtype=torch.bool)


def test_grpo_divides_the_centred_reward_by_the_unbiased_group_std():
    # group a: [1, 2, 3] -> mean 2, std 1 -> [-1, 0, 1]; group b: [0, 1] -> mean .5, std sqrt(.5)
    rewards = torch.tensor([1.0, 2.0, 3.0, 0.0, 1.0])
    adv = compute_advantages("grpo", rewards, [0, 0, 0, 1, 1], torch.ones(5, 1), eps=0.0)
    expected = [-1.0, 0.0, 1.0, -0.5 / math.sqrt(0.5), 0.5 / math.sqrt(0.5)]
    assert adv[:, 0].tolist() == pytest.approx(expected)


def test_grpo_epsilon_is_added_to_the_std():
    adv = compute_advantages("grpo", torch.tensor([1.0, 3.0]), [0, 0], torch.ones(2, 1), eps=0.5)
    # mean 2, std sqrt(2): (1 - 2) / (sqrt 2 + .5)
    assert adv[0, 0].item() == pytest.approx(-1 / (math.sqrt(2) + 0.5))


def test_grpo_without_std_scaling_is_dr_grpo():
    rewards = torch.tensor([1.0, 2.0, 6.0, 0.0])
    no_std = compute_advantages("grpo", rewards, [0, 0, 0, 1], FULL, scale_by_std=False)
    dr = compute_advantages("dr_grpo", rewards, [0, 0, 0, 1], FULL)
    assert torch.equal(no_std, dr)
    assert dr[:, 0].tolist() == pytest.approx([-2.0, -1.0, 3.0, 0.0])


def test_rloo_baseline_is_the_mean_of_the_other_responses():
    # [1, 2, 3]: baselines (2+3)/2, (1+3)/2, (1+2)/2
    adv = compute_advantages("rloo", torch.tensor([1.0, 2.0, 3.0]), ["p", "p", "p"], torch.ones(3, 1))
    assert adv[:, 0].tolist() == pytest.approx([-1.5, 0.0, 1.5])


def test_reinforce_pp_baseline_whitens_group_centred_rewards_over_the_batch():
    # centred [.5, -.5] on 2 tokens each -> tokens [.5, .5, -.5, -.5]: mean 0, std .5
    adv = compute_advantages("reinforce_pp_baseline", torch.tensor([1.0, 0.0]), [7, 7], torch.ones(2, 2))
    assert adv.tolist() == [pytest.approx([1.0, 1.0]), pytest.approx([-1.0, -1.0])]


def test_reinforce_pp_baseline_adds_the_return_to_go_of_token_rewards():
    token_rewards = torch.tensor([[-0.1, -0.2], [0.0, -0.3]])
    adv = compute_advantages("reinforce_pp_baseline", torch.tensor([1.0, 0.0]), [0, 0], torch.ones(2, 2), token_rewards=token_rewards)
    returns = [0.5 - 0.1 - 0.2, 0.5 - 0.2, -0.5 + 0.0 - 0.3, -0.5 - 0.3]
    mean = sum(returns) / 4
    std = math.sqrt(sum((g - mean) ** 2 for g in returns) / 4)
    assert adv.flatten().tolist() == pytest.approx([(g - mean) / std for g in returns], abs=1e-6)


def test_reinforce_pp_without_baseline_whitens_raw_rewards():
    adv = compute_advantages("reinforce_pp", torch.tensor([3.0, 1.0]), [0, 1], torch.ones(2, 1))
    assert adv[:, 0].tolist() == pytest.approx([1.0, -1.0])


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"])
def test_group_ids_need_not_be_contiguous(name):
    rewards = torch.tensor([1.0, 5.0, 2.0, 0.0, 3.0, 9.0])
    interleaved = compute_advantages(name, rewards, ["a", "b", "a", "b", "a", "b"], torch.ones(6, 1))
    order = [0, 2, 4, 1, 3, 5]
    contiguous = compute_advantages(name, rewards[order], [0, 0, 0, 1, 1, 1], torch.ones(6, 1))
    assert torch.allclose(interleaved[order], contiguous)


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
def test_a_group_of_one_response_gets_zero_advantage(name):
    adv = compute_advantages(name, torch.tensor([1.0, 0.0, 4.0]), [0, 0, 1], torch.ones(3, 1))
    assert adv[2, 0].item() == 0.0


@pytest.mark.parametrize("name", sorted(ADVANTAGE_ESTIMATORS))
def test_advantages_are_zero_outside_the_response_mask(name):
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]])
    adv = compute_advantages(name, torch.tensor([1.0, 0.0, 2.0, 5.0]), [0, 0, 1, 1], mask)
    assert torch.equal(adv[mask == 0], torch.zeros(int((mask == 0).sum())))


def test_a_non_finite_reward_is_rejected_naming_the_response():
    with pytest.raises(ValueError, match=r"responses \[1\]"):
        compute_advantages("grpo", torch.tensor([1.0, float("nan")]), [0, 0], torch.ones(2, 1))


def test_group_ids_of_another_length_are_rejected():
    with pytest.raises(ValueError, match="3 group ids for 2 rewards"):
        compute_advantages("grpo", torch.tensor([1.0, 0.0]), [0, 0, 1], torch.ones(2, 1))


def test_an_unknown_estimator_is_rejected_with_the_known_names():
    with pytest.raises(UnknownNameError, match="known: .*grpo.*rloo"):
        compute_advantages("gpro", torch.tensor([1.0]), [0], torch.ones(1, 1))


def test_a_registered_estimator_is_reachable_by_name():
    @register_advantage_estimator("test_constant_one")
    def constant_one(rewards, group_ids, response_mask):
        return response_mask.float()

    try:
        adv = compute_advantages("test_constant_one", torch.tensor([0.0]), [0], torch.ones(1, 2))
        assert adv.tolist() == [[1.0, 1.0]]
    finally:
        ADVANTAGE_ESTIMATORS._entries.pop("test_constant_one")


# ---------------------------------------------------------------------------------------------
# Properties


@st.composite
def rollout_batches(draw, equal_within_group=False):
    n = draw(st.integers(1, 12))
    t = draw(st.integers(1, 5))
    groups = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    reward = st.floats(-100, 100, allow_nan=False, width=32)
    if equal_within_group:
        per_group = draw(st.lists(reward, min_size=4, max_size=4))
        rewards = [per_group[g] for g in groups]
    else:
        rewards = draw(st.lists(reward, min_size=n, max_size=n))
    # masks may leave whole responses empty
    mask = draw(st.lists(st.lists(st.booleans(), min_size=t, max_size=t), min_size=n, max_size=n))
    return torch.tensor(rewards), groups, torch.tensor(mask)


@settings(max_examples=60, deadline=None)
@given(batch=rollout_batches(), name=st.sampled_from(sorted(ADVANTAGE_ESTIMATORS)))
def test_property_advantages_are_finite_token_shaped_and_masked(batch, name):
    rewards, groups, mask = batch
    adv = compute_advantages(name, rewards, groups, mask)
    assert adv.shape == mask.shape
    assert torch.isfinite(adv).all()
    assert (adv[~mask] == 0).all()


@settings(max_examples=60, deadline=None)
@given(
    batch=rollout_batches(equal_within_group=True),
    name=st.sampled_from(["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"]),
)
def test_property_all_equal_rewards_in_a_group_give_zero_advantage(batch, name):
    rewards, groups, mask = batch
    adv = compute_advantages(name, rewards, groups, mask)
    assert torch.equal(adv, torch.zeros_like(adv))


@settings(max_examples=40, deadline=None)
@given(batch=rollout_batches(), name=st.sampled_from(["grpo", "dr_grpo", "rloo"]), seed=st.integers(0, 2**16))
def test_property_group_estimators_commute_with_shuffling_the_batch(batch, name, seed):
    rewards, groups, mask = batch
    perm = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed))
    shuffled = compute_advantages(name, rewards[perm], [groups[i] for i in perm], mask[perm])
    assert torch.allclose(shuffled, compute_advantages(name, rewards, groups, mask)[perm], atol=1e-5)

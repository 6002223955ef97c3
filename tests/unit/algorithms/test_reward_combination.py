"""Reward components combined into one reward per response: the weighted sum, and the GDPO
group-normalised sum, against hand-computed numbers."""

import math

import pytest
import torch

from qwen25_rl.algorithms import combine_rewards
from qwen25_rl.algorithms.registry import UnknownNameError

NAN = float("nan")


def test_weighted_sum_counts_missing_components_as_zero():
    values = torch.tensor([[1.0, 2.0], [0.0, NAN], [1.0, -4.0]])
    got = combine_rewards(values, torch.tensor([1.0, 0.5]), ["a", "a", "b"], "sum")
    assert got.tolist() == [2.0, 0.0, -1.0]


def test_group_normalized_normalises_each_component_in_its_group_before_weighting():
    # group a: component 0 = [1, 0, 1] (mean 2/3, unbiased std sqrt(1/3)); component 1 = [10, 30, 20]
    # (mean 20, std 10). group b: one response: every component contributes 0.
    values = torch.tensor([[1.0, 10.0], [0.0, 30.0], [1.0, 20.0], [5.0, 7.0]])
    got = combine_rewards(values, torch.tensor([1.0, 0.5]), ["a", "a", "a", "b"], "group_normalized", eps=0.0)
    s0 = math.sqrt(1 / 3)
    want = [(1 - 2 / 3) / s0 + 0.5 * (-1.0), (0 - 2 / 3) / s0 + 0.5 * 1.0, (1 - 2 / 3) / s0 + 0.0, 0.0]
    assert got.tolist() == pytest.approx(want, abs=1e-6)


def test_a_large_scale_component_does_not_drown_a_small_one_once_normalised():
    """A verifier (0/1) and a reward model with 100x the spread: with the plain sum the ranking
    follows the RM; normalised, both count by their weights."""
    verifier = torch.tensor([1.0, 1.0, 0.0, 0.0])
    rm = torch.tensor([0.0, -100.0, 100.0, 50.0])
    values = torch.stack([verifier, rm], dim=1)
    plain = combine_rewards(values, torch.ones(2), [0] * 4, "sum")
    gdpo = combine_rewards(values, torch.ones(2), [0] * 4, "group_normalized")
    assert int(plain.argmax()) == 2  # a wrong answer the RM likes wins the plain sum
    assert int(gdpo.argmax()) == 0  # right and liked best


def test_missing_components_are_left_out_of_the_group_statistics():
    values = torch.tensor([[1.0], [NAN], [3.0]])
    got = combine_rewards(values, torch.ones(1), [0, 0, 0], "group_normalized", eps=0.0)
    s = math.sqrt(2.0)  # unbiased std of [1, 3]
    assert got.tolist() == pytest.approx([-1 / s, 0.0, 1 / s])


def test_a_component_equal_across_its_group_contributes_zero():
    values = torch.tensor([[0.7, 1.0], [0.7, 0.0]])
    got = combine_rewards(values, torch.tensor([5.0, 1.0]), ["g", "g"], "group_normalized", eps=0.0)
    assert got.tolist() == pytest.approx([0.5 / math.sqrt(0.5), -0.5 / math.sqrt(0.5)])  # only component 1, weight 1


def test_shapes_and_names_are_checked():
    with pytest.raises(ValueError, match="values must be"):
        combine_rewards(torch.zeros(3), torch.ones(1), [0, 0, 0])
    with pytest.raises(ValueError, match="2 group ids for 3"):
        combine_rewards(torch.zeros(3, 1), torch.ones(1), [0, 0])
    with pytest.raises(UnknownNameError, match="gdpo"):
        combine_rewards(torch.zeros(3, 1), torch.ones(1), [0, 0, 0], "gdpo")

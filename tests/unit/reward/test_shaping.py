"""format and length (DAPO overlong) shaping: formulas against hand values and TRL's own."""

from __future__ import annotations

import time

import pytest
from bounds import SLACK_S

from qwen25_rl.config import ConfigError
from qwen25_rl.reward.config import RewardConfig
from qwen25_rl.reward.scorer import RewardScorer
from qwen25_rl.reward.shaping import find_boxed, has_boxed, has_think_format, overlong_penalty
from qwen25_rl.reward.types import RewardSample


def score_one(functions: list[dict], **sample) -> tuple:
    cfg = RewardConfig.model_validate({"functions": functions})
    with RewardScorer(cfg) as scorer:
        r = scorer.score([RewardSample(**sample)])[0]
    return r.reward, r.status, r.error


# ---------------------------------------------------------------------------------------------
# overlong penalty


@pytest.mark.parametrize(
    "length,expected",
    [(0, 0.0), (80, 0.0), (81, -0.05), (90, -0.5), (99, -0.95), (100, -1.0), (101, -1.0), (10_000, -1.0)],
)
def test_overlong_penalty_matches_hand_values(length, expected):
    # L_max = 100, L_cache = 20: zero up to 80, then (80 - L) / 20, then -1.
    assert overlong_penalty(length, 100, 20) == pytest.approx(expected)


def test_overlong_penalty_scales_with_penalty_factor():
    assert overlong_penalty(90, 100, 20, penalty_factor=0.5) == pytest.approx(-0.25)
    assert overlong_penalty(150, 100, 20, penalty_factor=0.5) == pytest.approx(-0.5)


def test_overlong_penalty_with_zero_buffer_is_a_hard_cliff():
    assert overlong_penalty(100, 100, 0) == 0.0
    assert overlong_penalty(101, 100, 0) == -1.0


def test_overlong_penalty_agrees_with_trl_soft_overlong_punishment():
    from trl.rewards import get_soft_overlong_punishment

    for max_len, cache in [(100, 20), (64, 16), (50, 0), (1024, 256)]:
        trl_fn = get_soft_overlong_punishment(max_completion_len=max_len, soft_punish_cache=cache)
        lengths = list(range(0, max_len + 30, 3))
        expected = trl_fn([[1] * n for n in lengths])
        ours = [overlong_penalty(n, max_len, cache) for n in lengths]
        assert ours == pytest.approx(expected), (max_len, cache)


def test_overlong_penalty_rejects_buffer_larger_than_max_length():
    with pytest.raises(ValueError, match="buffer"):
        overlong_penalty(10, 100, 200)


def test_length_reward_uses_the_samples_token_count():
    fn = [{"type": "length", "params": {"max_length": 100, "buffer": 20}}]
    assert score_one(fn, response="short text", response_length=90)[0] == pytest.approx(-0.5)


def test_length_reward_counts_characters_when_asked():
    fn = [{"type": "length", "params": {"max_length": 10, "buffer": 4, "unit": "chars"}}]
    assert score_one(fn, response="x" * 8)[0] == pytest.approx(-0.5)


def test_length_reward_without_a_token_count_is_an_error_not_zero():
    reward, status, error = score_one([{"type": "length", "params": {"max_length": 100, "buffer": 20}}], response="abc")
    assert (reward, status) == (None, "error")
    assert "response_length" in error and "tokenizer" in error


def test_length_reward_counts_tokens_with_a_tokenizer_folder(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save_pretrained(tmp_path)
    text = "The answer is 42 because six times seven is forty-two."
    n = len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])
    fn = [{"type": "length", "params": {"max_length": n, "buffer": 4, "tokenizer": str(tmp_path)}}]
    assert score_one(fn, response=text)[0] == pytest.approx(-1.0)  # n = max_length: -(4/4)


def test_length_params_reject_a_buffer_above_max_length():
    with pytest.raises(ValueError, match="buffer"):
        RewardConfig.model_validate({"functions": [{"type": "length", "params": {"max_length": 10, "buffer": 20}}]})


# ---------------------------------------------------------------------------------------------
# format


def test_find_boxed_handles_nesting_escapes_and_several_boxes():
    text = r"first \boxed{\frac{1}{2}} then \fbox{a\}b} and \boxed {x^{2}}"
    assert find_boxed(text) == [r"\frac{1}{2}", r"a\}b", "x^{2}"]


def test_find_boxed_ignores_an_unclosed_box():
    assert find_boxed(r"cut off \boxed{\frac{1}{2") == []
    assert not has_boxed(r"\boxed{}")  # empty box: nothing was answered


def test_find_boxed_is_linear_on_hostile_input():
    hostile = "\\boxed{" * 100_000 + "}" * 10  # 700 kB of unclosed boxes
    t = time.perf_counter()
    find_boxed(hostile)
    assert time.perf_counter() - t < 3.0 + SLACK_S  # a quadratic scan would take hours


@pytest.mark.parametrize(
    "text,ok",
    [
        ("<think>work</think> The answer is 4.", True),
        ("<think>a</think>\n\\boxed{4}", True),
        ("<think>no answer after</think>   ", False),
        ("answer first <think>x</think> 4", False),
        ("<think>a</think> 4 <think>again</think> 5", False),
        ("<think><think>nested</think></think> 4", False),
    ],
)
def test_think_format(text, ok):
    assert has_think_format(text) is ok


def test_format_reward_boxed_scores_one_or_zero():
    assert score_one([{"type": "format"}], response=r"so \boxed{7}")[0] == 1.0
    assert score_one([{"type": "format"}], response="so 7")[0] == 0.0


def test_format_reward_regex_fullmatch():
    fn = [{"type": "format", "params": {"style": "regex", "pattern": r"<answer>\d+</answer>", "fullmatch": True}}]
    assert score_one(fn, response="<answer>12</answer>")[0] == 1.0
    assert score_one(fn, response="x <answer>12</answer>")[0] == 0.0


def test_format_reward_bad_regex_fails_when_the_config_loads():
    with pytest.raises(ValueError, match="not a valid regular expression"):
        RewardConfig.model_validate({"functions": [{"type": "format", "params": {"style": "regex", "pattern": "(unclosed"}}]})


def test_format_reward_regex_style_requires_a_pattern():
    with pytest.raises((ValueError, ConfigError), match="pattern"):
        RewardConfig.model_validate({"functions": [{"type": "format", "params": {"style": "regex"}}]})

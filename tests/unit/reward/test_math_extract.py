"""Answer extraction: anchors, their priority, and linear time on adversarial text."""

from __future__ import annotations

import time

import pytest
from bounds import SLACK_S

from qwen25_rl.reward.math import extract_answer
from qwen25_rl.reward.math_extract import find_answer, gold_answer_text, matching_braces


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("\\boxed{\\frac{\\sqrt{3}}{\\left(2\\right)}}", "\\frac{\\sqrt{3}}{\\left(2\\right)}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped set braces are not grouping
        ("\\boxed {7}", "7"),
        ("\\boxed 5$ done", "5"),
        ("\\fbox{42}", "42"),
        ("\\boxed{\\boxed{8}}", "8"),
        ("\\boxed{$x=3$}", "x=3"),
    ],
)
def test_boxed_content_with_nested_braces(response, expected):
    assert extract_answer(response) == expected


def test_last_of_several_boxes_wins():
    assert extract_answer("try \\boxed{1}, then \\boxed{2}, finally \\boxed{3}") == "3"


def test_unclosed_last_box_falls_back_to_the_last_complete_one():
    assert extract_answer("\\boxed{4} ... so the answer is \\boxed{5") == "4"


def test_empty_box_is_no_answer():
    assert extract_answer("\\boxed{}") is None


def test_gsm8k_hash_line():
    assert extract_answer("She makes 9 * 2 = $18.\n#### 18") == "18"
    assert extract_answer("#### \n#### 7\n") == "7"


def test_box_outranks_hash_and_answer_is():
    assert extract_answer("The answer is 3.\n#### 4\n\\boxed{5}") == "5"
    assert extract_answer("The answer is 3.\n#### 4") == "4"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("so the answer is 19.", "19"),
        ("Final Answer: The final answer is $\\frac{2}{3}$. I hope it is correct.", "\\frac{2}{3}"),
        ("**Answer:** 3.5", "3.5"),
        ("answer = 12\nextra text", "12"),
        ("The answer is x = 5, as shown above.", "x = 5"),
        ("The answer is 1, 2, and 3.", "1, 2, and 3"),
        ("The answer is x = 2, y = 3.", "x = 2, y = 3"),
    ],
)
def test_answer_is_phrases(response, expected):
    assert extract_answer(response) == expected


def test_bare_answer_is_the_whole_response():
    assert extract_answer("  \\frac{14}{3} ") == "\\frac{14}{3}"
    assert extract_answer("$x \\in [-2,7]$") == "x \\in [-2,7]"
    assert extract_answer("\\text{Evelyn}") == "\\text{Evelyn}"
    assert extract_answer("18 dollars") == "18 dollars"


def test_prose_without_anchor_is_no_answer_unless_last_number_is_enabled():
    text = "We add 12 and 7 to get 19 apples in total."
    assert extract_answer(text) is None
    assert extract_answer(text, fallback_last_number=True) == "19"
    found = find_answer("First 1,200 then -3.5 units", fallback_last_number=True)
    assert found is not None and (found.text, found.source) == ("-3.5", "last_number")


def test_gold_answer_text_accepts_answers_and_reference_solutions():
    assert gold_answer_text("\\frac{14}{3}") == "\\frac{14}{3}"
    assert gold_answer_text("...so $\\boxed{p - q}$.") == "p - q"
    assert gold_answer_text("2 + 1 = 3 bolts\n#### 3") == "3"


def test_non_string_response_is_a_type_error():
    with pytest.raises(TypeError, match="response must be str"):
        extract_answer(None)  # type: ignore[arg-type]


def test_matching_braces_skips_escaped_braces():
    text = "{a\\{b\\}c{d}}"
    assert matching_braces(text) == {0: 11, 8: 10}


@pytest.mark.parametrize(
    "text",
    [
        "\\boxed{" * 200_000,
        "{" * 200_000 + "}" * 200_000,
        "answer " * 100_000 + "is",
        "answer" + " " * 200_000 + "x",
        "1," * 200_000,
        "####" * 100_000,
    ],
    ids=["unclosed-boxes", "deep-braces", "many-anchors", "long-space-run", "number-lists", "many-hashes"],
)
def test_extraction_is_fast_on_adversarial_text(text):
    started = time.perf_counter()
    find_answer(text, fallback_last_number=True)
    assert time.perf_counter() - started < 2.0 + SLACK_S  # a quadratic scan would take hours

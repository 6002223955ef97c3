"""Real evaluation data (../shared/data): every GSM8K and MATH-500 gold answer verifies against
itself; the symbolic stage accepts every MATH-500 gold on its own and rejects a different
problem's answer. That every reference solution verifies against its gold is checked once, end
to end through `qwen25-rl eval --responses`: tests/integration/stages/test_evaluate_real_data.py.
"""

from __future__ import annotations

import json

import pytest

from qwen25_rl.reward.math import MathStatus, score_math, symbolic_verdict
from qwen25_rl.reward.math_extract import last_boxed
from qwen25_rl.reward.math_normalize import comparison_key, normalize_answer, split_equation


def _rows(folder, name):
    with open(folder / name) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def gsm8k(eval_data_dir):
    rows = _rows(eval_data_dir, "gsm8k_test.jsonl")
    assert len(rows) == 1319
    return rows


@pytest.fixture(scope="module")
def math500(eval_data_dir):
    rows = _rows(eval_data_dir, "math500_test.jsonl")
    assert len(rows) == 500
    return rows


def _gsm8k_gold(row) -> str:
    return row["answer"].rsplit("####", 1)[1].strip()


def test_every_gsm8k_gold_verifies_against_itself(gsm8k):
    failures = []
    for i, row in enumerate(gsm8k):
        gold = _gsm8k_gold(row)
        score = score_math(gold, gold)
        if not score.correct:
            failures.append((i, gold, score))
    assert not failures, failures[:5]


def test_every_gsm8k_gold_survives_reformatting_and_rejects_an_off_by_one(gsm8k):
    failures = []
    for i, row in enumerate(gsm8k):
        gold = _gsm8k_gold(row)
        value = int(gold.replace(",", ""))
        for response, expected in [
            (f"The answer is ${value:,}.00.", True),  # thousands separators, currency, cents
            (f"\\boxed{{{value + 1}}}", False),
        ]:
            score = score_math(response, gold)
            if score.correct is not expected or score.path != "numeric":
                failures.append((i, gold, response, score))
    assert not failures, failures[:5]


def test_every_math500_gold_verifies_against_itself(math500):
    failures = []
    for row in math500:
        score = score_math(row["answer"], row["answer"], timeout_s=30)
        if not score.correct:
            failures.append((row["unique_id"], row["answer"], score))
    assert not failures, failures[:5]


def test_symbolic_stage_accepts_every_math500_boxed_answer_and_rejects_another_problems(math500):
    """The path a differently written answer takes: math-verify on the normalised forms."""
    accept_failures, reject_failures = [], []
    for i, row in enumerate(math500):
        gold = normalize_answer(row["answer"])
        boxed = normalize_answer(last_boxed(row["solution"]))
        status, detail = symbolic_verdict(boxed, gold, 30)
        if status is not MathStatus.CORRECT:
            accept_failures.append((row["unique_id"], row["answer"], status, detail))
        other = normalize_answer(math500[(i + 1) % len(math500)]["answer"])
        # "x=5" after "5" is the same answer by design; skip neighbours equal as text.
        if comparison_key(split_equation(other).values[-1]) == comparison_key(split_equation(gold).values[-1]):
            continue
        status, detail = symbolic_verdict(other, gold, 30)
        if status is not MathStatus.WRONG:
            reject_failures.append((row["unique_id"], row["answer"], other, status, detail))
    assert not accept_failures, accept_failures[:5]
    assert not reject_failures, reject_failures[:5]

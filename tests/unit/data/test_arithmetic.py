"""Arithmetic word problems: GSM8K-format solutions that are arithmetically right, split by problem."""

from __future__ import annotations

import json
import re

import pytest

from qwen25_rl.data.arithmetic import Difficulty, generate_problems, parse_final_answer, sample_problem
from qwen25_rl.data.splits import split_of

ANNOTATION = re.compile(r"<<(\d+)([-+*/])(\d+)=(-?\d+)>>(-?\d+)")


def test_every_calculator_annotation_and_final_answer_is_correct():
    train, held = generate_problems(300, 60, seed=3)
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}
    for p in train + held:
        steps = ANNOTATION.findall(p.solution)
        assert steps, p.solution
        for a, op, b, c, shown in steps:
            assert ops[op](int(a), int(b)) == int(c) == int(shown), p.solution
        assert p.solution.splitlines()[-1] == f"#### {p.final_answer}"
        assert parse_final_answer(p.solution) == p.final_answer == int(steps[-1][3])


def test_division_problems_divide_evenly_and_subtraction_stays_positive():
    train, _ = generate_problems(400, 0, seed=1, difficulty=Difficulty(families=("sub", "share", "add_sub")))
    assert train and all(p.final_answer > 0 for p in train)


def test_train_and_heldout_share_no_problem():
    train, held = generate_problems(500, 100, seed=0)
    assert len(train) == 500 and len(held) == 100
    assert not {p.question for p in train} & {p.question for p in held}
    assert len({p.key for p in train}) == 500


def test_split_is_a_function_of_the_problem_not_of_the_seed():
    a_train, a_held = generate_problems(300, 60, seed=0)
    b_train, b_held = generate_problems(300, 60, seed=7)
    split = {p.key: "train" for p in a_train + b_train} | {p.key: "heldout" for p in a_held + b_held}
    for p in a_train + a_held + b_train + b_held:
        assert split[p.key] == p.split == split_of(p.key, 0.2)


def test_same_seed_gives_same_problems():
    assert generate_problems(50, 10, seed=5) == generate_problems(50, 10, seed=5)
    assert generate_problems(50, 10, seed=5) != generate_problems(50, 10, seed=6)


def test_asking_for_more_problems_than_exist_is_an_error():
    import random

    # "share" with factors 2..2 has one number pair; names x items bound the space.
    d = Difficulty(max_factor=2, families=("share",))
    space = {sample_problem(random.Random(i), d, 0.2).key for i in range(3000)}
    with pytest.raises(ValueError, match="could not draw"):
        generate_problems(len(space) + 1, 0, seed=0, difficulty=d)


def test_unknown_family_is_rejected_by_name():
    with pytest.raises(ValueError, match="unknown arithmetic families"):
        Difficulty(families=("add", "pow"))


@pytest.mark.parametrize(
    "text,expected",
    [("so 3 + 4 = 7\n#### 7", 7), ("#### 1,234", 1234), ("#### -5", -5), ("#### 2.5", 2.5), ("The answer is 7", None), ("#### ", None)],
)
def test_parse_final_answer(text, expected):
    assert parse_final_answer(text) == expected


def test_real_gsm8k_answers_parse_in_the_same_format(eval_data_dir):
    rows = [json.loads(line) for line in (eval_data_dir / "gsm8k_test.jsonl").read_text().splitlines()]
    parsed = [parse_final_answer(r["answer"]) for r in rows]
    assert len(rows) == 1319 and all(v is not None for v in parsed)
    ours = generate_problems(5, 1, seed=0)[0][0].to_row()
    assert {"question", "answer"} <= set(ours)

"""Python function tasks: reference solutions pass their tests, wrong ones fail, MBPP row format."""

from __future__ import annotations

import json

import pytest

from qwen25_rl.data.code_tasks import FAMILIES, generate_tasks


def _passes(code: str, tests: list[str]) -> bool:
    # Our own generated reference code (trusted), not model output: exec in a fresh namespace.
    ns: dict = {}
    try:
        exec(code, ns)
        for t in tests:
            exec(t, ns)
    except AssertionError:
        return False
    return True


def test_every_reference_solution_passes_its_tests():
    train, held = generate_tasks(200, 40, seed=0)
    assert {t.family for t in train} == set(FAMILIES)
    for t in train + held:
        assert len(t.test_list) == 3
        assert _passes(t.code, list(t.test_list)), t


def test_tests_reject_a_wrong_solution():
    train, _ = generate_tasks(100, 0, seed=2)
    failing = 0
    for t in train:
        wrong = t.code.rsplit("return", 1)[0] + "return None\n"
        failing += not _passes(wrong, list(t.test_list))
    # A constant None fails every task whose tests expect a non-None value: all of them.
    assert failing == len(train)


def test_train_and_heldout_share_no_task():
    train, held = generate_tasks(150, 30, seed=0)
    assert not {t.key for t in train} & {t.key for t in held}
    assert not {t.text for t in train} & {t.text for t in held}


def test_rows_have_mbpp_fields(eval_data_dir):
    real = json.loads((eval_data_dir / "mbpp.jsonl").read_text().splitlines()[0])
    ours = generate_tasks(3, 0, seed=0)[0][0].to_row()
    assert set(real) - {"challenge_test_list"} <= set(ours)
    assert isinstance(ours["test_list"], list) and ours["test_list"][0].startswith(f"assert {ours['entry_point']}(")


def test_unknown_family_is_rejected():
    with pytest.raises(ValueError, match="unknown code task families"):
        generate_tasks(1, 0, families=("sorting",))

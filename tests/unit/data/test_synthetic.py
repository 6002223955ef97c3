"""The synthetic data set on disk: held-out problems never reach training files; stable re-runs."""

from __future__ import annotations

import json

import pytest

from qwen25_rl.data.synthetic import FILES, SyntheticSpec, write_synthetic_dataset
from qwen25_rl.pretrain.corpus import validate_messages

SMALL = SyntheticSpec(arithmetic_train=120, arithmetic_heldout=30, code_train=40, code_heldout=10, multi_turn_fraction=0.3)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_writes_every_file_with_the_manifest_counts(tmp_path):
    manifest = write_synthetic_dataset(tmp_path, SMALL)
    for name in FILES:
        assert len(_rows(tmp_path / name)) == manifest["rows"][name] > 0
    assert manifest["rows"]["arithmetic_heldout.jsonl"] == 30


def test_no_heldout_problem_appears_in_any_training_file(tmp_path):
    write_synthetic_dataset(tmp_path, SMALL)
    held_q = [r["question"] for r in _rows(tmp_path / "arithmetic_heldout.jsonl")]
    held_code = [r["text"] for r in _rows(tmp_path / "code_heldout.jsonl")]
    training_text = "".join(
        (tmp_path / f).read_text()
        for f in ("pretrain_arithmetic.jsonl", "pretrain_code.jsonl", "sft_train.jsonl", "arithmetic_train.jsonl", "code_train.jsonl")
    )
    for q in held_q + held_code:
        assert json.dumps(q)[1:-1] not in training_text
    heldout_text = (tmp_path / "pretrain_heldout.jsonl").read_text()
    assert all(json.dumps(q)[1:-1] in heldout_text for q in held_q)


def test_chat_rows_are_valid_and_some_are_multi_turn(tmp_path):
    write_synthetic_dataset(tmp_path, SMALL)
    rows = _rows(tmp_path / "sft_train.jsonl")
    for i, r in enumerate(rows):
        validate_messages(r["messages"], f"row {i}")
    assert any(len(r["messages"]) == 4 for r in rows)
    assert sum(len(r["messages"]) // 2 for r in rows) == 120 + 40


def test_rewriting_the_same_spec_keeps_the_files_and_a_different_spec_is_refused(tmp_path):
    write_synthetic_dataset(tmp_path, SMALL)
    before = (tmp_path / "sft_train.jsonl").read_bytes()
    write_synthetic_dataset(tmp_path, SMALL)
    assert (tmp_path / "sft_train.jsonl").read_bytes() == before
    with pytest.raises(ValueError, match="different synthetic spec"):
        write_synthetic_dataset(tmp_path, SyntheticSpec(seed=1, arithmetic_train=10, arithmetic_heldout=2, code_train=4, code_heldout=1))

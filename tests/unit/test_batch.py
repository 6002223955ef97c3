"""TensorBatch: split by rank, concatenate back, select."""

from __future__ import annotations

import pytest
import torch

from qwen25_rl.batch import TensorBatch


def make(n=5, width=3):
    return TensorBatch({"ids": torch.arange(n * width).view(n, width)}, {"text": [f"t{i}" for i in range(n)]}, {"step": 1})


def test_chunk_sizes_differ_by_at_most_one_and_cat_restores():
    b = make(5)
    parts = b.chunk(3)
    assert [len(p) for p in parts] == [2, 2, 1]
    back = TensorBatch.cat(parts)
    assert torch.equal(back["ids"], b["ids"]) and back.meta["text"] == b.meta["text"]


def test_chunk_into_more_parts_than_samples_gives_empty_parts():
    assert [len(p) for p in make(2).chunk(4)] == [1, 1, 0, 0]


def test_cat_right_pads_different_sequence_lengths():
    a = TensorBatch({"ids": torch.ones(1, 2, dtype=torch.long)})
    b = TensorBatch({"ids": torch.ones(1, 4, dtype=torch.long)})
    assert TensorBatch.cat([a, b])["ids"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_select_by_bool_mask_and_positions():
    b = make(4)
    assert b.select(torch.tensor([True, False, True, False])).meta["text"] == ["t0", "t2"]
    assert b.select([3, 1]).meta["text"] == ["t3", "t1"]


def test_mismatched_sizes_are_rejected():
    with pytest.raises(ValueError, match="disagree on the number of samples"):
        TensorBatch({"a": torch.zeros(2)}, {"b": [1, 2, 3]})

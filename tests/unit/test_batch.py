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


def test_cat_left_pads_prompts_so_the_last_prompt_token_stays_in_the_last_column():
    # two rollout workers / a dynamic-sampling refill return different prompt widths
    a = TensorBatch({"prompt_ids": torch.tensor([[5, 6]]), "prompt_mask": torch.tensor([[1, 1]]), "response_ids": torch.tensor([[9]])})
    b = TensorBatch(
        {"prompt_ids": torch.tensor([[3, 4, 7]]), "prompt_mask": torch.tensor([[1, 1, 1]]), "response_ids": torch.tensor([[8, 8]])}
    )
    out = TensorBatch.cat([a, b])
    assert out["prompt_ids"].tolist() == [[0, 5, 6], [3, 4, 7]]
    assert out["prompt_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert out["response_ids"].tolist() == [[9, 0], [8, 8]]


def _padded_batch():
    return TensorBatch(
        {
            "prompt_ids": torch.tensor([[0, 0, 5, 6], [0, 0, 0, 7]]),
            "prompt_mask": torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1]]),
            "response_ids": torch.tensor([[1, 2, 0, 0], [3, 0, 0, 0]]),
            "response_mask": torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]]),
            "ref_log_probs": torch.tensor([[-1.0, -2.0, 0.0, 0.0], [-3.0, 0.0, 0.0, 0.0]]),
            "advantages": torch.tensor([0.5, -0.5]),
        },
        {"text": ["a", "b"]},
    )


def test_trimmed_drops_all_padding_columns_on_the_padded_sides():
    out, keep = _padded_batch().trimmed()
    assert out["prompt_ids"].tolist() == [[5, 6], [0, 7]]
    assert out["prompt_mask"].tolist() == [[1, 1], [0, 1]]
    assert out["response_ids"].tolist() == [[1, 2], [3, 0]]
    assert out["ref_log_probs"].tolist() == [[-1.0, -2.0], [-3.0, 0.0]]
    assert out["advantages"].tolist() == [0.5, -0.5] and out.meta["text"] == ["a", "b"]
    assert keep == slice(0, 2)


def test_trimmed_keeps_one_column_of_all_empty_responses():
    b = _padded_batch()
    b = b.with_tensors(response_mask=torch.zeros_like(b["response_mask"]))
    out, keep = b.trimmed()
    assert out["response_mask"].shape == (2, 1) and keep == slice(0, 1)


def test_select_by_bool_mask_and_positions():
    b = make(4)
    assert b.select(torch.tensor([True, False, True, False])).meta["text"] == ["t0", "t2"]
    assert b.select([3, 1]).meta["text"] == ["t3", "t1"]


def test_mismatched_sizes_are_rejected():
    with pytest.raises(ValueError, match="disagree on the number of samples"):
        TensorBatch({"a": torch.zeros(2)}, {"b": [1, 2, 3]})

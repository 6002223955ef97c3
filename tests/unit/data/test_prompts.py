"""Prompt datasets for the RL stages: formats, validation messages, resumable order."""

from __future__ import annotations

import json

import pytest

from qwen25_rl.data.prompts import DatasetError, PromptSampler, load_prompts


def write(tmp_path, rows, name="p.jsonl"):
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def test_prompt_rows_get_chat_template_and_keep_answer_source_and_extras(tmp_path, tiny_tokenizer):
    p = write(tmp_path, [{"prompt": "2+2?", "answer": "4", "data_source": "gsm8k", "level": 3}])
    (rec,), dropped = load_prompts([str(p)], tiny_tokenizer)
    assert rec.prompt_text.endswith("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert rec.prompt_ids == tiny_tokenizer.encode(rec.prompt_text, add_special_tokens=False)
    assert (rec.answer, rec.data_source, rec.extra) == ("4", "gsm8k", {"level": 3})
    assert dropped == {"too_long": 0}


def test_messages_rows_and_tests_column(tmp_path, tiny_tokenizer):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    p = write(tmp_path, [{"messages": msgs, "tests": [{"input": "1", "output": "1"}]}])
    (rec,), _ = load_prompts([str(p)], tiny_tokenizer)
    assert rec.prompt_text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert rec.answer == [{"input": "1", "output": "1"}]


def test_parquet_rows(tmp_path, tiny_tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "answer": ["1", "2"]}), p)
    recs, _ = load_prompts([str(p)], tiny_tokenizer)
    assert [r.answer for r in recs] == ["1", "2"]


@pytest.mark.parametrize(
    "row, message",
    [
        ({"question": "x"}, "row has neither 'prompt' (text) nor 'messages' (chat); keys: ['question']"),
        ({"messages": [{"role": "narrator", "content": "x"}]}, "messages[0] has unknown role 'narrator'"),
        ({"messages": [{"role": "user"}]}, "messages[0] must have 'role' and 'content'"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
            "the last message must be the user's turn",
        ),
        ("[1, 2]", "expected a JSON object, got list"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_row_is_named_by_file_and_line(tmp_path, tiny_tokenizer, row, message):
    p = write(tmp_path, [{"prompt": "fine"}, row])
    with pytest.raises(DatasetError) as e:
        load_prompts([str(p)], tiny_tokenizer)
    assert f"{p}:2: " in str(e.value) and message in str(e.value)


def test_long_prompts_are_dropped_and_counted_or_rejected(tmp_path, tiny_tokenizer):
    p = write(tmp_path, [{"prompt": "short"}, {"prompt": "word " * 400}])
    recs, dropped = load_prompts([str(p)], tiny_tokenizer, max_prompt_length=64)
    assert len(recs) == 1 and dropped["too_long"] == 1
    with pytest.raises(DatasetError, match=r"p.jsonl:2: prompt has \d+ tokens, more than data.max_prompt_length=64"):
        load_prompts([str(p)], tiny_tokenizer, max_prompt_length=64, on_long_prompt="error")


def test_missing_and_empty_files_are_named(tmp_path, tiny_tokenizer):
    with pytest.raises(DatasetError, match="nope.jsonl: file not found"):
        load_prompts([str(tmp_path / "nope.jsonl")], tiny_tokenizer)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DatasetError, match="empty.jsonl: no rows"):
        load_prompts([str(tmp_path / "empty.jsonl")], tiny_tokenizer)


def test_sampler_order_is_a_permutation_per_epoch_and_resumes_from_position():
    s = PromptSampler(5, seed=3)
    first = s.take(12)
    assert sorted(first[:5]) == list(range(5)) and sorted(first[5:10]) == list(range(5))
    assert first[:5] != first[5:10]  # a new permutation each epoch
    resumed = PromptSampler(5, seed=3, position=7)
    assert resumed.take(5) == first[7:12]


def test_unshuffled_sampler_is_in_file_order():
    assert PromptSampler(3, seed=0, shuffle=False).take(4) == [0, 1, 2, 0]

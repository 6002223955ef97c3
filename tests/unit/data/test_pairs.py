"""Preference-pair files for DPO: row formats, validation messages, length limits, round trip, batches."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from qwen25_rl.batch import LEFT_PADDED
from qwen25_rl.data.pairs import PairRecord, load_pairs, pair_batch, write_pairs
from qwen25_rl.data.prompts import DatasetError, load_prompts


def write(tmp_path, rows, name="pairs.jsonl"):
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def encode(tok, text):
    return tok.encode(text, add_special_tokens=False)


def test_the_tiny_tokenizer_has_a_chat_template_and_ends_turns_with_im_end(tiny_tokenizer):
    assert tiny_tokenizer.chat_template and tiny_tokenizer.eos_token == "<|im_end|>"


def test_text_rows_wrap_the_prompt_like_prompt_files_and_end_responses_with_eos(tmp_path, tiny_tokenizer):
    p = write(tmp_path, [{"prompt": "2+2?", "chosen": "4", "rejected": "5", "margin": 1, "answer": "4", "round": 3}])
    (rec,), dropped = load_pairs([str(p)], tiny_tokenizer)
    (prompt,), _ = load_prompts([str(p)], tiny_tokenizer)
    eos = tiny_tokenizer.eos_token_id
    assert (rec.prompt_text, rec.prompt_ids) == (prompt.prompt_text, prompt.prompt_ids)
    assert rec.chosen_ids == encode(tiny_tokenizer, "4") + [eos] and rec.rejected_ids == encode(tiny_tokenizer, "5") + [eos]
    assert (rec.chosen_text, rec.rejected_text, rec.margin) == ("4", "5", 1.0)
    assert (rec.index, rec.location, rec.extra) == (0, f"{p}:1", {"answer": "4", "round": 3})
    assert (rec.ref_chosen_logp, rec.ref_rejected_logp) == (None, None)
    assert dropped == {"too_long": 0, "truncated": 0, "identical_after_truncation": 0}


def test_text_prompts_are_used_as_they_are_without_the_chat_template(tmp_path, tiny_tokenizer):
    p = write(tmp_path, [{"prompt": "Q: 2+2\nA:", "chosen": " 4", "rejected": " 5"}])
    (rec,), _ = load_pairs([str(p)], tiny_tokenizer, apply_chat_template=False)
    assert rec.prompt_text == "Q: 2+2\nA:" and rec.prompt_ids == encode(tiny_tokenizer, "Q: 2+2\nA:")


def test_chat_rows_in_trl_conversational_form(tmp_path, tiny_tokenizer):
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    row = {"prompt": prompt, "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]}
    (rec,), _ = load_pairs([str(write(tmp_path, [row]))], tiny_tokenizer)
    assert rec.prompt_text == tiny_tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    assert rec.prompt_text.startswith("<|im_start|>system\nBe brief.<|im_end|>") and rec.prompt_text.endswith("<|im_start|>assistant\n")
    assert (rec.chosen_text, rec.chosen_ids[-1]) == ("4", tiny_tokenizer.eos_token_id)


def test_custom_column_names(tmp_path, tiny_tokenizer):
    p = write(tmp_path, [{"question": "q", "good": "a", "bad": "b", "gap": 0.5}])
    (rec,), _ = load_pairs([str(p)], tiny_tokenizer, prompt_key="question", chosen_key="good", rejected_key="bad", margin_key="gap")
    assert (rec.chosen_text, rec.rejected_text, rec.margin, rec.extra) == ("a", "b", 0.5, {})


def test_id_rows_use_the_ids_as_they_are_and_keep_the_texts(tmp_path, tiny_tokenizer):
    row = {"prompt": "shown", "chosen": "c", "rejected": "r", "prompt_ids": [5, 6, 7], "chosen_ids": [8, 9], "rejected_ids": [10]}
    row |= {"ref_chosen_logp": -1.5, "ref_rejected_logp": -2.25}
    (rec,), _ = load_pairs([str(write(tmp_path, [row]))], tiny_tokenizer)
    assert (rec.prompt_ids, rec.chosen_ids, rec.rejected_ids) == ([5, 6, 7], [8, 9], [10])
    assert (rec.prompt_text, rec.chosen_text, rec.rejected_text) == ("shown", "c", "r")
    assert (rec.ref_chosen_logp, rec.ref_rejected_logp) == (-1.5, -2.25)


def test_id_rows_without_texts_are_decoded_for_display(tmp_path, tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    row = {
        "prompt_ids": encode(tiny_tokenizer, "hello"),
        "chosen_ids": encode(tiny_tokenizer, "yes") + [eos],
        "rejected_ids": encode(tiny_tokenizer, "no"),
    }
    (rec,), _ = load_pairs([str(write(tmp_path, [row]))], tiny_tokenizer)
    assert (rec.prompt_text, rec.chosen_text, rec.rejected_text) == ("hello", "yes", "no")


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "q", "chosen": "a"}, "row has no 'rejected' field; keys: ['chosen', 'prompt']"),
        ({"chosen": "a", "rejected": "b"}, "row has no 'prompt' field; keys: ['chosen', 'rejected']"),
        ({"prompt": "q", "chosen": None, "rejected": "b"}, "row has no 'chosen' field"),
        (
            {"prompt": 3, "chosen": "a", "rejected": "b"},
            "'prompt' must be text or a list of chat messages ending with the user's turn, got int",
        ),
        ({"prompt": "q", "chosen": 1.5, "rejected": "b"}, "'chosen' must be text or a list holding one assistant message, got float"),
        ({"prompt": "q", "chosen": "same", "rejected": "same"}, "'chosen' and 'rejected' are identical"),
        ({"prompt": "q", "chosen": "a", "rejected": "b", "margin": "big"}, "'margin' must be a number, got str"),
        ({"prompt": "q", "chosen": "a", "rejected": "b", "margin": True}, "'margin' must be a number, got bool"),
        ("""{"prompt": "q", "chosen": "a", "rejected": "b", "margin": NaN}""", "'margin' must be finite, got nan"),
        ({"prompt": [{"role": "narrator", "content": "q"}], "chosen": "a", "rejected": "b"}, "prompt[0] has unknown role 'narrator'"),
        ({"prompt": [{"role": "user"}], "chosen": "a", "rejected": "b"}, "prompt[0] must have 'role' and 'content'"),
        ({"prompt": [{"role": "user", "content": 1}], "chosen": "a", "rejected": "b"}, "prompt[0] content must be text, got int"),
        ({"prompt": [], "chosen": "a", "rejected": "b"}, "'prompt' must be a non-empty list of {role, content}"),
        (
            {"prompt": "q", "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "rejected": "b"},
            "chosen[0] has role 'user'; a response holds the assistant's message only",
        ),
        ({"prompt": "q", "chosen": "a", "rejected": [{"role": "assistant"}]}, "rejected[0] must have 'role' and 'content'"),
        (
            {"prompt": "q", "chosen": "a", "rejected": [{"role": "assistant", "content": ["x"]}]},
            "rejected[0] content must be text, got list",
        ),
        ({"prompt": "q", "chosen": "a", "rejected": []}, "'rejected' must hold exactly one assistant message, got 0"),
        (
            {"prompt": "q", "chosen": "a", "rejected": "b", "ref_chosen_logp": -1.0},
            "row has 'ref_chosen_logp' but no 'ref_rejected_logp': give both reference log-probs or neither",
        ),
        (
            {"prompt": "q", "chosen": "a", "rejected": "b", "ref_chosen_logp": -1.0, "ref_rejected_logp": "x"},
            "'ref_rejected_logp' must be a number",
        ),
        (
            """{"prompt": "q", "chosen": "a", "rejected": "b", "ref_chosen_logp": -Infinity, "ref_rejected_logp": -1}""",
            "'ref_chosen_logp' must be finite",
        ),
        ({"prompt_ids": [1], "chosen_ids": [2]}, "row has ['prompt_ids', 'chosen_ids'] but no ['rejected_ids']"),
        (
            {"prompt_ids": [1], "chosen_ids": [], "rejected_ids": [3]},
            "'chosen_ids' must be a non-empty list of token ids, got an empty list",
        ),
        ({"prompt_ids": "1 2", "chosen_ids": [2], "rejected_ids": [3]}, "'prompt_ids' must be a non-empty list of token ids, got str"),
        ({"prompt_ids": [1], "chosen_ids": [2, 2.5], "rejected_ids": [3]}, "chosen_ids[1] must be a token id (int), got float"),
        (
            {"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [99999]},
            "rejected_ids[0] = 99999 is outside the tokenizer's vocabulary [0, 1046)",
        ),
        ({"prompt_ids": [1], "chosen_ids": [-1], "rejected_ids": [3]}, "chosen_ids[0] = -1 is outside the tokenizer's vocabulary"),
        ({"prompt_ids": [1], "chosen_ids": [2, 3], "rejected_ids": [2, 3]}, "'chosen_ids' and 'rejected_ids' are identical (2 tokens)"),
        ("[1, 2]", "expected a JSON object, got list"),
    ],
)
def test_bad_row_is_named_by_file_line_and_key(tmp_path, tiny_tokenizer, row, message):
    p = write(tmp_path, [{"prompt": "fine", "chosen": "a", "rejected": "b"}, row])
    with pytest.raises(DatasetError) as e:
        load_pairs([str(p)], tiny_tokenizer)
    assert f"{p}:2: " in str(e.value) and message in str(e.value), str(e.value)


def test_responses_identical_only_as_text_with_different_whitespace_are_still_a_pair(tmp_path, tiny_tokenizer):
    (rec,), _ = load_pairs([str(write(tmp_path, [{"prompt": "q", "chosen": "4", "rejected": "4 "}]))], tiny_tokenizer)
    assert rec.chosen_ids != rec.rejected_ids


def long_rows():
    return [
        {"prompt": "short", "chosen": "yes", "rejected": "no"},
        {"prompt": "short", "chosen": "word " * 100, "rejected": "no"},  # long response
        {"prompt": "word " * 100, "chosen": "yes", "rejected": "no"},  # long prompt
    ]


def test_long_pairs_are_dropped_and_counted(tmp_path, tiny_tokenizer):
    recs, dropped = load_pairs([str(write(tmp_path, long_rows()))], tiny_tokenizer, max_length=60)
    assert [r.location.rsplit(":", 1)[1] for r in recs] == ["1"] and dropped["too_long"] == 2 and dropped["truncated"] == 0


def test_prompts_over_max_prompt_length_are_dropped(tmp_path, tiny_tokenizer):
    recs, dropped = load_pairs([str(write(tmp_path, long_rows()))], tiny_tokenizer, max_prompt_length=40)
    assert len(recs) == 2 and dropped["too_long"] == 1


def test_truncate_cuts_the_responses_and_keeps_the_prompt_whole(tmp_path, tiny_tokenizer):
    recs, dropped = load_pairs([str(write(tmp_path, long_rows()))], tiny_tokenizer, max_length=60, on_long_pair="truncate")
    assert len(recs) == 2 and dropped == {"too_long": 1, "truncated": 1, "identical_after_truncation": 0}
    cut = recs[1]
    assert len(cut.prompt_ids) + len(cut.chosen_ids) == 60 and cut.chosen_ids[-1] != tiny_tokenizer.eos_token_id
    assert cut.rejected_text == "no" and cut.chosen_text == tiny_tokenizer.decode(cut.chosen_ids)
    assert cut.index == 1


def test_truncation_discards_stored_reference_logps(tmp_path, tiny_tokenizer):
    row = {"prompt": "short", "chosen": "word " * 100, "rejected": "no", "ref_chosen_logp": -50.0, "ref_rejected_logp": -2.0}
    (rec,), _ = load_pairs([str(write(tmp_path, [row]))], tiny_tokenizer, max_length=60, on_long_pair="truncate")
    assert (rec.ref_chosen_logp, rec.ref_rejected_logp) == (None, None)


def test_pairs_identical_once_truncated_are_dropped_and_counted(tmp_path, tiny_tokenizer):
    rows = [{"prompt": "q", "chosen": "ok"}, {"prompt": "q", "chosen": "word " * 50 + "yes", "rejected": "word " * 50 + "no"}]
    rows[0]["rejected"] = "no"
    recs, dropped = load_pairs([str(write(tmp_path, rows))], tiny_tokenizer, max_length=40, on_long_pair="truncate")
    assert len(recs) == 1 and dropped["identical_after_truncation"] == 1


def test_long_pair_error_names_the_row_and_lengths(tmp_path, tiny_tokenizer):
    p = write(tmp_path, long_rows())
    with pytest.raises(
        DatasetError,
        match=r"pairs.jsonl:2: pair has \d+ prompt \+ \d+ response tokens \(chosen \d+, rejected \d+\) = \d+, more than max_length=60",
    ):
        load_pairs([str(p)], tiny_tokenizer, max_length=60, on_long_pair="error")
    with pytest.raises(DatasetError, match=r"pairs.jsonl:3: prompt has \d+ tokens, more than max_prompt_length=40"):
        load_pairs([str(p)], tiny_tokenizer, max_prompt_length=40, on_long_pair="error")


def test_no_usable_pair_left_is_an_error_saying_why(tmp_path, tiny_tokenizer):
    p = write(tmp_path, long_rows()[1:])
    with pytest.raises(
        DatasetError, match=r"no usable pairs in .*: 2 rows, 2 longer than the length limits \(max_prompt_length=None, max_length=30\)"
    ):
        load_pairs([str(p)], tiny_tokenizer, max_length=30)


def test_missing_and_empty_files_are_named(tmp_path, tiny_tokenizer):
    with pytest.raises(DatasetError, match="nope.jsonl: file not found"):
        load_pairs([str(tmp_path / "nope.jsonl")], tiny_tokenizer)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DatasetError, match="empty.jsonl: no rows"):
        load_pairs([str(tmp_path / "empty.jsonl")], tiny_tokenizer)


def test_parquet_rows_with_text_and_with_ids(tmp_path, tiny_tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "pairs.parquet"
    table = {"prompt": ["q1", "q2"], "chosen": ["a", "c"], "rejected": ["b", "d"], "margin": [0.5, None], "round": [1, 2]}
    pq.write_table(pa.table(table), p)
    q = tmp_path / "ids.parquet"
    pq.write_table(
        pa.table(
            {"prompt_ids": [[1, 2]], "chosen_ids": [[3]], "rejected_ids": [[4, 5]], "ref_chosen_logp": [-1.0], "ref_rejected_logp": [-2.0]}
        ),
        q,
    )
    recs, _ = load_pairs([str(p), str(q)], tiny_tokenizer)
    assert [r.margin for r in recs] == [0.5, None, None] and [r.extra for r in recs] == [{"round": 1}, {"round": 2}, {}]
    assert recs[1].location == f"{p}:row 1" and recs[2].rejected_ids == [4, 5] and recs[2].ref_rejected_logp == -2.0


def test_write_then_load_gives_the_same_records(tmp_path, tiny_tokenizer):
    rows = [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5", "margin": 1.0, "answer": "4", "scores": [1.0, 0.0]},
        {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}], "rejected": "bye"},
        {"prompt": "x", "chosen": "word " * 40, "rejected": "no", "ref_chosen_logp": -3.0, "ref_rejected_logp": -1.0},
        {"prompt": "y", "chosen": "ok", "rejected": "ko", "ref_chosen_logp": -0.1, "ref_rejected_logp": -7.5, "round": 2},
    ]
    first, first_dropped = load_pairs([str(write(tmp_path, rows))], tiny_tokenizer, max_length=60, on_long_pair="truncate")
    assert first_dropped["truncated"] == 1  # a cut pair (texts re-decoded, ref log-probs gone) round-trips too
    out = tmp_path / "round_0" / "pairs.jsonl"
    write_pairs(out, first)
    again, dropped = load_pairs([str(out)], tiny_tokenizer)
    assert [dataclasses.replace(r, location="") for r in again] == [dataclasses.replace(r, location="") for r in first]
    assert dropped["truncated"] == 0 and not list(out.parent.glob(".*"))  # no temporary file left behind


def test_write_pairs_refuses_extras_that_shadow_pair_fields(tmp_path):
    rec = PairRecord(0, "f:1", [1], [2], [3], "p", "c", "r", extra={"chosen_ids": [9]})
    with pytest.raises(ValueError, match=r"extra columns \['chosen_ids'\] would overwrite"):
        write_pairs(tmp_path / "p.jsonl", [rec])


def records_for_batch():
    return [
        PairRecord(7, "f:1", [1, 2, 3], [4, 5], [6], "p", "c", "r", margin=0.5, ref_chosen_logp=-1.0, ref_rejected_logp=-2.0),
        PairRecord(9, "f:2", [1], [4], [6, 7, 8], "p", "c", "r", ref_chosen_logp=-3.0, ref_rejected_logp=-4.0),
    ]


def test_pair_batch_left_pads_prompts_and_right_pads_responses(tiny_tokenizer):
    batch = pair_batch(records_for_batch(), pad_id=0)
    assert {"prompt_ids", "prompt_mask"} <= LEFT_PADDED
    assert batch["prompt_ids"].tolist() == [[1, 2, 3], [0, 0, 1]] and batch["prompt_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["chosen_ids"].tolist() == [[4, 5], [4, 0]] and batch["chosen_mask"].tolist() == [[1, 1], [1, 0]]
    assert batch["rejected_ids"].tolist() == [[6, 0, 0], [6, 7, 8]] and batch["rejected_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    assert batch["prompt_ids"].dtype == torch.long and batch["chosen_mask"].dtype == torch.long
    assert batch.meta["pair_index"] == [7, 9]


def test_pair_batch_pads_with_the_given_pad_id():
    batch = pair_batch(records_for_batch(), pad_id=99)
    assert batch["prompt_ids"][1].tolist() == [99, 99, 1] and batch["chosen_ids"][1].tolist() == [4, 99]


def test_pair_batch_margin_is_zero_where_unset_and_ref_logps_come_along():
    batch = pair_batch(records_for_batch(), pad_id=0)
    assert batch["margin"].tolist() == [0.5, 0.0] and batch["margin"].dtype == torch.float32
    assert batch["ref_chosen_logps"].tolist() == [-1.0, -3.0] and batch["ref_rejected_logps"].tolist() == [-2.0, -4.0]


def test_pair_batch_leaves_out_ref_logps_unless_every_pair_has_them():
    records = records_for_batch()
    records[1].ref_chosen_logp = records[1].ref_rejected_logp = None
    batch = pair_batch(records, pad_id=0)
    assert "ref_chosen_logps" not in batch and "ref_rejected_logps" not in batch

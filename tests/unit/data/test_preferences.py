"""Preference files for reward-model training: label forms, missing labels and ties, ratings, the
one-criterion shortcut, error messages (file:line + key), sequences and arrays."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from qwen25_rl.data.pairs import load_pairs
from qwen25_rl.data.preferences import PreferenceRecord, load_preferences, preference_arrays
from qwen25_rl.data.prompts import DatasetError

CRITERIA = ["truthfulness", "helpfulness", "conciseness"]


def write(tmp_path, rows, name="prefs.jsonl"):
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def row(prefs=None, ratings=None, **extra):
    r = {"prompt": "What is 2 + 3?", "chosen": "5", "rejected": "6"}
    if prefs is not None:
        r["preferences"] = prefs
    if ratings is not None:
        r["ratings"] = ratings
    return r | extra


def load(tmp_path, tok, rows, criteria=CRITERIA, **kwargs):
    return load_preferences([str(write(tmp_path, rows))], tok, criteria, **kwargs)


def test_every_label_form_is_parsed(tmp_path, tiny_tokenizer):
    rows = [
        row({"truthfulness": 1, "helpfulness": -1, "conciseness": 0}),
        row({"truthfulness": "chosen", "helpfulness": "rejected", "conciseness": "tie"}),
        row({"truthfulness": 1.0, "helpfulness": -1.0, "conciseness": None}),
    ]
    recs, _ = load(tmp_path, tiny_tokenizer, rows)
    assert [r.preference for r in recs] == [[1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, -1.0, 0.0]]
    assert [r.labelled for r in recs] == [[True, True, True], [True, True, True], [True, True, False]]


def test_missing_labels_are_masked_and_counted_and_ties_are_labelled(tmp_path, tiny_tokenizer):
    rows = [
        row({"truthfulness": 1}),  # two criteria not named: missing
        row({"truthfulness": None, "helpfulness": "tie"}),
        row({}),  # labels given, none for these criteria
        row({"conciseness": -1, "helpfulness": 0}),
    ]
    recs, stats = load(tmp_path, tiny_tokenizer, rows)
    assert [r.labelled for r in recs] == [[True, False, False], [False, True, False], [False, False, False], [False, True, True]]
    assert [r.preference for r in recs] == [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, -1.0]]
    assert stats["labelled"] == {"truthfulness": 1, "helpfulness": 2, "conciseness": 1}
    assert stats["ties"] == {"truthfulness": 0, "helpfulness": 2, "conciseness": 0}
    assert stats["missing_labels"] == {"truthfulness": 3, "helpfulness": 2, "conciseness": 3}
    assert stats["ratings"] == dict.fromkeys(CRITERIA, 0)
    assert (stats["rows"], stats["pairs"], stats["dropped"], stats["truncated"]) == (4, 4, 0, 0)


def test_ratings_either_side_may_be_missing(tmp_path, tiny_tokenizer):
    rows = [
        row({"truthfulness": 1}, {"conciseness": {"chosen": 5, "rejected": 2.5}}),
        row(None, {"conciseness": {"chosen": 4}, "helpfulness": {"chosen": None, "rejected": 1}, "truthfulness": None}),
    ]
    recs, stats = load(tmp_path, tiny_tokenizer, rows)
    nan = math.nan
    assert np.array_equal(recs[0].chosen_rating, [nan, nan, 5.0], equal_nan=True)
    assert np.array_equal(recs[0].rejected_rating, [nan, nan, 2.5], equal_nan=True)
    assert np.array_equal(recs[1].chosen_rating, [nan, nan, 4.0], equal_nan=True)
    assert np.array_equal(recs[1].rejected_rating, [nan, 1.0, nan], equal_nan=True)
    # a ratings-only row claims no preference
    assert recs[1].labelled == [False, False, False] and recs[1].preference == [0.0, 0.0, 0.0]
    assert stats["ratings"] == {"truthfulness": 0, "helpfulness": 1, "conciseness": 3}  # rated responses


def test_a_plain_pair_row_means_chosen_is_better_when_one_criterion_is_configured(tmp_path, tiny_tokenizer):
    (rec,), stats = load(tmp_path, tiny_tokenizer, [row()], criteria=["helpfulness"])
    assert (rec.preference, rec.labelled, stats["labelled"]) == ([1.0], [True], {"helpfulness": 1})


def test_a_plain_pair_row_is_an_error_with_several_criteria(tmp_path, tiny_tokenizer):
    p = write(tmp_path, [row({"truthfulness": 1}), row()])
    with pytest.raises(DatasetError) as e:
        load_preferences([str(p)], tiny_tokenizer, CRITERIA)
    assert str(e.value).startswith(f"{p}:2: row has no 'preferences' (or 'ratings') labels")
    assert "criteria are ['truthfulness', 'helpfulness', 'conciseness']" in str(e.value)


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            row({"truthfulness": 1, "honesty": 1}),
            "'preferences' names unknown criterion 'honesty'; the configured criteria are ['truthfulness', 'helpfulness', 'conciseness']",
        ),
        (row({"helpfulness": 2}), "preferences.helpfulness must be 1 / 'chosen', -1 / 'rejected', 0 / 'tie' or null, got 2"),
        (row({"helpfulness": "better"}), "preferences.helpfulness must be 1 / 'chosen', -1 / 'rejected', 0 / 'tie' or null, got 'better'"),
        (row({"conciseness": True}), "preferences.conciseness must be 1 / 'chosen', -1 / 'rejected', 0 / 'tie' or null, got True"),
        (row({"conciseness": 0.5}), "preferences.conciseness must be 1 / 'chosen', -1 / 'rejected', 0 / 'tie' or null, got 0.5"),
        (row({"conciseness": [1]}), "preferences.conciseness must be 1 / 'chosen', -1 / 'rejected', 0 / 'tie' or null, got [1]"),
        (row(["truthfulness"]), "'preferences' must be a mapping {criterion: ...}, got list"),
        (row(None, {"speed": {"chosen": 1}}), "'ratings' names unknown criterion 'speed'"),
        (row(None, {"conciseness": 5}), "ratings.conciseness must be a mapping {'chosen': number, 'rejected': number}, got 5"),
        (row(None, {"conciseness": {"chosen": "5"}}), "ratings.conciseness.chosen must be a finite number or null, got '5'"),
        (row(None, {"conciseness": {"best": 5}}), "ratings.conciseness has unknown keys ['best']; expected 'chosen' and/or 'rejected'"),
        (
            """{"prompt": "q", "chosen": "a", "rejected": "b", "ratings": {"helpfulness": {"rejected": NaN}}}""",
            "ratings.helpfulness.rejected must be a finite number or null, got nan",
        ),
        (
            """{"prompt": "q", "chosen": "a", "rejected": "b", "ratings": {"helpfulness": {"chosen": Infinity}}}""",
            "ratings.helpfulness.chosen must be a finite number or null, got inf",
        ),
        # the pair checks are load_pairs's own
        (row({"truthfulness": 1}, rejected="5"), "'chosen' and 'rejected' are identical"),
        (row({"truthfulness": 1}, margin="big"), "'margin' must be a number, got str"),
        ({"prompt": "q", "chosen": "a", "preferences": {"truthfulness": 1}}, "row has no 'rejected' field"),
    ],
)
def test_bad_row_is_named_by_file_line_and_key(tmp_path, tiny_tokenizer, bad, message):
    p = write(tmp_path, [row({"truthfulness": 1}), bad])
    with pytest.raises(DatasetError) as e:
        load_preferences([str(p)], tiny_tokenizer, CRITERIA)
    assert str(e.value).startswith(f"{p}:2: ") and message in str(e.value), str(e.value)


def test_sequences_are_the_prompt_then_the_response_exactly_as_load_pairs_tokenises_them(tmp_path, tiny_tokenizer):
    rows = [
        row({"truthfulness": 1}, margin=0.5, criterion="truthfulness", prompt_id="abc"),
        {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}], "rejected": "go away"}
        | {"preferences": {"helpfulness": "chosen"}},
    ]
    p = write(tmp_path, rows)
    recs, _ = load_preferences([str(p)], tiny_tokenizer, CRITERIA)
    pairs, _ = load_pairs([str(p)], tiny_tokenizer)
    eos = tiny_tokenizer.eos_token_id
    for rec, pair in zip(recs, pairs):
        assert rec.chosen_ids == pair.prompt_ids + pair.chosen_ids and rec.rejected_ids == pair.prompt_ids + pair.rejected_ids
        assert rec.chosen_ids[-1] == eos and rec.rejected_ids[-1] == eos
        assert (rec.prompt_text, rec.chosen_text, rec.rejected_text) == (pair.prompt_text, pair.chosen_text, pair.rejected_text)
        assert rec.prompt_id == pair.prompt_text
    assert recs[0].prompt_text.endswith("<|im_start|>assistant\n")  # the chat template, as in DPO pairs
    assert (recs[0].margin, recs[1].margin) == (0.5, None)
    assert recs[0].extra == {"criterion": "truthfulness", "prompt_id": "abc"} and recs[1].extra == {}
    assert [r.index for r in recs] == [0, 1] and recs[1].location == f"{p}:2"


def test_pairs_sharing_a_prompt_share_a_prompt_id(tmp_path, tiny_tokenizer):
    rows = [row({"truthfulness": 1}), row({"helpfulness": 1}, rejected="I can't help with that."), row({"truthfulness": 1}, prompt="1+1?")]
    recs, _ = load(tmp_path, tiny_tokenizer, rows)
    assert recs[0].prompt_id == recs[1].prompt_id != recs[2].prompt_id


def test_length_rules_are_load_pairs_rules(tmp_path, tiny_tokenizer):
    rows = [row({"truthfulness": 1}), row({"truthfulness": 1}, chosen="word " * 100), row({"truthfulness": 1}, prompt="word " * 100)]
    recs, stats = load(tmp_path, tiny_tokenizer, rows, max_length=60)
    assert len(recs) == 1 and (stats["rows"], stats["pairs"], stats["dropped"], stats["too_long"]) == (3, 1, 2, 2)
    recs, stats = load(tmp_path, tiny_tokenizer, rows, max_length=60, on_long="truncate")
    assert len(recs) == 2 and (stats["rows"], stats["truncated"], stats["dropped"]) == (3, 1, 1)
    assert len(recs[1].chosen_ids) == 60 and stats["labelled"]["truthfulness"] == 2
    with pytest.raises(DatasetError, match=r"prefs.jsonl:2: pair has \d+ prompt"):
        load(tmp_path, tiny_tokenizer, rows, max_length=60, on_long="error")


def test_criteria_must_be_given_and_distinct(tmp_path, tiny_tokenizer):
    with pytest.raises(ValueError, match="at least one criterion"):
        load(tmp_path, tiny_tokenizer, [row()], criteria=[])
    with pytest.raises(ValueError, match="must be distinct"):
        load(tmp_path, tiny_tokenizer, [row()], criteria=["a", "a"])


def test_parquet_rows(tmp_path, tiny_tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "prefs.parquet"
    table = {
        "prompt": ["q1", "q2"],
        "chosen": ["a", "c"],
        "rejected": ["b", "d"],
        "preferences": [{"truthfulness": 1, "helpfulness": None}, {"truthfulness": None, "helpfulness": -1}],
        "ratings": [None, {"conciseness": {"chosen": 4.0, "rejected": None}}],
    }
    pq.write_table(pa.table(table), p)
    recs, stats = load_preferences([str(p)], tiny_tokenizer, CRITERIA)
    assert [r.preference for r in recs] == [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]
    assert recs[1].chosen_rating[2] == 4.0 and math.isnan(recs[1].rejected_rating[2]) and stats["ratings"]["conciseness"] == 1


def make_record(i, chosen, rejected, preference, labelled, margin=None, ratings=None):
    c = len(preference)
    cr, rr = ratings or ([math.nan] * c, [math.nan] * c)
    return PreferenceRecord(i, f"f:{i}", "p", chosen, rejected, preference, labelled, cr, rr, margin, "c", "r", "p")


def test_arrays_right_pad_both_sides_to_the_longest_sequence():
    recs = [
        make_record(0, [1, 2, 3], [1, 2], [1.0, 0.0], [True, False], margin=0.5, ratings=([5.0, math.nan], [2.0, math.nan])),
        make_record(1, [4], [4, 5, 6, 7], [-1.0, 0.0], [True, True]),
    ]
    arrays = preference_arrays(recs, pad_id=99, num_criteria=2)
    assert arrays["chosen_ids"].tolist() == [[1, 2, 3, 99], [4, 99, 99, 99]]
    assert arrays["rejected_ids"].tolist() == [[1, 2, 99, 99], [4, 5, 6, 7]]
    assert arrays["chosen_len"].tolist() == [3, 1] and arrays["rejected_len"].tolist() == [2, 4]
    assert arrays["preference"].tolist() == [[1.0, 0.0], [-1.0, 0.0]] and arrays["labelled"].tolist() == [[True, False], [True, True]]
    assert np.array_equal(arrays["chosen_rating"], [[5.0, math.nan], [math.nan, math.nan]], equal_nan=True)
    assert np.array_equal(arrays["rejected_rating"], [[2.0, math.nan], [math.nan, math.nan]], equal_nan=True)
    assert arrays["margin"].tolist() == [0.5, 0.0]
    dtypes = {k: v.dtype for k, v in arrays.items()}
    assert dtypes == {
        "chosen_ids": np.int64,
        "rejected_ids": np.int64,
        "chosen_len": np.int64,
        "rejected_len": np.int64,
        "preference": np.float32,
        "labelled": np.bool_,
        "chosen_rating": np.float32,
        "rejected_rating": np.float32,
        "margin": np.float32,
    }


def test_arrays_of_loaded_records_and_of_no_records(tmp_path, tiny_tokenizer):
    recs, _ = load(tmp_path, tiny_tokenizer, [row({"truthfulness": 1}), row({"conciseness": "tie"}, chosen="five")])
    arrays = preference_arrays(recs, pad_id=0, num_criteria=3)
    width = max(len(s) for r in recs for s in (r.chosen_ids, r.rejected_ids))
    assert arrays["chosen_ids"].shape == arrays["rejected_ids"].shape == (2, width)
    assert arrays["chosen_ids"][1, : arrays["chosen_len"][1]].tolist() == recs[1].chosen_ids
    assert arrays["preference"].shape == arrays["labelled"].shape == arrays["chosen_rating"].shape == (2, 3)
    empty = preference_arrays([], pad_id=0, num_criteria=3)
    assert empty["chosen_ids"].shape == (0, 0) and empty["preference"].shape == (0, 3) and empty["margin"].shape == (0,)


def test_arrays_refuse_records_labelled_for_another_number_of_criteria():
    with pytest.raises(ValueError, match=r"record 0 \(f:0\) has 2 preference values, expected 3"):
        preference_arrays([make_record(0, [1], [2], [1.0, 0.0], [True, False])], pad_id=0, num_criteria=3)

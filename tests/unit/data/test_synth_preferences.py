"""Synthetic reward-model preference data: deterministic, split by prompt, every criterion in both
splits, loadable with the counts its manifest states, and written by `qwen25-rl synth-data`."""

from __future__ import annotations

import json
import re

import pytest

from qwen25_rl.algorithms import DEFAULT_CRITERIA
from qwen25_rl.cli import main
from qwen25_rl.data.preferences import load_preferences
from qwen25_rl.data.synth_preferences import (
    BLOCKLIST,
    FILES,
    MANIFEST,
    OFF_TOPIC,
    REFUSALS,
    STEREOTYPES,
    TRUTH_PAIRS_PER_PROMPT,
    write_synthetic_preferences,
)
from qwen25_rl.errors import UserValueError

SMALL = {"num_prompts": 40, "heldout_fraction": 0.25}


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("prefs")
    return out, write_synthetic_preferences(out, seed=3, **SMALL)


def test_files_and_manifest_are_written_and_agree(written):
    out, manifest = written
    assert sorted(p.name for p in out.iterdir()) == sorted([*FILES.values(), MANIFEST])  # no temporary file left
    assert json.loads((out / MANIFEST).read_text()) == manifest
    assert manifest["params"] == {
        "seed": 3,
        "num_prompts": 40,
        "heldout_fraction": 0.25,
        "criteria": list(DEFAULT_CRITERIA),
        "missing_label_fraction": 0.1,
    }
    splits = manifest["splits"]
    assert (splits["train"]["prompts"], splits["heldout"]["prompts"]) == (30, 10)
    for split, name in FILES.items():
        rows = rows_of(out / name)
        per_prompt = len(DEFAULT_CRITERIA) - 1 + TRUTH_PAIRS_PER_PROMPT  # several truthfulness pairs, one of each other kind
        assert len(rows) == splits[split]["rows"] == per_prompt * splits[split]["prompts"]
        want = dict.fromkeys(DEFAULT_CRITERIA, splits[split]["prompts"]) | {
            "truthfulness": TRUTH_PAIRS_PER_PROMPT * splits[split]["prompts"]
        }
        assert splits[split]["rows_by_criterion"] == want


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_data(tmp_path, written):
    out, _ = written
    write_synthetic_preferences(tmp_path / "a", seed=3, **SMALL)
    write_synthetic_preferences(tmp_path / "b", seed=4, **SMALL)
    for name in [*FILES.values(), MANIFEST]:
        assert (tmp_path / "a" / name).read_bytes() == (out / name).read_bytes()
    assert (tmp_path / "b" / FILES["train"]).read_bytes() != (out / FILES["train"]).read_bytes()


def test_train_and_heldout_share_no_prompt_and_each_has_every_criterion(written):
    out, _ = written
    train, heldout = rows_of(out / FILES["train"]), rows_of(out / FILES["heldout"])
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in heldout}
    assert not {r["prompt_id"] for r in train} & {r["prompt_id"] for r in heldout}
    for rows in (train, heldout):
        assert {r["criterion"] for r in rows} == set(DEFAULT_CRITERIA)
        # every prompt has TRUTH_PAIRS_PER_PROMPT truthfulness pairs and one pair of each other criterion
        by_prompt: dict[str, list[str]] = {}
        for r in rows:
            by_prompt.setdefault(r["prompt_id"], []).append(r["criterion"])
        want = sorted([*DEFAULT_CRITERIA, *["truthfulness"] * (TRUTH_PAIRS_PER_PROMPT - 1)])
        assert all(sorted(c) == want for c in by_prompt.values())


def test_each_pair_differs_in_its_own_aspect_and_is_labelled_there(written):
    out, _ = written
    rows = rows_of(out / FILES["train"]) + rows_of(out / FILES["heldout"])
    for r in rows:
        c, chosen, rejected = r["criterion"], r["chosen"], r["rejected"]
        assert list(r["preferences"]) == list(DEFAULT_CRITERIA) and r["preferences"][c] in (1, None)
        assert chosen != rejected
        if c == "truthfulness":  # the same wording and working; the final answer agrees with it or not
            assert re.sub(r"\d+", "#", chosen) == re.sub(r"\d+", "#", rejected)
            *_, worked, final = re.findall(r"\d+", chosen)
            *_, worked_r, final_r = re.findall(r"\d+", rejected)
            assert worked == final == worked_r != final_r
        elif c == "helpfulness":
            assert rejected in REFUSALS
        elif c == "relevance":
            assert rejected in OFF_TOPIC
        elif c in ("conciseness", "harmlessness", "debiasing"):
            assert chosen in rejected and len(rejected) > len(chosen)
        if c == "harmlessness":
            assert any(b in rejected for b in BLOCKLIST)
        if c == "debiasing":
            assert any(s in rejected for s in STEREOTYPES)
    # lengths are no shortcut: refusals both longer and shorter than the answers they are
    # paired with (truthfulness pairs have the same wording on both sides)
    helpful = [len(r["chosen"]) - len(r["rejected"]) for r in rows if r["criterion"] == "helpfulness"]
    assert min(helpful) < 0 < max(helpful)


def test_labels_missing_ties_and_ratings_are_all_present(written):
    out, manifest = written
    rows = rows_of(out / FILES["train"])
    # about missing_label_fraction (0.1) of the rows have their own label nulled
    nulled = sum(r["preferences"][r["criterion"]] is None for r in rows)
    assert 0 < nulled < 0.25 * len(rows)
    # some rows label a second criterion, ties among them
    assert any(sum(v is not None for v in r["preferences"].values()) == 2 for r in rows)
    train = manifest["splits"]["train"]
    assert sum(train["ties"].values()) > 0 and train["ratings"]["conciseness"] > 0
    assert all(train["ratings"][c] == 0 for c in DEFAULT_CRITERIA if c != "conciseness")


def test_rows_load_with_load_preferences_and_the_manifest_counts(written, tiny_tokenizer):
    out, manifest = written
    for split, name in FILES.items():
        recs, stats = load_preferences([str(out / name)], tiny_tokenizer, DEFAULT_CRITERIA)
        want = manifest["splits"][split]
        assert stats["pairs"] == stats["rows"] == want["rows"] == len(recs)
        for key in ("labelled", "ties", "missing_labels", "ratings"):
            assert stats[key] == want[key], key
        # the rating rows are conciseness pairs, graded by the amount of filler
        rated = [r for r in recs if r.extra["criterion"] == "conciseness" and r.chosen_rating[2] == r.chosen_rating[2]]
        assert rated and all(r.chosen_rating[2] == 5 and 1 <= r.rejected_rating[2] <= 3 for r in rated)


def test_exact_missing_label_counts_with_no_masking_and_with_all_masked(tmp_path, tiny_tokenizer):
    none_masked = write_synthetic_preferences(tmp_path / "none", seed=1, num_prompts=12, missing_label_fraction=0.0)
    all_masked = write_synthetic_preferences(tmp_path / "all", seed=1, num_prompts=12, missing_label_fraction=1.0)
    for manifest in (none_masked, all_masked):
        for split in FILES:
            s = manifest["splits"][split]
            for c in DEFAULT_CRITERIA:
                assert s["labelled"][c] + s["missing_labels"][c] == s["rows"]
    s = none_masked["splits"]["train"]
    # every pair is labelled on its own criterion; others only through a second label
    assert all(s["labelled"][c] >= s["rows_by_criterion"][c] for c in DEFAULT_CRITERIA)
    s = all_masked["splits"]["train"]
    # own labels all nulled: what is left are the second labels
    recs, stats = load_preferences([str(tmp_path / "all" / FILES["train"])], tiny_tokenizer, DEFAULT_CRITERIA)
    assert all(not r.labelled[DEFAULT_CRITERIA.index(r.extra["criterion"])] for r in recs)
    assert stats["missing_labels"] == s["missing_labels"]


def test_a_subset_of_criteria(tmp_path, tiny_tokenizer):
    manifest = write_synthetic_preferences(tmp_path, num_prompts=8, criteria=("truthfulness", "relevance"))
    rows = rows_of(tmp_path / FILES["train"])
    assert {r["criterion"] for r in rows} == {"truthfulness", "relevance"} and all(
        list(r["preferences"]) == ["truthfulness", "relevance"] for r in rows
    )
    _, stats = load_preferences([str(tmp_path / FILES["train"])], tiny_tokenizer, ["truthfulness", "relevance"])
    assert stats["missing_labels"] == manifest["splits"]["train"]["missing_labels"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"criteria": ("truthfulness", "speed")}, "criteria must be distinct names from"),
        ({"criteria": ("truthfulness", "truthfulness")}, "criteria must be distinct names from"),
        ({"heldout_fraction": 0.0}, "heldout_fraction must be between 0 and 1"),
        ({"heldout_fraction": 1.0}, "heldout_fraction must be between 0 and 1"),
        ({"missing_label_fraction": 1.5}, r"missing_label_fraction must be in \[0, 1\]"),
        ({"num_prompts": 1}, "num_prompts must be at least 2"),
    ],
)
def test_bad_parameters_are_user_errors(tmp_path, kwargs, message):
    with pytest.raises(UserValueError, match=message):
        write_synthetic_preferences(tmp_path, **kwargs)


def test_synth_data_writes_the_preference_set_beside_the_task_data(tmp_path, capsys):
    """`qwen25-rl synth-data` writes the task data and the preference set into one folder, each
    with its own manifest."""
    out = tmp_path / "synth"
    argv = ["synth-data", "--out", str(out), "--seed", "2", "--arithmetic-train", "20", "--arithmetic-heldout", "5"]
    argv += ["--code-train", "4", "--code-heldout", "2", "--preference-prompts", "20", "--preference-heldout-fraction", "0.3"]
    rc = main(argv)
    stdout = capsys.readouterr().out
    assert rc == 0 and len(stdout.splitlines()) == 1
    summary = json.loads(stdout)
    prefs = summary["preferences"]
    assert {k: v["prompts"] for k, v in prefs.items()} == {"train": 14, "heldout": 6}
    assert {k: v["rows"] for k, v in prefs.items()} == {"train": 14 * 8, "heldout": 6 * 8}  # 8 pairs per prompt
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["params"]["seed"] == 2 and manifest["params"]["heldout_fraction"] == 0.3
    assert prefs["train"]["missing_labels"] == manifest["splits"]["train"]["missing_labels"]
    assert all(len(rows_of(out / name)) == prefs[split]["rows"] for split, name in FILES.items())
    assert json.loads((out / "manifest.json").read_text())["spec"]["arithmetic_train"] == 20  # the task data's own


def test_a_bad_preference_argument_is_an_error_without_a_traceback(tmp_path, capsys):
    rc = main(["synth-data", "--out", str(tmp_path), "--arithmetic-train", "4", "--code-train", "2", "--preference-heldout-fraction", "2"])
    assert rc == 2 and "heldout_fraction must be between 0 and 1" in capsys.readouterr().err

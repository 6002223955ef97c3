"""Preference files for reward-model training (JSONL or Parquet), labelled per criterion.

A row is a DPO pair row (`prompt`, `chosen`, `rejected`, optional `margin`: parsed by
`qwen25_rl.data.pairs.load_pairs`, with the same checks and length rules) plus the labels:

    preferences  {criterion: label}  label: 1 or "chosen" (the chosen response is better on
                 that criterion), -1 or "rejected", 0 or "tie", null (no label). A criterion
                 the row does not name has no label either.
    ratings      {criterion: {"chosen": number, "rejected": number}}  absolute ratings for
                 the regression loss; either side may be absent or null.

A row with neither `preferences` nor `ratings` means "chosen is better" when exactly one
criterion is configured (a plain pair file trains a one-output reward model) and is an error
otherwise. Criteria not in the configured list, and label values outside the forms above, are
errors naming the row's file:line and key. A missing label is masked (not a zero target) and
counted; a tie is a label that adds no Bradley-Terry term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from qwen25_rl.data.pairs import load_pairs
from qwen25_rl.data.prompts import DatasetError

PREFERENCES_KEY = "preferences"
RATINGS_KEY = "ratings"
# Label spellings -> preference value; bools are refused separately (True == 1 in Python).
_LABELS: dict[Any, float] = {1: 1.0, "chosen": 1.0, -1: -1.0, "rejected": -1.0, 0: 0.0, "tie": 0.0}
_SIDES = ("chosen", "rejected")


@dataclass
class PreferenceRecord:
    index: int  # position among the records loaded
    location: str  # "file:line" it was read from
    prompt_id: str  # the prompt as the model sees it: pairs sharing it must share a split
    chosen_ids: list[int]  # the whole sequence to score: prompt ids + chosen response ids
    rejected_ids: list[int]  # prompt ids + rejected response ids
    preference: list[float]  # per criterion: +1 chosen better, -1 rejected better, 0 tie or no label
    labelled: list[bool]  # per criterion: False only where the label is missing (a tie is labelled)
    chosen_rating: list[float]  # per criterion, NaN where not rated
    rejected_rating: list[float]
    margin: float | None
    chosen_text: str
    rejected_text: str
    prompt_text: str
    extra: dict[str, Any] = field(default_factory=dict)  # other columns (e.g. criterion, prompt_id)


def load_preferences(
    files: list[str],
    tokenizer,
    criteria: list[str] | tuple[str, ...],
    *,
    prompt_key: str = "prompt",
    chosen_key: str = "chosen",
    rejected_key: str = "rejected",
    margin_key: str = "margin",
    apply_chat_template: bool = True,
    max_length: int | None = None,
    on_long: Literal["drop", "truncate", "error"] = "drop",
    vocab_size: int | None = None,
) -> tuple[list[PreferenceRecord], dict[str, Any]]:
    """All labelled pairs of `files`, tokenised; returns (records, stats).

    Rows are read, tokenised and length-checked by `load_pairs` (`max_length` limits the prompt
    plus the longer response; `on_long` is its `on_long_pair`), so text, chat and token-id rows
    all work as in DPO pair files. Stats: rows, pairs, dropped (too_long +
    identical_after_truncation, also given apart), truncated, and per criterion: labelled
    (rows with a label, ties included), ties, missing_labels (rows without a label) and ratings
    (rated responses: a row rating both sides counts twice).
    """
    criteria = list(criteria)
    if not criteria:
        raise ValueError("criteria must name at least one criterion")
    if len(set(criteria)) != len(criteria):
        raise ValueError(f"criteria must be distinct, got {criteria}")
    pairs, dropped = load_pairs(
        files,
        tokenizer,
        prompt_key=prompt_key,
        chosen_key=chosen_key,
        rejected_key=rejected_key,
        margin_key=margin_key,
        apply_chat_template=apply_chat_template,
        max_length=max_length,
        on_long_pair=on_long,
        vocab_size=vocab_size,
    )
    per_criterion = {name: dict.fromkeys(criteria, 0) for name in ("labelled", "ties", "missing_labels", "ratings")}
    records: list[PreferenceRecord] = []
    for pair in pairs:
        extra = dict(pair.extra)
        prefs = extra.pop(PREFERENCES_KEY, None)
        ratings = extra.pop(RATINGS_KEY, None)
        preference, labelled = _preferences(pair.location, prefs, ratings, criteria)
        chosen_rating, rejected_rating = _ratings(pair.location, ratings, criteria)
        for j, name in enumerate(criteria):
            per_criterion["labelled"][name] += labelled[j]
            per_criterion["ties"][name] += labelled[j] and preference[j] == 0.0
            per_criterion["missing_labels"][name] += not labelled[j]
            per_criterion["ratings"][name] += (not math.isnan(chosen_rating[j])) + (not math.isnan(rejected_rating[j]))
        records.append(
            PreferenceRecord(
                index=len(records),
                location=pair.location,
                prompt_id=pair.prompt_text,
                chosen_ids=pair.prompt_ids + pair.chosen_ids,
                rejected_ids=pair.prompt_ids + pair.rejected_ids,
                preference=preference,
                labelled=labelled,
                chosen_rating=chosen_rating,
                rejected_rating=rejected_rating,
                margin=pair.margin,
                chosen_text=pair.chosen_text,
                rejected_text=pair.rejected_text,
                prompt_text=pair.prompt_text,
                extra=extra,
            )
        )
    n_dropped = dropped["too_long"] + dropped["identical_after_truncation"]
    # load_pairs keeps every row it neither drops nor rejects, so the row count follows.
    stats: dict[str, Any] = {"rows": len(records) + n_dropped, "pairs": len(records), "dropped": n_dropped, **dropped}
    stats.update(per_criterion)
    return records, stats


def preference_arrays(records: list[PreferenceRecord], pad_id: int, num_criteria: int) -> dict[str, np.ndarray]:
    """The records as arrays: chosen_ids / rejected_ids int64 [P, L] right-padded with `pad_id`
    (L = the longest sequence of either side, so both sides batch together), chosen_len /
    rejected_len int64 [P], preference float32 [P, C], labelled bool [P, C], chosen_rating /
    rejected_rating float32 [P, C] (NaN where not rated), margin float32 [P] (0 where unset)."""
    for r in records:
        for name in ("preference", "labelled", "chosen_rating", "rejected_rating"):
            if len(getattr(r, name)) != num_criteria:
                raise ValueError(f"record {r.index} ({r.location}) has {len(getattr(r, name))} {name} values, expected {num_criteria}")
    width = max((max(len(r.chosen_ids), len(r.rejected_ids)) for r in records), default=0)
    out: dict[str, np.ndarray] = {}
    for side in _SIDES:
        ids = np.full((len(records), width), pad_id, dtype=np.int64)
        lengths = np.zeros(len(records), dtype=np.int64)
        for i, r in enumerate(records):
            seq = getattr(r, f"{side}_ids")
            ids[i, : len(seq)] = seq
            lengths[i] = len(seq)
        out[f"{side}_ids"], out[f"{side}_len"] = ids, lengths
    shape = (len(records), num_criteria)
    out["preference"] = np.array([r.preference for r in records], dtype=np.float32).reshape(shape)
    out["labelled"] = np.array([r.labelled for r in records], dtype=bool).reshape(shape)
    out["chosen_rating"] = np.array([r.chosen_rating for r in records], dtype=np.float32).reshape(shape)
    out["rejected_rating"] = np.array([r.rejected_rating for r in records], dtype=np.float32).reshape(shape)
    out["margin"] = np.array([r.margin if r.margin is not None else 0.0 for r in records], dtype=np.float32)
    return out


# ----------------------------------------------------------------------------------------------
# Labels


def _criterion_map(location: str, value: Any, key: str, criteria: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DatasetError(f"{location}: {key!r} must be a mapping {{criterion: ...}}, got {type(value).__name__}")
    unknown = [k for k in value if k not in criteria]
    if unknown:
        raise DatasetError(f"{location}: {key!r} names unknown criterion {unknown[0]!r}; the configured criteria are {criteria}")
    return value


def _preferences(location: str, prefs: Any, ratings: Any, criteria: list[str]) -> tuple[list[float], list[bool]]:
    if prefs is None:
        if ratings is not None:
            # A ratings-only row trains the regression head; it claims no preference.
            return [0.0] * len(criteria), [False] * len(criteria)
        if len(criteria) == 1:
            return [1.0], [True]
        raise DatasetError(
            f"{location}: row has no {PREFERENCES_KEY!r} (or {RATINGS_KEY!r}) labels; with several criteria each row must say "
            f"on which it prefers the chosen response, e.g. {{{criteria[0]!r}: 'chosen'}}; criteria are {criteria}"
        )
    prefs = _criterion_map(location, prefs, PREFERENCES_KEY, criteria)
    preference, labelled = [], []
    for name in criteria:
        value = prefs.get(name)
        if value is None:
            preference.append(0.0)
            labelled.append(False)
            continue
        # float 1.0 (a Parquet column of mixed labels) is accepted; True is not a label
        label = None if isinstance(value, bool) or not isinstance(value, (int, float, str)) else _LABELS.get(value)
        if label is None:
            raise DatasetError(
                f"{location}: {PREFERENCES_KEY}.{name} must be 1 / 'chosen', -1 / 'rejected', 0 / 'tie' or null, got {value!r}"
            )
        preference.append(label)
        labelled.append(True)
    return preference, labelled


def _ratings(location: str, ratings: Any, criteria: list[str]) -> tuple[list[float], list[float]]:
    chosen, rejected = [math.nan] * len(criteria), [math.nan] * len(criteria)
    if ratings is None:
        return chosen, rejected
    ratings = _criterion_map(location, ratings, RATINGS_KEY, criteria)
    for j, name in enumerate(criteria):
        value = ratings.get(name)
        if value is None:
            continue
        key = f"{RATINGS_KEY}.{name}"
        if not isinstance(value, dict):
            raise DatasetError(f"{location}: {key} must be a mapping {{'chosen': number, 'rejected': number}}, got {value!r}")
        extra = sorted(set(value) - set(_SIDES))
        if extra:
            raise DatasetError(f"{location}: {key} has unknown keys {extra}; expected 'chosen' and/or 'rejected'")
        for side, out in zip(_SIDES, (chosen, rejected)):
            x = value.get(side)
            if x is None:
                continue
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise DatasetError(f"{location}: {key}.{side} must be a finite number or null, got {x!r}")
            out[j] = float(x)
    return chosen, rejected

"""Preference-pair files for DPO (JSONL or Parquet): what the `pairs` mode trains on, and what
each sampling round writes.

A row has `prompt` (text, wrapped as one user turn by the chat template exactly as prompt files
are, or a chat ending with the user's turn), `chosen` and `rejected` (the responses: text, or
TRL's conversational form, a list holding the one assistant message), an optional `margin`, and
any other columns (kept as extras, e.g. answer, scores, round). A response's tokens are its
text's tokens followed by the end-of-turn token (`<|im_end|>`, the tokenizer's EOS), as in SFT
data, so DPO also teaches where to stop.

Rows written by our sampler (and by `write_pairs`) also carry the token ids `prompt_ids`,
`chosen_ids`, `rejected_ids`, which are used as they are (the texts are then for display only),
and may carry the reference model's summed log-probs `ref_chosen_logp` / `ref_rejected_logp`.
Every row is checked at load time: a bad row is an error naming its file:line and key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from qwen25_rl.batch import TensorBatch
from qwen25_rl.checkpointing import atomic_write
from qwen25_rl.data.prompts import DatasetError, _chat, _prompt_text, read_rows

ID_KEYS = ("prompt_ids", "chosen_ids", "rejected_ids")
REF_KEYS = ("ref_chosen_logp", "ref_rejected_logp")
ON_LONG_PAIR = ("drop", "truncate", "error")


@dataclass
class PairRecord:
    index: int  # position among the pairs loaded
    location: str  # "file:line" it was read from
    prompt_ids: list[int]
    chosen_ids: list[int]  # response tokens, ending with the end-of-turn token (EOS) unless truncated
    rejected_ids: list[int]
    prompt_text: str
    chosen_text: str
    rejected_text: str
    margin: float | None = None
    ref_chosen_logp: float | None = None  # stored summed reference log-probs, if present
    ref_rejected_logp: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # other columns (e.g. answer, scores, round)


def load_pairs(
    files: list[str],
    tokenizer,
    *,
    prompt_key: str = "prompt",
    chosen_key: str = "chosen",
    rejected_key: str = "rejected",
    margin_key: str = "margin",
    apply_chat_template: bool = True,
    max_prompt_length: int | None = None,
    max_length: int | None = None,
    on_long_pair: Literal["drop", "truncate", "error"] = "drop",
    vocab_size: int | None = None,
) -> tuple[list[PairRecord], dict[str, int]]:
    """All pairs of `files`, tokenised; returns (records, counts of what was dropped or cut).

    `max_prompt_length` limits the prompt's tokens, `max_length` the prompt's plus the longer
    response's. A pair over a limit is, by `on_long_pair`: "drop"ped (counted under too_long),
    "truncate"d (its responses cut to fit, the prompt kept whole: counted under truncated; a
    prompt over the limit by itself is dropped as too_long, and a pair whose responses become
    identical when cut under identical_after_truncation; stored reference log-probs of a cut pair
    are discarded, they scored the whole responses), or an "error".

    Token-id rows are checked against `vocab_size` (the model's embedding rows, which may
    exceed the tokenizer's length: a sampler can emit the padding rows' ids), default
    len(tokenizer).
    """
    if on_long_pair not in ON_LONG_PAIR:
        raise ValueError(f"on_long_pair must be one of {list(ON_LONG_PAIR)}, got {on_long_pair!r}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DatasetError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no end-of-turn (EOS) token to end responses with")
    keys = (prompt_key, chosen_key, rejected_key)
    reserved = {*keys, margin_key, *ID_KEYS, *REF_KEYS}
    records: list[PairRecord] = []
    dropped = {"too_long": 0, "truncated": 0, "identical_after_truncation": 0}
    rows = 0
    for path in files:
        for location, row in read_rows(path):
            rows += 1
            has_ids = [k for k in ID_KEYS if row.get(k) is not None]
            if has_ids:
                record = _id_row(location, row, tokenizer, keys, has_ids, apply_chat_template, vocab_size)
            else:
                record = _text_row(location, row, tokenizer, keys, eos, apply_chat_template)
            record.index = len(records)
            record.margin = _margin(location, row, margin_key)
            record.ref_chosen_logp, record.ref_rejected_logp = _ref_logps(location, row)
            record.extra = {k: v for k, v in row.items() if k not in reserved}
            if record.chosen_ids == record.rejected_ids:
                names = "'chosen_ids' and 'rejected_ids'" if has_ids else f"{chosen_key!r} and {rejected_key!r}"
                raise DatasetError(
                    f"{location}: {names} are identical ({len(record.chosen_ids)} tokens); a pair needs two different responses"
                )
            cause = _fit(record, tokenizer, max_prompt_length, max_length, on_long_pair)
            if cause is not None:
                dropped[cause] += 1
                if cause != "truncated":
                    continue
            records.append(record)
    if not records:
        raise DatasetError(
            f"no usable pairs in {files}: {rows} rows, {dropped['too_long']} longer than the length limits "
            f"(max_prompt_length={max_prompt_length}, max_length={max_length}), "
            f"{dropped['identical_after_truncation']} identical once truncated"
        )
    return records, dropped


def write_pairs(path: str | Path, records: list[PairRecord]) -> None:
    """Write `records` as JSON lines, atomically: every field `load_pairs` needs to read them
    back equal (texts, the three token-id lists, margin, reference log-probs where set, extras
    as columns of their own). `index` and `location` are where a record is loaded, not data."""
    lines = []
    for rec in records:
        row: dict[str, Any] = {
            "prompt": rec.prompt_text,
            "chosen": rec.chosen_text,
            "rejected": rec.rejected_text,
            "prompt_ids": list(rec.prompt_ids),
            "chosen_ids": list(rec.chosen_ids),
            "rejected_ids": list(rec.rejected_ids),
            "margin": rec.margin,
        }
        if (rec.ref_chosen_logp is None) != (rec.ref_rejected_logp is None):
            raise ValueError(f"pair {rec.index} ({rec.location}) has one reference log-prob but not the other")
        if rec.ref_chosen_logp is not None:
            row.update(ref_chosen_logp=rec.ref_chosen_logp, ref_rejected_logp=rec.ref_rejected_logp)
        clash = sorted(set(rec.extra) & (set(row) | set(REF_KEYS)))
        if clash:
            raise ValueError(f"pair {rec.index} ({rec.location}): extra columns {clash} would overwrite the pair's own fields")
        row.update(rec.extra)
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, "".join(lines))


def pair_batch(records: list[PairRecord], pad_id: int) -> TensorBatch:
    """The pairs as tensors: prompt_ids / prompt_mask [P, Lp] left-padded (pad_id / 0),
    chosen_ids / chosen_mask [P, Lc] and rejected_ids / rejected_mask [P, Lr] right-padded,
    margin [P] float32 (0 where unset), ref_chosen_logps / ref_rejected_logps [P] float32 only
    when every pair has them; meta pair_index (each record's index)."""
    prompt_ids, prompt_mask = _padded([r.prompt_ids for r in records], pad_id, left=True)
    chosen_ids, chosen_mask = _padded([r.chosen_ids for r in records], pad_id, left=False)
    rejected_ids, rejected_mask = _padded([r.rejected_ids for r in records], pad_id, left=False)
    tensors = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "chosen_ids": chosen_ids,
        "chosen_mask": chosen_mask,
        "rejected_ids": rejected_ids,
        "rejected_mask": rejected_mask,
        "margin": torch.tensor([r.margin if r.margin is not None else 0.0 for r in records], dtype=torch.float32),
    }
    if records and all(r.ref_chosen_logp is not None and r.ref_rejected_logp is not None for r in records):
        tensors["ref_chosen_logps"] = torch.tensor([r.ref_chosen_logp for r in records], dtype=torch.float32)
        tensors["ref_rejected_logps"] = torch.tensor([r.ref_rejected_logp for r in records], dtype=torch.float32)
    return TensorBatch(tensors, {"pair_index": [r.index for r in records]})


# ----------------------------------------------------------------------------------------------
# Rows


def _field(location: str, row: dict[str, Any], key: str) -> Any:
    if row.get(key) is None:
        raise DatasetError(f"{location}: row has no {key!r} field; keys: {sorted(row)}")
    return row[key]


def _prompt_messages(location: str, value: Any, key: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list):
        return _chat(location, value, key)
    raise DatasetError(
        f"{location}: {key!r} must be text or a list of chat messages ending with the user's turn, got {type(value).__name__}"
    )


def _response_text(location: str, value: Any, key: str) -> str:
    """A response given as text, or as a list holding one assistant message."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise DatasetError(f"{location}: {key!r} must be text or a list holding one assistant message, got {type(value).__name__}")
    for j, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DatasetError(f"{location}: {key}[{j}] must have 'role' and 'content'")
        if m["role"] != "assistant":
            raise DatasetError(
                f"{location}: {key}[{j}] has role {m['role']!r}; a response holds the assistant's message only "
                "(the conversation before it belongs in the prompt)"
            )
        if not isinstance(m["content"], str):
            raise DatasetError(f"{location}: {key}[{j}] content must be text, got {type(m['content']).__name__}")
    if len(value) != 1:
        raise DatasetError(f"{location}: {key!r} must hold exactly one assistant message, got {len(value)}")
    return value[0]["content"]


def _text_row(location, row, tokenizer, keys, eos: int, apply_chat_template: bool) -> PairRecord:
    prompt_key, chosen_key, rejected_key = keys
    messages = _prompt_messages(location, _field(location, row, prompt_key), prompt_key)
    prompt_text = _prompt_text(location, messages, tokenizer, apply_chat_template, prompt_key)
    chosen_text = _response_text(location, _field(location, row, chosen_key), chosen_key)
    rejected_text = _response_text(location, _field(location, row, rejected_key), rejected_key)
    return PairRecord(
        index=-1,
        location=location,
        prompt_ids=tokenizer.encode(prompt_text, add_special_tokens=False),
        chosen_ids=tokenizer.encode(chosen_text, add_special_tokens=False) + [eos],
        rejected_ids=tokenizer.encode(rejected_text, add_special_tokens=False) + [eos],
        prompt_text=prompt_text,
        chosen_text=chosen_text,
        rejected_text=rejected_text,
    )


def _id_row(location, row, tokenizer, keys, has_ids: list[str], apply_chat_template: bool, vocab_size: int | None = None) -> PairRecord:
    """A row with token ids: the ids as they are; texts as given (for display) or decoded."""
    missing = [k for k in ID_KEYS if k not in has_ids]
    if missing:
        raise DatasetError(f"{location}: row has {has_ids} but no {missing}: give all three token-id columns or none; keys: {sorted(row)}")
    vocab = vocab_size or len(tokenizer)
    ids = {k: _token_ids(location, row[k], k, vocab) for k in ID_KEYS}
    prompt_key, chosen_key, rejected_key = keys
    prompt = row.get(prompt_key)
    if prompt is None or isinstance(prompt, str):
        prompt_text = prompt if prompt is not None else tokenizer.decode(ids["prompt_ids"], skip_special_tokens=False)
    else:
        messages = _prompt_messages(location, prompt, prompt_key)
        prompt_text = _prompt_text(location, messages, tokenizer, apply_chat_template, prompt_key)
    texts = []
    for key, id_key in ((chosen_key, "chosen_ids"), (rejected_key, "rejected_ids")):
        value = row.get(key)
        if value is None:
            tokens = ids[id_key][:-1] if ids[id_key][-1] == tokenizer.eos_token_id else ids[id_key]
            texts.append(tokenizer.decode(tokens, skip_special_tokens=False))
        else:
            texts.append(_response_text(location, value, key))
    return PairRecord(-1, location, ids["prompt_ids"], ids["chosen_ids"], ids["rejected_ids"], prompt_text, *texts)


def _token_ids(location: str, value: Any, key: str, vocab: int) -> list[int]:
    if not isinstance(value, list) or not value:
        raise DatasetError(f"{location}: {key!r} must be a non-empty list of token ids, got {_describe(value)}")
    for j, t in enumerate(value):
        if isinstance(t, bool) or not isinstance(t, int):
            raise DatasetError(f"{location}: {key}[{j}] must be a token id (int), got {type(t).__name__}")
        if not 0 <= t < vocab:
            raise DatasetError(f"{location}: {key}[{j}] = {t} is outside the tokenizer's vocabulary [0, {vocab})")
    return list(value)


def _describe(value: Any) -> str:
    return "an empty list" if value == [] else type(value).__name__


def _number(location: str, value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DatasetError(f"{location}: {key!r} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise DatasetError(f"{location}: {key!r} must be finite, got {value}")
    return float(value)


def _margin(location: str, row: dict[str, Any], key: str) -> float | None:
    value = row.get(key)
    return None if value is None else _number(location, value, key)


def _ref_logps(location: str, row: dict[str, Any]) -> tuple[float | None, float | None]:
    present = [k for k in REF_KEYS if row.get(k) is not None]
    if not present:
        return None, None
    if len(present) == 1:
        missing = next(k for k in REF_KEYS if k not in present)
        raise DatasetError(f"{location}: row has {present[0]!r} but no {missing!r}: give both reference log-probs or neither")
    chosen, rejected = (_number(location, row[k], k) for k in REF_KEYS)
    return chosen, rejected


def _fit(record: PairRecord, tokenizer, max_prompt_length: int | None, max_length: int | None, on_long_pair: str) -> str | None:
    """Apply the length limits to `record` (cutting its responses in place under "truncate");
    returns what happened to it (a key of the dropped counts) or None when it fits as it is."""
    p, c, r = len(record.prompt_ids), len(record.chosen_ids), len(record.rejected_ids)
    if max_prompt_length is not None and p > max_prompt_length:
        if on_long_pair == "error":
            raise DatasetError(f"{record.location}: prompt has {p} tokens, more than max_prompt_length={max_prompt_length}")
        return "too_long"
    if max_length is None or p + max(c, r) <= max_length:
        return None
    if on_long_pair == "error":
        raise DatasetError(
            f"{record.location}: pair has {p} prompt + {max(c, r)} response tokens (chosen {c}, rejected {r}) = {p + max(c, r)}, "
            f"more than max_length={max_length}"
        )
    budget = max_length - p
    if on_long_pair == "drop" or budget < 1:
        return "too_long"
    if c > budget:
        record.chosen_ids = record.chosen_ids[:budget]
        record.chosen_text = tokenizer.decode(record.chosen_ids, skip_special_tokens=False)
    if r > budget:
        record.rejected_ids = record.rejected_ids[:budget]
        record.rejected_text = tokenizer.decode(record.rejected_ids, skip_special_tokens=False)
    if record.chosen_ids == record.rejected_ids:
        return "identical_after_truncation"
    record.ref_chosen_logp = record.ref_rejected_logp = None
    return "truncated"


def _padded(seqs: list[list[int]], pad_id: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            cols = slice(width - len(s), width) if left else slice(0, len(s))
            ids[i, cols] = torch.tensor(s, dtype=torch.long)
            mask[i, cols] = 1
    return ids, mask

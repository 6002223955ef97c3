"""Prompt datasets for the RL stages (JSONL or Parquet).

A row has `prompt` (text; wrapped as one user turn by the chat template) or `messages` (a
chat, ending with a user turn), plus optional `answer` / `tests` (what the reward compares
against), `data_source`, and any other columns (kept as extras for custom rewards). Every row
is checked at load time: a bad row is an error naming the file and line, never a crash at
step 300.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen25_rl.errors import UserValueError

VALID_ROLES = {"system", "user", "assistant", "tool"}


class DatasetError(UserValueError):
    """A dataset file or row is invalid; the message names the file and row."""


@dataclass
class PromptRecord:
    index: int  # position in the dataset (stable across runs: the resume position refers to it)
    prompt_ids: list[int]
    prompt_text: str
    answer: Any = None
    data_source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # The conversation as given (a `prompt` row: one user turn), before any chat template: what
    # a reward model with its own template renders.
    messages: list[dict[str, str]] = field(default_factory=list)


def read_rows(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """(location, row) pairs of a JSONL or Parquet file; location is `file:line` / `file:row`."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: file not found")
    rows: list[tuple[str, dict[str, Any]]] = []
    if p.suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(p).to_pylist()):
            rows.append((f"{p}:row {i}", row))
    elif p.suffix in (".jsonl", ".json"):
        with p.open() as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DatasetError(f"{p}:{i}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise DatasetError(f"{p}:{i}: expected a JSON object, got {type(row).__name__}")
                rows.append((f"{p}:{i}", row))
    else:
        raise DatasetError(f"{p}: unsupported file type {p.suffix!r} (use .jsonl or .parquet)")
    if not rows:
        raise DatasetError(f"{p}: no rows")
    return rows


def _chat(location: str, messages: Any, key: str = "messages") -> list[dict[str, str]]:
    """`messages` (the row's `key` column) checked as a chat that ends with the user's turn."""
    if not isinstance(messages, list) or not messages:
        raise DatasetError(f"{location}: {key!r} must be a non-empty list of {{role, content}}")
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DatasetError(f"{location}: {key}[{j}] must have 'role' and 'content'")
        if m["role"] not in VALID_ROLES:
            raise DatasetError(f"{location}: {key}[{j}] has unknown role {m['role']!r} (expected one of {sorted(VALID_ROLES)})")
        if not isinstance(m["content"], str):
            raise DatasetError(f"{location}: {key}[{j}] content must be text, got {type(m['content']).__name__}")
    if messages[-1]["role"] != "user":
        raise DatasetError(f"{location}: the last message must be the user's turn to answer, got {messages[-1]['role']!r}")
    return messages


def _prompt_text(location: str, messages: list[dict[str, str]], tokenizer, apply_chat_template: bool, key: str = "messages") -> str:
    """The prompt as the model sees it: the chat template with the assistant turn opened, or
    (apply_chat_template false) the single turn's text as it is."""
    if apply_chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if len(messages) == 1:
        return messages[0]["content"]
    raise DatasetError(f"{location}: a multi-turn {key!r} row needs data.apply_chat_template: true")


def load_prompts(
    files: list[str],
    tokenizer,
    *,
    prompt_key: str = "prompt",
    messages_key: str = "messages",
    answer_key: str = "answer",
    apply_chat_template: bool = True,
    max_prompt_length: int | None = None,
    on_long_prompt: str = "drop",
) -> tuple[list[PromptRecord], dict[str, int]]:
    """All prompts of `files`, tokenised; returns (records, counts of what was dropped)."""
    records: list[PromptRecord] = []
    dropped = {"too_long": 0}
    for path in files:
        for location, row in read_rows(path):
            if messages_key in row and row[messages_key] is not None:
                messages = _chat(location, row[messages_key])
            elif prompt_key in row and isinstance(row[prompt_key], str):
                messages = [{"role": "user", "content": row[prompt_key]}]
            else:
                raise DatasetError(f"{location}: row has neither {prompt_key!r} (text) nor {messages_key!r} (chat); keys: {sorted(row)}")
            text = _prompt_text(location, messages, tokenizer, apply_chat_template)
            ids = tokenizer.encode(text, add_special_tokens=False)
            if max_prompt_length is not None and len(ids) > max_prompt_length:
                if on_long_prompt == "error":
                    raise DatasetError(f"{location}: prompt has {len(ids)} tokens, more than data.max_prompt_length={max_prompt_length}")
                dropped["too_long"] += 1
                continue
            answer = row.get(answer_key, row.get("tests"))
            extra = {k: v for k, v in row.items() if k not in (prompt_key, messages_key, answer_key, "tests", "data_source")}
            records.append(PromptRecord(len(records), ids, text, answer, str(row.get("data_source") or ""), extra, messages))
    if not records:
        raise DatasetError(f"no usable prompts in {files} ({dropped['too_long']} longer than max_prompt_length)")
    return records, dropped


class PromptSampler:
    """Endless, deterministic, resumable prompt order: epoch e is a permutation seeded by
    (seed, e); `position` counts prompts handed out so far and is all the state there is."""

    def __init__(self, n: int, seed: int, shuffle: bool = True, position: int = 0):
        self.n, self.seed, self.shuffle, self.position = n, seed, shuffle, position
        self._epoch, self._order = -1, []

    def _order_of(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            import random

            order = list(range(self.n))
            if self.shuffle:
                random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._epoch, self._order = epoch, order
        return self._order

    def take(self, k: int) -> list[int]:
        out = []
        for _ in range(k):
            epoch, i = divmod(self.position, self.n)
            out.append(self._order_of(epoch)[i])
            self.position += 1
        return out

"""Reading pretraining documents and chat rows from files, with errors that name the row.

Formats: JSONL (one object per line; the document in `text_key`), Parquet (a string column
`text_key`), plain text (the whole file is one document). An empty file, a row without the
key, a non-string value or a line that is not JSON is an error naming the file and line,
never a silent skip: a corpus that quietly lost rows would change the mixture unnoticed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qwen25_rl.errors import UserValueError


class CorpusError(UserValueError):
    """A corpus or chat file is unusable; the message names the file (and line or row)."""


def detect_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    return "text"


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise CorpusError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise CorpusError(f"{path}: file is empty")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; bad JSON or a non-object is an error."""
    p = Path(path)
    _check_file(p)
    n = 0
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{p}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise CorpusError(f"{p}:{lineno}: expected a JSON object, got {type(row).__name__}")
            n += 1
            yield lineno, row
    if n == 0:
        raise CorpusError(f"{p}: file has no rows (only blank lines)")


def read_documents(path: str | Path, text_key: str = "text", fmt: str = "auto") -> Iterator[str]:
    """The documents of one file. Empty-string documents are kept out of the stream but are
    errors only when the whole file yields nothing."""
    p = Path(path)
    kind = detect_format(p, fmt)
    _check_file(p)
    if kind == "jsonl":
        for lineno, row in iter_jsonl(p):
            if text_key not in row:
                raise CorpusError(f"{p}:{lineno}: row has no {text_key!r} field (keys: {sorted(row)})")
            text = row[text_key]
            if not isinstance(text, str):
                raise CorpusError(f"{p}:{lineno}: {text_key!r} must be a string, got {type(text).__name__}")
            yield text
    elif kind == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(p)
        if table.num_rows == 0:
            raise CorpusError(f"{p}: parquet file has no rows")
        if text_key not in table.column_names:
            raise CorpusError(f"{p}: parquet file has no {text_key!r} column (columns: {table.column_names})")
        for i, text in enumerate(table.column(text_key).to_pylist()):
            if not isinstance(text, str):
                raise CorpusError(f"{p}: row {i}: {text_key!r} must be a string, got {type(text).__name__}")
            yield text
    elif kind == "text":
        text = p.read_text(encoding="utf-8", errors="strict")
        if not text.strip():
            raise CorpusError(f"{p}: file has only whitespace")
        yield text
    else:
        raise CorpusError(f"{p}: unknown corpus format {kind!r} (jsonl, parquet, text)")


def read_source(files: list[str], text_key: str = "text", fmt: str = "auto") -> list[str]:
    """All documents of a source, in file order. A source with no non-empty document is an error."""
    docs: list[str] = []
    for f in files:
        docs.extend(d for d in read_documents(f, text_key, fmt) if d)
    if not docs:
        raise CorpusError(f"source files {files} hold no non-empty document")
    return docs


CHAT_ROLES = ("system", "user", "assistant", "tool")


def validate_messages(messages: Any, where: str) -> list[dict[str, str]]:
    """Check one conversation; return it as plain {role, content} dicts.

    Rules (ChatML as the template renders it): a list of {role, content} objects with string
    content; roles from CHAT_ROLES; `system` only as the first message; at least one
    assistant message (SFT has nothing to learn otherwise).
    """
    if not isinstance(messages, list) or not messages:
        raise CorpusError(f"{where}: 'messages' must be a non-empty list, got {type(messages).__name__}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise CorpusError(f"{where}: message {i} must be an object with role and content, got {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in CHAT_ROLES:
            raise CorpusError(f"{where}: message {i} has unknown role {role!r} (expected one of {', '.join(CHAT_ROLES)})")
        if role == "system" and i != 0:
            raise CorpusError(f"{where}: message {i}: a system message may only come first")
        if not isinstance(content, str):
            raise CorpusError(f"{where}: message {i} ({role}) content must be a string, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise CorpusError(f"{where}: conversation has no assistant message (nothing to train on)")
    return out


def read_conversations(path: str | Path, messages_key: str = "messages") -> list[list[dict[str, str]]]:
    """All conversations of a chat JSONL file, validated."""
    p = Path(path)
    convs = []
    for lineno, row in iter_jsonl(p):
        if messages_key not in row:
            raise CorpusError(f"{p}:{lineno}: row has no {messages_key!r} field (keys: {sorted(row)})")
        convs.append(validate_messages(row[messages_key], f"{p}:{lineno}"))
    return convs

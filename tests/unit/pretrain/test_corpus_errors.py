"""Bad corpus and chat input fails with the file, line and key named."""

from __future__ import annotations

import json

import pytest

from qwen25_rl.pretrain.corpus import CorpusError, read_conversations, read_documents, read_source


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_empty_corpus_file_is_an_error(tmp_path):
    (tmp_path / "a.jsonl").write_text("")
    with pytest.raises(CorpusError, match=r"a\.jsonl: file is empty"):
        list(read_documents(tmp_path / "a.jsonl"))


def test_blank_lines_only_is_an_error(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n\n")
    with pytest.raises(CorpusError, match="no rows"):
        list(read_documents(tmp_path / "a.jsonl"))


def test_row_without_text_names_file_line_and_keys(tmp_path):
    p = _jsonl(tmp_path / "c.jsonl", [{"text": "ok"}, {"body": "x"}])
    with pytest.raises(CorpusError, match=r"c\.jsonl:2: row has no 'text' field \(keys: \['body'\]\)"):
        list(read_documents(p))


def test_non_string_text_and_bad_json_are_errors(tmp_path):
    with pytest.raises(CorpusError, match=r":1: 'text' must be a string"):
        list(read_documents(_jsonl(tmp_path / "n.jsonl", [{"text": 3}])))
    with pytest.raises(CorpusError, match=r":2: not valid JSON"):
        list(read_documents(_jsonl(tmp_path / "j.jsonl", [{"text": "a"}, "{oops"])))


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(CorpusError, match="file not found"):
        read_source([str(tmp_path / "nope.jsonl")])


def test_parquet_and_text_sources_are_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": ["one doc", "two doc"]}), tmp_path / "d.parquet")
    (tmp_path / "t.txt").write_text("a whole file\n")
    assert read_source([str(tmp_path / "d.parquet")], text_key="content") == ["one doc", "two doc"]
    assert read_source([str(tmp_path / "t.txt")]) == ["a whole file\n"]
    with pytest.raises(CorpusError, match="no 'text' column"):
        read_source([str(tmp_path / "d.parquet")])


def test_chat_row_without_messages_is_an_error(tmp_path):
    p = _jsonl(tmp_path / "s.jsonl", [{"conversation": []}])
    with pytest.raises(CorpusError, match=r"s\.jsonl:1: row has no 'messages' field"):
        read_conversations(p)


@pytest.mark.parametrize(
    "messages,match",
    [
        ([{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}], "message 1 has unknown role 'bot'"),
        (
            [{"role": "user", "content": "hi"}, {"role": "system", "content": "x"}, {"role": "assistant", "content": "y"}],
            "system message may only come first",
        ),
        ([{"role": "user", "content": "hi"}], "no assistant message"),
        ([{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}], "content must be a string"),
        ([], "non-empty list"),
    ],
)
def test_bad_conversations_are_errors_naming_the_row(tmp_path, messages, match):
    p = _jsonl(
        tmp_path / "s.jsonl",
        [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, {"messages": messages}],
    )
    with pytest.raises(CorpusError, match=r"s\.jsonl:2: .*" + match):
        read_conversations(p)

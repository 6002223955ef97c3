"""Tokenisation in parallel Ray tasks gives exactly the in-process result, in input order."""

from __future__ import annotations

import pytest

from qwen25_rl.data import generate_problems
from qwen25_rl.data.synthetic import arithmetic_document, arithmetic_messages
from qwen25_rl.models.tokenizer import build_tokenizer
from qwen25_rl.pretrain.prepare import tokenize_conversations, tokenize_documents

# Ray start-up plus task workers importing transformers: ~15 s idle, a minute when loaded.
pytestmark = pytest.mark.slow


def test_ray_tasks_tokenise_like_the_driver(tmp_path, local_ray):
    from qwen25_rl.pretrain.prepare import _tokenize_chats, _tokenize_texts

    problems, _ = generate_problems(90, 0, seed=0)
    docs = [arithmetic_document([p]) for p in problems]
    convs = [arithmetic_messages(p) for p in problems]
    tok = build_tokenizer(docs, vocab_size=400)
    tok.save_pretrained(tmp_path)
    parallel = tokenize_documents(tmp_path, docs, batch=20)  # 5 Ray tasks
    parallel_chats = tokenize_conversations(tmp_path, convs, batch=25)  # 4 Ray tasks
    # The same work in this process, in one piece.
    assert [a.tolist() for a in parallel] == [a.tolist() for a in _tokenize_texts(str(tmp_path), docs)]
    assert [a.tolist() for a in parallel] == [tok(d, add_special_tokens=False)["input_ids"] for d in docs]
    assert parallel_chats == _tokenize_chats(str(tmp_path), convs)

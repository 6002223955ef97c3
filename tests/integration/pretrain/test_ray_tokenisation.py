"""Tokenisation in parallel Ray tasks gives exactly the in-process result, in input order."""

from __future__ import annotations

import pytest

from qwen25_rl.pretrain.prepare import tokenize_conversations, tokenize_documents
from qwen25_rl.data import generate_problems
from qwen25_rl.data.synthetic import arithmetic_document, arithmetic_messages
from qwen25_rl.models.tokenizer import build_tokenizer

# Ray start-up plus task workers importing transformers: ~15 s idle, a minute when loaded.
pytestmark = pytest.mark.slow


def test_ray_tasks_tokenise_like_the_driver(tmp_path):
    import ray

    if ray.is_initialized():
        pytest.skip("another Ray instance is already initialised in this process")
    problems, _ = generate_problems(90, 0, seed=0)
    docs = [arithmetic_document([p]) for p in problems]
    convs = [arithmetic_messages(p) for p in problems]
    tok = build_tokenizer(docs, vocab_size=400)
    tok.save_pretrained(tmp_path)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 * 2**20, log_to_driver=False)
    try:
        parallel = tokenize_documents(tmp_path, docs, batch=20)  # 5 Ray tasks
        parallel_chats = tokenize_conversations(tmp_path, convs, batch=25)  # 4 Ray tasks
    finally:
        ray.shutdown()
    # Without Ray the same calls run in this process.
    assert [a.tolist() for a in parallel] == [a.tolist() for a in tokenize_documents(tmp_path, docs, batch=20)]
    assert [a.tolist() for a in parallel] == [tok(d, add_special_tokens=False)["input_ids"] for d in docs]
    assert parallel_chats == tokenize_conversations(tmp_path, convs, batch=25)

"""The assistant-only loss mask, checked token by token on a multi-turn conversation."""

from __future__ import annotations

import numpy as np
import pytest

from qwen25_rl.models.tokenizer import DEFAULT_SYSTEM_PROMPT, build_tokenizer
from qwen25_rl.pretrain.packing import IGNORE
from qwen25_rl.pretrain.sft_data import ChatTemplateError, assistant_token_mask, build_samples

CONVERSATION = [
    {"role": "user", "content": "Anna has 12 apples. She gets 7 more. How many now?"},
    {"role": "assistant", "content": "Anna has 12 + 7 = <<12+7=19>>19 apples.\n#### 19"},
    {"role": "user", "content": "Write add_3(x)."},
    {"role": "assistant", "content": "def add_3(x):\n    return x + 3"},
]


@pytest.fixture(scope="module")
def tokenizer():
    texts = [
        "Anna has 12 apples. She gets 7 more. How many now? Anna has 12 + 7 = 19 apples.\n#### 19\n",
        "def add_3(x):\n    return x + 3\nWrite a function. You are a helpful assistant.\n",
    ] * 20
    return build_tokenizer(texts, vocab_size=400)


def _segments(messages):
    """(text, trained) pieces of the ChatML rendering, written out by hand."""
    segs = [(f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n", False)]
    for m in messages:
        if m["role"] == "assistant":
            segs += [("<|im_start|>assistant\n", False), (m["content"] + "<|im_end|>", True), ("\n", False)]
        else:
            segs.append((f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n", False))
    return segs


def test_assistant_mask_matches_the_hand_built_one_token_by_token(tokenizer):
    ids, mask = assistant_token_mask(tokenizer, CONVERSATION)
    want_ids, want_mask = [], []
    for text, trained in _segments(CONVERSATION):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        want_ids += piece
        want_mask += [int(trained)] * len(piece)
    assert ids == want_ids
    assert mask == want_mask
    # Each assistant span decodes to exactly the reply plus its end token.
    spans, cur = [], []
    for i, m in zip(ids, mask):
        if m:
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    assert [tokenizer.decode(s) for s in spans] == [m["content"] + "<|im_end|>" for m in CONVERSATION if m["role"] == "assistant"]


def test_labels_train_only_assistant_tokens(tokenizer):
    ids, mask = assistant_token_mask(tokenizer, CONVERSATION)
    ((sample_ids, labels),) = build_samples([(ids, mask)], 10_000, "drop")[0]
    trained = labels != IGNORE
    # labels[i] is the target for position i: the next token, when that token is assistant text.
    np.testing.assert_array_equal(np.flatnonzero(trained) + 1, np.flatnonzero(mask))
    np.testing.assert_array_equal(labels[trained], np.asarray(ids)[np.flatnonzero(mask)])


def test_template_without_generation_markers_is_an_error(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = tok.chat_template.replace("{%- generation -%}", "").replace("{%- endgeneration -%}", "")
    with pytest.raises(ChatTemplateError, match="generation"):
        assistant_token_mask(tok, CONVERSATION)


def test_overlong_conversations_are_truncated_or_dropped_and_counted(tokenizer):
    short = assistant_token_mask(tokenizer, CONVERSATION[:2])
    long = assistant_token_mask(tokenizer, CONVERSATION)
    limit = len(short[0]) + 1
    samples, stats = build_samples([short, long], limit, "drop")
    assert len(samples) == 1 and stats.dropped_overlong == 1 and stats.truncated == 0
    samples, stats = build_samples([short, long], limit, "truncate")
    assert len(samples) == 2 and stats.truncated == 1 and all(len(s[0]) <= limit for s in samples)
    # Truncated before any assistant token: nothing to learn, dropped and counted.
    samples, stats = build_samples([long], 10, "truncate")
    assert samples == [] and stats.dropped_no_target == 1

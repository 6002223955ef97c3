"""The BPE tokenizer: Qwen2.5 control tokens, ChatML template, save/load."""

from __future__ import annotations

import pytest

from qwen25_rl.models import load_tokenizer
from qwen25_rl.models.tokenizer import CONTROL_TOKENS, DEFAULT_SYSTEM_PROMPT, train_bpe

QWEN25_CONTROL_STRINGS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]


def test_control_tokens_have_qwen25_strings_in_order_after_the_vocabulary(tiny_tokenizer):
    assert [s for s, _ in CONTROL_TOKENS] == QWEN25_CONTROL_STRINGS
    ids = tiny_tokenizer.convert_tokens_to_ids(QWEN25_CONTROL_STRINGS)
    first = len(tiny_tokenizer) - 22
    assert ids == list(range(first, first + 22))


def test_each_control_token_encodes_to_one_id(tiny_tokenizer):
    for s in QWEN25_CONTROL_STRINGS:
        assert tiny_tokenizer.encode(f"a{s}b", add_special_tokens=False)[1:-1] == [tiny_tokenizer.convert_tokens_to_ids(s)], s


def test_skip_special_tokens_drops_chat_tokens_but_keeps_tool_call(tiny_tokenizer):
    ids = tiny_tokenizer.encode("<|im_start|>hi<tool_call>x</tool_call><|im_end|>", add_special_tokens=False)
    assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == "hi<tool_call>x</tool_call>"


def test_roles_of_special_tokens(tiny_tokenizer):
    assert tiny_tokenizer.eos_token == "<|im_end|>" and tiny_tokenizer.pad_token == "<|endoftext|>"
    assert tiny_tokenizer.bos_token is None


def test_digits_are_split_one_per_token(tiny_tokenizer):
    ids = tiny_tokenizer.encode("12345", add_special_tokens=False)
    assert [tiny_tokenizer.decode([i]) for i in ids] == list("12345")


@pytest.mark.parametrize("text", ["héllo wörld ∑ 🚀", "  two  spaces\n\n\ttab", "x = 10**6 # comment", "日本語のテキスト"])
def test_any_text_round_trips(tiny_tokenizer, text):
    assert tiny_tokenizer.decode(tiny_tokenizer.encode(text, add_special_tokens=False)) == text


def test_chat_template_multi_turn_is_chatml_with_default_system(tiny_tokenizer):
    msgs = [
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": "5"},
        {"role": "user", "content": "And 4+4?"},
    ]
    text = tiny_tokenizer.apply_chat_template(msgs, tokenize=False)
    assert text == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
        "<|im_start|>assistant\n5<|im_end|>\n"
        "<|im_start|>user\nAnd 4+4?<|im_end|>\n"
    )


def test_generation_prompt_opens_assistant_turn_and_custom_system_is_kept(tiny_tokenizer):
    msgs = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]
    text = tiny_tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_unknown_role_raises(tiny_tokenizer):
    with pytest.raises(Exception, match="unknown chat role narrator"):
        tiny_tokenizer.apply_chat_template([{"role": "narrator", "content": "x"}], tokenize=False)


def test_assistant_mask_covers_exactly_assistant_text_and_im_end(tiny_tokenizer):
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    enc = tiny_tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    masked = [i for i, m in zip(ids, mask) if m]
    assert tiny_tokenizer.decode(masked) == "yo<|im_end|>"


def test_saved_tokenizer_loads_with_autotokenizer_and_keeps_template(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    assert tok.convert_tokens_to_ids("<|im_end|>") == len(tok) - 20
    assert tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n"
    )


def test_empty_corpus_is_rejected():
    with pytest.raises(ValueError, match="corpus is empty"):
        train_bpe(["", "  "])

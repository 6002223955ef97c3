"""Byte-level BPE tokenizer with Qwen2.5's control tokens and the ChatML chat template.

The pre-tokenizer follows Qwen2's: single digits (so numbers are spelled digit by digit,
which arithmetic rewards rely on), letters with an optional leading non-letter, punctuation
runs, newlines; then a byte-level mapping so every string is encodable. The 22 control tokens
come right after the learned vocabulary, in Qwen2.5's order, so their relative ids match.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from qwen25_rl.errors import UserPathError

# (string, special) in Qwen2.5's order. "special" mirrors Qwen2.5's tokenizer: the tool-call
# and FIM/repo tokens are added tokens that are NOT skipped when decoding with
# skip_special_tokens=True.
CONTROL_TOKENS: list[tuple[str, bool]] = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]

EOS_TOKEN = "<|im_end|>"  # end of an assistant turn: what generation stops on
PAD_TOKEN = "<|endoftext|>"  # also the document separator in pretraining
DOC_SEPARATOR = "<|endoftext|>"

_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# ChatML. The system turn is inserted with a default prompt when the conversation has none
# (as Qwen2.5's template does); `{% generation %}` marks assistant text so transformers can
# return the assistant-token mask that SFT trains on.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' -}}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' -}}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- elif message['role'] in ['user', 'tool'] -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- else -%}"
    "{{- raise_exception('unknown chat role ' ~ message['role'] ~ ' (expected system first, then user, assistant or tool)') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def _base_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE on `texts`; the control tokens take the last 22 ids.

    `vocab_size` counts the learned tokens plus the 256 byte tokens, not the control tokens.
    """
    n_control = len(CONTROL_TOKENS)
    if vocab_size < 257:
        raise ValueError(f"vocab_size must be at least 257 (256 bytes + merges), got {vocab_size}")
    tok = _base_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    texts = list(texts)
    if not any(t.strip() for t in texts):
        raise ValueError("tokenizer corpus is empty")
    tok.train_from_iterator(texts, trainer=trainer)
    from tokenizers import AddedToken

    added = [AddedToken(s, special=sp, normalized=False) for s, sp in CONTROL_TOKENS]
    # add_tokens for the non-special ones keeps them un-skipped on decode, like Qwen2.5.
    for t, (_, sp) in zip(added, CONTROL_TOKENS):
        (tok.add_special_tokens if sp else tok.add_tokens)([t])
    first = tok.token_to_id(CONTROL_TOKENS[0][0])
    assert first == tok.get_vocab_size() - n_control, "control tokens must follow the learned vocabulary"
    return tok


def wrap_hf(tok: Tokenizer, model_max_length: int = 32768):
    """A `transformers` fast tokenizer around `tok`, with Qwen2.5's special-token roles."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        bos_token=None,
        unk_token=None,
        additional_special_tokens=[s for s, sp in CONTROL_TOKENS if sp and s not in (EOS_TOKEN, PAD_TOKEN)],
        model_max_length=model_max_length,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def build_tokenizer(texts: Iterable[str], vocab_size: int = 4096, model_max_length: int = 32768):
    """Train on `texts` and return the HF tokenizer (save it with `.save_pretrained(dir)`)."""
    return wrap_hf(train_bpe(texts, vocab_size=vocab_size), model_max_length=model_max_length)


def read_corpus(paths: Iterable[str | Path], text_key: str = "text") -> Iterator[str]:
    """Texts from plain-text files (one document per file) or JSONL files (`text_key` per row)."""
    import json

    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise UserPathError(f"tokenizer corpus file not found: {p}")
        if p.suffix == ".jsonl":
            with p.open() as f:
                for i, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    row = json.loads(line)
                    if text_key not in row:
                        raise KeyError(f"{p}:{i}: row has no {text_key!r} field (keys: {sorted(row)})")
                    yield row[text_key]
        else:
            yield p.read_text(encoding="utf-8", errors="replace")


def builtin_corpus(max_chars: int = 2_000_000) -> list[str]:
    """A corpus available offline on any machine: Python standard-library sources plus
    arithmetic text. Enough for a tiny model's tokenizer when no corpus is given."""
    import random
    import sysconfig

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    total = 0
    for name in sorted(p.name for p in stdlib.glob("*.py")):
        text = (stdlib / name).read_text(encoding="utf-8", errors="replace")
        texts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    rng = random.Random(0)
    for _ in range(2000):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        texts.append(f"What is {a} plus {b}? {a} + {b} = {a + b}. The answer is {a + b}.\n#### {a + b}\n")
    return texts

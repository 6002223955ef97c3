"""Chat conversations -> SFT samples: token ids plus labels only on assistant tokens.

The mask comes from the tokenizer's own chat template: `{% generation %}` ...
`{% endgeneration %}` around each assistant reply (our ChatML template wraps the reply text
and its `<|im_end|>`, so the model learns to stop) lets
`apply_chat_template(..., return_assistant_tokens_mask=True)` mark exactly those tokens.
A template without those markers yields no trained token; that is an error naming the
tokenizer, not a silently useless SFT run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from qwen25_rl.errors import UserValueError
from qwen25_rl.pretrain.packing import IGNORE, sample_labels


class ChatTemplateError(UserValueError):
    pass


def assistant_token_mask(tokenizer, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """(input_ids, mask) of one conversation; mask[i] = 1 for tokens of assistant replies."""
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, add_generation_prompt=False
    )
    ids = list(out["input_ids"])
    mask = list(out["assistant_masks"])
    if len(ids) != len(mask):
        raise ChatTemplateError(f"assistant mask length {len(mask)} != token count {len(ids)}")
    n_assistant = sum(1 for m in messages if m["role"] == "assistant" and m["content"])
    if n_assistant and not any(mask):
        raise ChatTemplateError(
            f"the chat template of tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} marks no assistant tokens: "
            "it needs {% generation %}...{% endgeneration %} around assistant replies "
            "(qwen25_rl.models.tokenizer.CHAT_TEMPLATE has them)"
        )
    return ids, mask


@dataclass
class SFTStats:
    conversations: int = 0
    truncated: int = 0
    dropped_overlong: int = 0
    # Truncated so far that no assistant token was left: dropped, counted separately.
    dropped_no_target: int = 0
    longest: int = 0
    truncated_examples: list[int] = field(default_factory=list)  # indices, first few, for the log

    def as_dict(self) -> dict[str, int]:
        return {
            "conversations": self.conversations,
            "truncated": self.truncated,
            "dropped_overlong": self.dropped_overlong,
            "dropped_no_target": self.dropped_no_target,
            "longest_tokens": self.longest,
        }


def build_samples(
    tokenized: Sequence[tuple[Sequence[int], Sequence[int]]], max_length: int, overlong: str
) -> tuple[list[tuple[np.ndarray, np.ndarray]], SFTStats]:
    """Apply the over-length policy and compute shifted labels.

    `overlong` "truncate": keep the first max_length tokens; "drop": leave the conversation
    out. Both are counted in the returned stats.
    """
    if overlong not in ("truncate", "drop"):
        raise ValueError(f"overlong must be 'truncate' or 'drop', got {overlong!r}")
    stats = SFTStats()
    samples = []
    for i, (ids, mask) in enumerate(tokenized):
        stats.conversations += 1
        stats.longest = max(stats.longest, len(ids))
        if len(ids) > max_length:
            if overlong == "drop":
                stats.dropped_overlong += 1
                continue
            stats.truncated += 1
            if len(stats.truncated_examples) < 5:
                stats.truncated_examples.append(i)
            ids, mask = ids[:max_length], mask[:max_length]
        labels = sample_labels(ids, mask)
        if not (labels != IGNORE).any():
            stats.dropped_no_target += 1
            continue
        samples.append((np.asarray(ids, dtype=np.int64), labels))
    return samples, stats

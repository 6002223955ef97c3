"""Shaping rewards: `format` (is the answer where the grader looks for it) and `length`
(DAPO's overlong reward shaping).

The formulas are pure functions (`has_boxed`, `overlong_penalty`) so they can be tested
against hand-computed values; the registered rewards only pick the inputs out of a sample.
"""

from __future__ import annotations

import functools
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from qwen25_rl.reward.math_extract import boxes
from qwen25_rl.reward.registry import register_reward
from qwen25_rl.reward.types import RewardSample

# ---------------------------------------------------------------------------------------------
# pure formulas


def find_boxed(text: str) -> list[str]:
    """Contents of every complete top-level `\\boxed{...}` / `\\fbox{...}` in `text` (an unclosed
    box, a response cut off by the length limit, is not a box): the math verifier's boxes."""
    return [content for _, _, content in boxes(text)]


def has_boxed(text: str, *, nonempty: bool = True) -> bool:
    """True when the text holds a complete `\\boxed{...}` (with something inside, by default)."""
    found = find_boxed(text)
    return any(b.strip() for b in found) if nonempty else bool(found)


_THINK_RE = re.compile(r"^\s*<think>(?P<think>.*?)</think>\s*(?P<answer>\S.*)$", re.DOTALL)


def has_think_format(text: str) -> bool:
    """R1 style: exactly one `<think>...</think>` block at the start, then a non-empty answer."""
    m = _THINK_RE.match(text)
    return bool(m) and "<think>" not in m.group("answer") and "</think>" not in m.group("answer") and "<think>" not in m.group("think")


def overlong_penalty(length: int, max_length: int, buffer: int, penalty_factor: float = 1.0) -> float:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13).

    0 while length <= max_length - buffer; then falls linearly to -penalty_factor at
    max_length; -penalty_factor beyond it.
    """
    if buffer < 0 or buffer > max_length:
        raise ValueError(f"buffer must lie in [0, max_length], got buffer={buffer}, max_length={max_length}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    expected = max_length - buffer
    if length <= expected:
        return 0.0
    if length > max_length or buffer == 0:
        return -float(penalty_factor)
    return (expected - length) / buffer * penalty_factor


# ---------------------------------------------------------------------------------------------
# registered rewards


class FormatParams(BaseModel):
    """`format` reward: 1 when the response has the expected shape, else 0.

    style boxed: a complete non-empty \\boxed{} (math answers); think: `<think>...</think>`
    then an answer; regex: `pattern` matches (re.search, or the whole text with fullmatch).
    """

    model_config = ConfigDict(extra="forbid")
    style: Literal["boxed", "think", "regex"] = "boxed"
    pattern: str | None = None
    fullmatch: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"pattern {v!r} is not a valid regular expression: {e}") from e
        return v

    @model_validator(mode="after")
    def _pattern_iff_regex(self) -> FormatParams:
        if (self.style == "regex") != (self.pattern is not None):
            raise ValueError("give `pattern` exactly when style is 'regex'")
        return self


@register_reward("format", params=FormatParams, bounded=True)
def format_reward(
    sample: RewardSample,
    *,
    style: Literal["boxed", "think", "regex"] = "boxed",
    pattern: str | None = None,
    fullmatch: bool = False,
) -> float:
    """1.0 when the response has the expected format (boxed answer, think block, or regex), else 0.0."""
    text = sample.response
    if style == "boxed":
        return float(has_boxed(text))
    if style == "think":
        return float(has_think_format(text))
    rx = re.compile(pattern, re.DOTALL)  # re caches compiled patterns
    return float(bool(rx.fullmatch(text) if fullmatch else rx.search(text)))


class LengthParams(BaseModel):
    """`length` reward (DAPO overlong shaping). `max_length` is the generation limit L_max and
    `buffer` the soft-penalty interval L_cache. `unit: tokens` takes the sample's
    response_length, or counts tokens with `tokenizer` (a local tokenizer folder) when the
    sample has none; `unit: chars` counts characters."""

    model_config = ConfigDict(extra="forbid")
    max_length: int = Field(gt=0)
    buffer: int = Field(ge=0)
    penalty_factor: float = Field(default=1.0, ge=0)
    unit: Literal["tokens", "chars"] = "tokens"
    tokenizer: str | None = None

    @model_validator(mode="after")
    def _buffer_fits(self) -> LengthParams:
        if self.buffer > self.max_length:
            raise ValueError(f"buffer ({self.buffer}) must not exceed max_length ({self.max_length})")
        return self


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def response_length(sample: RewardSample, unit: str, tokenizer: str | None) -> int:
    if unit == "chars":
        return len(sample.response)
    if sample.response_length is not None:
        return int(sample.response_length)
    if tokenizer is None:
        raise ValueError(
            "length reward counts tokens but the sample has no response_length and params.tokenizer is not set "
            "(set one of them, or unit: chars)"
        )
    return len(_tokenizer(tokenizer)(sample.response, add_special_tokens=False)["input_ids"])


@register_reward("length", params=LengthParams, bounded=True)
def length_reward(
    sample: RewardSample,
    *,
    max_length: int,
    buffer: int,
    penalty_factor: float = 1.0,
    unit: Literal["tokens", "chars"] = "tokens",
    tokenizer: str | None = None,
) -> float:
    """DAPO overlong shaping: 0 up to max_length - buffer, linear down to -penalty_factor at max_length."""
    return overlong_penalty(response_length(sample, unit, tokenizer), max_length, buffer, penalty_factor)

"""What rewards exchange: the sample to score, a function's outcome, the combined result, and
the interface every configured reward provides. Plain dataclasses, no dependencies.

Plug-in authors import these from `qwen25_rl.reward` (the package re-exports them).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol


@dataclass
class RewardSample:
    """One completion to score.

    `answer` is whatever the reward compares against: a gold answer string for math, a
    HumanEval problem dict or a list of `{"input", "output"}` cases for code. `group_id` ties
    the samples of one prompt together (GRPO groups; the drop-group failure policy uses it).
    `extra` carries the dataset's other columns (custom rewards receive them).
    `response_length` is the response length in tokens when the caller knows it (length shaping).
    """

    response: str
    prompt: str = ""
    answer: Any = None
    data_source: str = ""
    group_id: Hashable | None = None
    sample_id: Hashable | None = None
    response_length: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "sample") -> RewardSample:
        """Build from a JSON mapping; unknown keys are an error naming them (nothing ignored)."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")
        if not isinstance(d.get("response"), str):
            raise ValueError(f"{where}: 'response' must be a string, got {type(d.get('response')).__name__}")
        if "extra" in d and not isinstance(d["extra"], dict):
            raise ValueError(f"{where}: 'extra' must be an object")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RewardOutput:
    """What a reward function may return instead of a bare number: the score plus details."""

    score: float
    details: dict[str, Any] = field(default_factory=dict)


Status = Literal["ok", "error", "timeout", "skipped"]


@dataclass
class FunctionOutcome:
    """One reward function's verdict on one sample.

    status: ok (value is set) / error (the reward raised or returned garbage) / timeout (it did
    not answer within its deadline) / skipped (it does not apply to this sample: another data
    source, or the function returned None).
    """

    value: float | None
    status: Status = "ok"
    error: str | None = None
    details: dict[str, Any] | None = None

    @classmethod
    def failed(cls, status: Status, error: str) -> FunctionOutcome:
        return cls(None, status, error)


@dataclass
class RewardResult:
    """The combined reward of one sample.

    `reward` is the weighted sum over the functions that scored it; None when the sample could
    not be scored (status error/timeout under the drop_group policy, or dropped). `breakdown`
    has each applicable function's own value (None where it failed; functions that do not
    apply to the sample are absent), `function_status` its status. `status` is the worst
    outcome among the functions (timeout > error > ok); `error` the error texts.
    `dropped` is set by the pool's drop_group policy: the caller must leave this sample out.
    """

    reward: float | None
    breakdown: dict[str, float | None] = field(default_factory=dict)
    status: Literal["ok", "error", "timeout"] = "ok"
    error: str | None = None
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped: bool = False
    function_status: dict[str, str] = field(default_factory=dict)

    @property
    def failed_functions(self) -> list[str]:
        return [k for k, v in self.function_status.items() if v != "ok"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RewardResult:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def coerce_output(raw: Any, where: str) -> FunctionOutcome:
    """Turn what a reward function returned into an outcome; garbage is an error, not a 0.

    Accepted: a finite number or bool; `RewardOutput`; a mapping with "score" (veRL) or
    "reward"; None (= skipped, TRL's convention for "not applicable").
    """
    details = None
    value = raw
    if isinstance(raw, RewardOutput):
        value, details = raw.score, dict(raw.details)
    elif isinstance(raw, dict):
        key = "score" if "score" in raw else "reward" if "reward" in raw else None
        if key is None:
            return FunctionOutcome.failed("error", f"{where} returned a mapping without a 'score' or 'reward' key: keys {sorted(raw)[:8]}")
        value = raw[key]
        details = {k: v for k, v in raw.items() if k != key and _is_plain(v)}
    if value is None:
        return FunctionOutcome(None, "skipped", None, details)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy / torch scalar
    if isinstance(value, bool):
        value = float(value)
    if not isinstance(value, (int, float)):
        return FunctionOutcome.failed("error", f"{where} returned {type(value).__name__} {short(repr(value))}, expected a number")
    value = float(value)
    if not math.isfinite(value):
        return FunctionOutcome.failed("error", f"{where} returned {value}, expected a finite number")
    return FunctionOutcome(value, "ok", None, details)


def _is_plain(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, type(None)))


def short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def outcome_of(fn, sample: RewardSample, name: str) -> FunctionOutcome:
    """Call a per-sample reward and turn what it returns, or raises, into an outcome: a reward
    that raises is data for the caller, not a crash."""
    try:
        return coerce_output(fn(sample), f"reward {name!r}")
    except Exception as e:
        return FunctionOutcome.failed("error", describe_exception(e))


def describe_exception(e: BaseException) -> str:
    """`TypeError: message` plus the innermost frame, short enough for a log line."""
    text = f"{type(e).__name__}: {e}"
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        text += f" (at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})"
    return short(text, 500)


# ---------------------------------------------------------------------------------------------
# the runtime interface every configured reward provides


class RewardFunction(Protocol):
    """A configured reward ready to score: built once per scorer, then called per batch.

    `score_batch` must return one outcome per sample, never raise for a sample's sake, and
    return within about `timeout_s` per sample (per-sample deadline) however the samples behave.
    """

    def score_batch(self, samples: list[RewardSample], timeout_s: float) -> list[FunctionOutcome]: ...

    def close(self) -> None: ...

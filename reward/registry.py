"""The reward registry: one table of named reward functions, and the types they exchange.

A reward is registered once and then named in YAML (`type: math`). Two ways to add one:

- `@register_reward("name")` on a per-sample function `fn(sample, *, p1=..., p2=...)` that
  returns a number (or `RewardOutput`, or None for "does not apply to this sample"). Its
  keyword-only parameters become the YAML `params:` of that reward, validated at start-up.
  This is the common path: one decorated function.
- `@register_reward_factory("name", params=Model)` on `build(params) -> RewardFunction`, for
  rewards that need set-up and their own deadline machinery (a process pool, a sandbox, an
  HTTP session): the returned object scores whole batches.

Everything here is plain Python: no Ray, no I/O, no config files. The pool, the Serve
deployment and the CLI all score through `reward.scorer.RewardScorer`, which builds the
configured functions from this table.
"""

from __future__ import annotations

import difflib
import inspect
import math
import threading
import time
import typing
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, create_model

# ---------------------------------------------------------------------------------------------
# what rewards exchange


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
    def from_dict(cls, d: dict[str, Any], where: str = "sample") -> "RewardSample":
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
    def failed(cls, status: Status, error: str) -> "FunctionOutcome":
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
    def from_dict(cls, d: dict[str, Any]) -> "RewardResult":
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
        return FunctionOutcome.failed("error", f"{where} returned {type(value).__name__} {_short(repr(value))}, expected a number")
    value = float(value)
    if not math.isfinite(value):
        return FunctionOutcome.failed("error", f"{where} returned {value}, expected a finite number")
    return FunctionOutcome(value, "ok", None, details)


def _is_plain(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, type(None)))


def _short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def describe_exception(e: BaseException) -> str:
    """`TypeError: message` plus the innermost frame, short enough for a log line."""
    text = f"{type(e).__name__}: {e}"
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        text += f" (at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})"
    return _short(text, 500)


# ---------------------------------------------------------------------------------------------
# the runtime interface every configured reward provides


class RewardFunction(Protocol):
    """A configured reward ready to score: built once per scorer, then called per batch.

    `score_batch` must return one outcome per sample, never raise for a sample's sake, and
    return within about `timeout_s` per sample (per-sample deadline) however the samples behave.
    """

    def score_batch(self, samples: list[RewardSample], timeout_s: float) -> list[FunctionOutcome]: ...

    def close(self) -> None: ...


class ThreadedRewardFunction:
    """Runs a per-sample Python function in threads with a per-sample deadline.

    The deadline is soft: a sample that overruns is reported as a timeout at once, but its
    thread runs on until the function returns. That is right for functions that finish on
    their own (shaping, HTTP calls with their own timeout, the sandbox which kills its
    processes); code that can hang for good belongs in a process (reward.isolation).
    """

    def __init__(self, fn: Callable[[RewardSample], Any], name: str, concurrency: int = 1):
        self.fn = fn
        self.name = name
        self.concurrency = max(1, concurrency)
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"reward-{self.name}")
            return self._executor

    def _call(self, sample: RewardSample) -> FunctionOutcome:
        try:
            return coerce_output(self.fn(sample), f"reward {self.name!r}")
        except Exception as e:  # a reward that raises is data for the caller, not a crash
            return FunctionOutcome.failed("error", describe_exception(e))

    def score_batch(self, samples: list[RewardSample], timeout_s: float, seconds: list[float] | None = None) -> list[FunctionOutcome]:
        """`seconds`: each sample's own deadline where they differ (default: timeout_s each)."""
        pool = self._pool()
        futures = [pool.submit(self._call, s) for s in samples]
        limits = seconds if seconds is not None else [timeout_s] * len(samples)
        out: list[FunctionOutcome] = []
        # Each sample's deadline counts from when a thread could have started it. The threads
        # take samples in order, so sample i starts once the c threads have got through the
        # samples before it: after at most (sum of their deadlines) / c.
        start = time.monotonic()
        before = 0.0
        for fut, limit in zip(futures, limits):
            deadline = start + before / self.concurrency + limit
            before += limit
            try:
                out.append(fut.result(timeout=max(0.0, deadline - time.monotonic())))
            except FutureTimeout:
                fut.cancel()
                out.append(FunctionOutcome.failed("timeout", f"reward {self.name!r} did not finish within {limit:g} s"))
        return out

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


class InlineRewardFunction:
    """Calls a bounded-time function directly in the scoring thread (no deadline machinery).

    For pure functions that are linear in the response length (format, length): a thread
    hand-off per sample would cost more than the function itself, and a deadline could not
    fire before the function returned anyway.
    """

    def __init__(self, fn: Callable[[RewardSample], Any], name: str):
        self.fn = fn
        self.name = name

    def score_batch(self, samples: list[RewardSample], timeout_s: float) -> list[FunctionOutcome]:
        out = []
        for s in samples:
            try:
                out.append(coerce_output(self.fn(s), f"reward {self.name!r}"))
            except Exception as e:  # a reward that raises is data for the caller, not a crash
                out.append(FunctionOutcome.failed("error", describe_exception(e)))
        return out

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# the registry


class _ParamsBase(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


@dataclass
class RewardSpec:
    """A registry entry: how to validate a reward's params and how to build it."""

    name: str
    params_model: type[BaseModel]
    build: Callable[[BaseModel], RewardFunction]
    description: str = ""
    # Where the reward was defined (shown by `qwen25-rl reward list`).
    origin: str = ""
    # The longest the reward may take on one sample, from its params, the sample and the
    # configured per-sample deadline (None: that deadline). Rewards whose own time limits
    # depend on the sample (the code reward's sandbox budget grows with the tests) say so
    # here, and the pool's backstop waits that long.
    max_sample_seconds: Callable[[BaseModel, RewardSample, float], float] | None = None

    def sample_seconds(self, params: BaseModel, sample: RewardSample, timeout_s: float) -> float:
        if self.max_sample_seconds is None:
            return timeout_s
        return self.max_sample_seconds(params, sample, timeout_s)


REWARDS: dict[str, RewardSpec] = {}
_builtins_loaded = False


def _check_new_name(name: str, origin: str) -> None:
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"reward name {name!r} must be letters, digits, '_' or '-'")
    if name in REWARDS and REWARDS[name].origin != origin:
        raise ValueError(f"reward {name!r} is already registered (by {REWARDS[name].origin}); pick another name")


def params_model_from_signature(fn: Callable, name: str) -> type[BaseModel]:
    """A pydantic model (extra="forbid") of `fn`'s keyword-only parameters and their defaults."""
    fields: dict[str, Any] = {}
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    if not params or params[0].kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        raise TypeError(f"reward {name!r}: {fn.__qualname__} must take the sample as its first positional parameter")
    for p in params[1:]:
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(
                f"reward {name!r}: parameter {p.name!r} of {fn.__qualname__} must be keyword-only "
                f"(write `def {fn.__name__}(sample, *, {p.name}=...)`); its value comes from the YAML params"
            )
        ann = p.annotation if p.annotation is not inspect.Parameter.empty else Any
        if isinstance(ann, str):  # `from __future__ import annotations`: resolve the string
            try:
                ann = typing.get_type_hints(fn).get(p.name, Any)
            except Exception:  # an annotation that does not resolve is not checked
                ann = Any
        default = p.default if p.default is not inspect.Parameter.empty else ...
        fields[p.name] = (ann, default)
    return create_model(f"{name}_params", __base__=_ParamsBase, **fields)


def register_reward(
    name: str,
    *,
    params: type[BaseModel] | None = None,
    concurrency: int = 1,
    bounded: bool = False,
    description: str | None = None,
):
    """Register a per-sample reward `fn(sample, *, param=default, ...) -> float | RewardOutput | None`.

    The keyword-only parameters are the reward's YAML `params` (a pydantic model is derived
    from them; pass `params=Model` instead to add validators, its fields must be exactly those
    parameters). Raising is fine: the sample is marked error (with the message) and the run's
    failure policy decides what happens.

    By default the function runs in `concurrency` threads with a (soft) per-sample deadline.
    `bounded=True` declares it pure and fast (linear in the response): it is then called
    directly, without the thread hand-off.
    """

    def deco(fn: Callable) -> Callable:
        origin = f"{fn.__module__}.{fn.__qualname__}"
        _check_new_name(name, origin)
        derived = params_model_from_signature(fn, name)
        if params is not None and set(params.model_fields) != set(derived.model_fields):
            raise TypeError(
                f"reward {name!r}: params model {params.__name__} has fields {sorted(params.model_fields)} "
                f"but {fn.__qualname__} takes {sorted(derived.model_fields)}"
            )
        model = params or derived

        def build(params: BaseModel) -> RewardFunction:
            kwargs = {k: getattr(params, k) for k in type(params).model_fields}
            if bounded:
                return InlineRewardFunction(lambda s: fn(s, **kwargs), name)
            return ThreadedRewardFunction(lambda s: fn(s, **kwargs), name, concurrency)

        REWARDS[name] = RewardSpec(name, model, build, (description or (fn.__doc__ or "")).strip().split("\n")[0], origin)
        return fn

    return deco


def register_reward_factory(
    name: str,
    *,
    params: type[BaseModel],
    description: str | None = None,
    max_sample_seconds: Callable[[BaseModel, RewardSample, float], float] | None = None,
):
    """Register `build(params) -> RewardFunction` for a reward with its own batch/deadline machinery.

    max_sample_seconds(params, sample, timeout_s): see RewardSpec."""

    def deco(build: Callable[[BaseModel], RewardFunction]) -> Callable:
        origin = f"{build.__module__}.{build.__qualname__}"
        _check_new_name(name, origin)
        doc = (description or (build.__doc__ or "")).strip().split("\n")[0]
        REWARDS[name] = RewardSpec(name, params, build, doc, origin, max_sample_seconds)
        return build

    return deco


def load_builtin_rewards() -> None:
    """Import the modules that register the built-in rewards (once)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    import qwen25_rl.reward.builtins  # noqa: F401  (registers math, code, format, length, reward_model, custom)


def get_reward(name: str) -> RewardSpec:
    """The registry entry for `name`; an unknown name lists the close and the known ones."""
    load_builtin_rewards()
    if name in REWARDS:
        return REWARDS[name]
    close = difflib.get_close_matches(name, list(REWARDS), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    raise KeyError(
        f"unknown reward {name!r}; {hint}known rewards: {', '.join(sorted(REWARDS))} "
        "(a custom function is `type: custom` with params.path 'file.py:fn' or 'package.module:fn')"
    )


def reward_names() -> list[str]:
    load_builtin_rewards()
    return sorted(REWARDS)

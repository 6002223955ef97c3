"""The reward registry: one table of named reward functions, and the runners for per-sample ones.

A reward is registered once and then named in YAML (`type: math`). Two ways to add one:

- `@register_reward("name")` on a per-sample function `fn(sample, *, p1=..., p2=...)` that
  returns a number (or `RewardOutput`, or None for "does not apply to this sample"). Its
  keyword-only parameters become the YAML `params:` of that reward, validated at start-up.
  This is the common path: one decorated function.
- `@register_reward_factory("name", params=Model)` on `build(params) -> RewardFunction`, for
  rewards that need set-up and their own deadline machinery (a process pool, a sandbox, an
  HTTP session): the returned object scores whole batches.

Everything here is plain Python: no Ray, no I/O, no config files. The built-in rewards
register themselves when their modules are imported; `reward.catalog.get_reward` imports them
and looks names up. The pool, the Serve deployment and the CLI all score through
`reward.scorer.RewardScorer`, which builds the configured functions from that table.
"""

from __future__ import annotations

import functools
import inspect
import threading
import typing
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

from qwen25_rl.reward.deadlines import TimedOut, run_with_deadlines
from qwen25_rl.reward.types import FunctionOutcome, RewardFunction, RewardSample, outcome_of


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

    def pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"reward-{self.name}")
            return self._executor

    def score_batch(self, samples: list[RewardSample], timeout_s: float, seconds: list[float] | None = None) -> list[FunctionOutcome]:
        """`seconds`: each sample's own deadline where they differ (default: timeout_s each)."""
        limits = seconds if seconds is not None else [timeout_s] * len(samples)
        jobs = [functools.partial(outcome_of, self.fn, s, self.name) for s in samples]
        return [
            FunctionOutcome.failed("timeout", f"reward {self.name!r} did not finish within {r.limit_s:g} s")
            if isinstance(r, TimedOut)
            else r
            for r in run_with_deadlines(self.pool(), self.concurrency, jobs, limits)
        ]

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
        return [outcome_of(self.fn, s, self.name) for s in samples]

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# the registry


class Section(BaseModel):
    """Base of every reward settings model (the reward section, each reward's params, Serve):
    the rules of qwen25_rl.config.Section, unknown keys are errors, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, arbitrary_types_allowed=True)


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
    return create_model(f"{name}_params", __base__=Section, **fields)


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

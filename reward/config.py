"""Reward configuration: which reward functions, with what weights, scored by which pool.

A stage embeds `RewardConfig` as its `reward:` section (GRPO does; `qwen25-rl serve-reward`
does). Example (configs/tiny/rewards_example.yaml has a longer one):

    reward:
      functions:
        - type: math                  # a registered reward (qwen25-rl reward list)
          weight: 1.0
          data_sources: [gsm8k, math500]
        - type: format
          weight: 0.1
        - type: length                # DAPO overlong shaping
          params: {max_length: 1024, buffer: 256}
        - type: custom                # your own function, any supported call style
          name: brevity
          params: {path: my_rewards.py:compute_score}
      pool: {num_workers: 2, sample_timeout_s: 10, on_failure: drop_group}

The total reward of a sample is the weighted sum of the functions that apply to it
(`data_sources` null = all samples). Each function's `params` are validated against the
registered reward's own schema when the config is loaded, so a typo fails before any step;
the resolved config shows every param with its default.

Plain pydantic (no import from qwen25_rl's core): the reward package stands on its own.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from qwen25_rl.reward.catalog import get_reward
from qwen25_rl.reward.registry import Section

# ---------------------------------------------------------------------------------------------
# the reward section (each reward's own params are defined beside it: reward.builtins,
# reward.shaping, reward.rm_client)


class RewardFunctionConfig(Section):
    """One term of the weighted sum."""

    type: str
    # Label in breakdowns, metrics and logs; defaults to `type`. Must be unique in the list.
    name: str | None = None
    weight: float = 1.0
    # Only samples whose data_source is listed get this term (null: every sample).
    data_sources: list[str] | None = None
    # Per-sample deadline of this function; null takes pool.sample_timeout_s.
    timeout_s: float | None = Field(default=None, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"type": data}
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            return data  # pydantic reports the shape error
        data = dict(data)
        # Shorthand: `type: my_rewards.py:fn` is a custom function.
        if ":" in data["type"]:
            data["params"] = {"path": data["type"], **(data.get("params") or {})}
            data["type"] = "custom"
            data.setdefault("name", data["params"]["path"].rpartition(":")[2])
        params = data.get("params") or {}
        if not isinstance(params, dict):
            raise ValueError(f"params of reward {data['type']!r} must be a mapping, got {type(params).__name__}")
        try:
            spec = get_reward(data["type"])
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        try:
            validated = spec.params_model.model_validate(params)
        except ValidationError as e:
            problems = "; ".join(_describe_param_error(err, spec.params_model) for err in e.errors())
            raise ValueError(f"reward {data['type']!r}: {problems}") from None
        except ValueError as e:  # a plugin path that does not resolve, from a field validator
            raise ValueError(f"reward {data['type']!r}: {e}") from None
        data["params"] = validated.model_dump(mode="json")
        return data

    @property
    def label(self) -> str:
        return self.name or self.type

    def params_model(self) -> BaseModel:
        """The params as the registered reward's own model (already validated at load)."""
        return get_reward(self.type).params_model.model_validate(self.params)


def _keys_at(model: Any, path: tuple) -> list[str]:
    """The keys a params model (pydantic model or dataclass, nested) accepts at `path`."""
    for part in path:
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(str(part))
            model = field.annotation if field is not None else None
        elif dataclasses.is_dataclass(model):
            model = typing.get_type_hints(model).get(str(part))
        else:
            return []
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    if dataclasses.is_dataclass(model):
        return [f.name for f in dataclasses.fields(model)]
    return []


def _describe_param_error(err: dict[str, Any], model: type[BaseModel]) -> str:
    loc = tuple(err["loc"])
    key = "params." + ".".join(str(p) for p in loc) if loc else "params"
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):  # the latter: a dataclass section
        known = _keys_at(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=2, cutoff=0.5)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        where = "params of this reward" if len(loc) == 1 else f"keys of params.{'.'.join(map(str, loc[:-1]))}"
        return f"unknown key {key!r} ({hint}{where}: {', '.join(known)})"
    if err["type"] == "missing":
        return f"{key}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{key}: {msg} (got {err.get('input')!r})"


class RewardPoolConfig(Section):
    """The Ray reward pool: CPU actors that score batches concurrently."""

    num_workers: int = Field(default=2, ge=1)
    num_cpus_per_worker: float = Field(default=1.0, ge=0)
    # Samples per task sent to a worker; null: about two chunks per worker per batch.
    chunk_size: int | None = Field(default=None, ge=1)
    # Per-sample deadline of each function (unless the function sets its own timeout_s).
    sample_timeout_s: float = Field(default=10.0, gt=0)
    # What a sample whose reward raised or timed out does to the run:
    #   drop_group - leave out every sample of its group (GRPO needs whole groups)
    #   zero       - the failed function counts 0 (the sample stays marked as failed)
    #   fail       - stop the run with the counts and first examples
    on_failure: Literal["drop_group", "zero", "fail"] = "drop_group"
    # Stop the run anyway when more than this fraction of a batch failed (null: never):
    # a reward that is broken for everyone should not train on zeros for 300 steps.
    max_failure_fraction: float | None = Field(default=None, gt=0, le=1)
    # How many failed samples are quoted in logs and stats.
    log_examples: int = Field(default=3, ge=0)
    # Extra seconds a worker gets beyond its samples' deadlines before it is declared hung,
    # killed and replaced (a backstop: functions enforce their own deadlines first).
    worker_grace_s: float = Field(default=60.0, gt=0)
    # Cap on the resident memory (MB) of each child process running a custom reward
    # (isolation: process), the processes it starts included: a call that passes it is killed,
    # its samples are errors naming the limit, the child is replaced. null: no cap. Thread
    # isolation runs in the worker itself and is not capped.
    memory_limit_mb: float | None = Field(default=4096, gt=0)
    # Seconds to wait for the workers to start (they load every reward function).
    startup_timeout_s: float = Field(default=300.0, gt=0)
    # Actors are named f"{name_prefix}-{i}" (readable on the Ray dashboard).
    name_prefix: str = "reward"


class RewardConfig(Section):
    """The `reward:` section: weighted reward functions and the pool that runs them."""

    # Modules to import first: their @register_reward functions become usable `type`s.
    imports: list[str] = Field(default_factory=list)
    functions: list[RewardFunctionConfig] = Field(default_factory=lambda: [RewardFunctionConfig(type="math")])
    pool: RewardPoolConfig = Field(default_factory=RewardPoolConfig)

    @model_validator(mode="before")
    @classmethod
    def _import_first(cls, data: Any) -> Any:
        if isinstance(data, dict):
            import importlib

            for mod in data.get("imports") or []:
                try:
                    importlib.import_module(mod)
                except Exception as e:
                    raise ValueError(f"imports: cannot import {mod!r}: {type(e).__name__}: {e}") from None
        return data

    @model_validator(mode="after")
    def _unique_labels(self) -> RewardConfig:
        if not self.functions:
            raise ValueError("functions: give at least one reward function")
        seen: dict[str, int] = {}
        for i, f in enumerate(self.functions):
            if f.label in seen:
                raise ValueError(
                    f"functions.{i}: name {f.label!r} is used twice (functions.{seen[f.label]} too); give each a distinct `name`"
                )
            seen[f.label] = i
        return self

    def timeout_for(self, f: RewardFunctionConfig) -> float:
        return f.timeout_s if f.timeout_s is not None else self.pool.sample_timeout_s

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

Plain pydantic (no import from qwen25_rl): the reward package stands on its own.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class _Section(BaseModel):
    # Same rules as qwen25_rl.config.Section: unknown keys are errors, assignments validated.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------------------------------------
# params of the built-in rewards that call into other modules (mirrors of their arguments)


class MathParams(_Section):
    """`math`: verify the response's final answer against the gold answer (reward.math).

    1.0 when equivalent, 0.0 when not. The per-sample deadline is the function's `timeout_s`;
    verification runs in `processes` worker processes that are killed at that deadline and
    replaced (sympy can run for minutes on hostile input), and a sample that hits it is a
    timeout, not a 0.
    """

    # "the last number in the text" as a last-resort extraction (opt-in: it rewards guessing).
    fallback_last_number: bool = False
    # Verification processes per reward worker (MathVerifierPool num_workers).
    processes: int = Field(default=1, ge=1)
    # Address-space cap of one verification process (MathVerifierPool memory_mb); null: none.
    memory_mb: int | None = Field(default=2048, gt=0)


class SandboxLimitsParams(_Section):
    """Mirror of sandboxes.Limits: resource limits of one sandboxed execution (a test run)."""

    timeout_s: float = Field(default=10.0, gt=0)  # wall clock; the parent kills the tree
    cpu_s: float | None = Field(default=None, gt=0)  # RLIMIT_CPU; null = timeout_s + 1
    memory_mb: int = Field(default=1024, ge=64)  # RLIMIT_AS per process and the cgroup limit
    max_processes: int = Field(default=32, ge=4)
    max_open_files: int = Field(default=64, ge=16)
    max_file_mb: int = Field(default=16, gt=0)
    tmpfs_mb: int = Field(default=64, gt=0)
    max_output_bytes: int = Field(default=1024 * 1024, gt=0)


class SandboxParams(_Section):
    """Mirror of sandboxes.SandboxConfig: how the code reward's sandboxes run."""

    # Concurrent executions per reward worker (0: 4 x CPU count, see sandboxes/executor.py);
    # more wait (back-pressure).
    slots: int = Field(default=0, ge=0)
    # Unprivileged host uids leased per execution (machine-wide leases).
    uid_base: int = Field(default=1_700_000_000, ge=1000)
    uid_count: int = Field(default=1024, ge=1)
    state_dir: str | None = None
    python: str | None = None
    bwrap: str = "/usr/bin/bwrap"
    setpriv: str = "/usr/bin/setpriv"
    prlimit: str = "/usr/bin/prlimit"
    extra_ro_paths: list[str] = Field(default_factory=list)
    cgroups: Literal["auto", "require", "off"] = "auto"
    # Refuse to run untrusted code when an isolation layer is missing, unless this is true.
    allow_weak_isolation: bool = False
    limits: SandboxLimitsParams = Field(default_factory=SandboxLimitsParams)
    acquire_timeout_s: float = Field(default=600.0, gt=0)

    def to_sandbox_config(self):
        """The sandboxes.SandboxConfig these settings describe."""
        from qwen25_rl.sandboxes.config import Limits, SandboxConfig

        d = self.model_dump()
        d["limits"] = Limits(**d["limits"])
        d["extra_ro_paths"] = tuple(d["extra_ro_paths"])
        return SandboxConfig(**d)


class CodeParams(_Section):
    """`code`: extract the program from the response and run the sample's tests against it in
    the sandbox (reward.code.score_code).

    `answer` of a sample: a HumanEval problem (prompt, test, entry_point), an MBPP row
    (test_list, test_setup_code), an APPS dict (inputs, outputs, fn_name), a list of
    stdin/stdout cases `{"input", "output"}`, a list of assert lines, or any of these as a
    JSON string. The reward is the fraction of tests passed (`mode: fraction`) or 1/0
    (`mode: all`). A program that exceeds a test's limit fails that test. Each sample's
    deadline is the sandbox's own budget for its tests (reward.code.max_grading_seconds: every
    test at its limit, plus start-up and clean-up), so a slow program is graded 0, never a
    reward timeout; the function's `timeout_s` can only lengthen it.
    """

    mode: Literal["fraction", "all"] = "fraction"
    # Time limit of one test (reward.code's timeout_s): a program that exceeds it fails that test.
    per_test_timeout_s: float = Field(default=5.0, gt=0)
    # Samples graded at once per reward worker (each holds a sandbox slot while it runs).
    concurrency: int = Field(default=4, ge=1)
    sandbox: SandboxParams = Field(default_factory=SandboxParams)


class CustomParams(_Section):
    """`custom`: your own function, `path/to/file.py:fn` or `package.module:fn`.

    style: auto (from parameter names) | sample | verl | trl | openrlhf (see reward.plugins).
    isolation: process (default) runs it in child processes killed at the per-sample deadline
    (hard limit, survives infinite loops); thread runs it in the reward worker itself (faster,
    but a hung call only gets marked as timed out, never stopped).
    """

    path: str
    style: Literal["auto", "sample", "verl", "trl", "openrlhf"] = "auto"
    # Name under which `sample.answer` reaches trl-style functions as a column.
    answer_column: str = "answer"
    # trl style: pass prompts/completions as chat messages (TRL's conversational format,
    # what trl.rewards functions expect) instead of plain strings.
    conversational: bool = False
    isolation: Literal["process", "thread"] = "process"
    processes: int = Field(default=1, ge=1)
    # Samples per call for the batch styles (trl, openrlhf); per-sample styles get one.
    batch_size: int = Field(default=16, ge=1)

    @field_validator("path")
    @classmethod
    def _resolvable(cls, v: str) -> str:
        # Existence is checked now and the path made absolute, so workers whose current
        # folder differs (Ray actors, Serve replicas) find the same file. Nothing is imported
        # yet: that happens when the scorer starts (still before the first step). On a
        # multi-node cluster the file must exist at that path on every node (a shared
        # folder), or use the 'package.module:fn' form with the package installed there.
        from qwen25_rl.reward.plugins import resolve_spec

        return resolve_spec(v)


# ---------------------------------------------------------------------------------------------
# the reward section


class RewardFunctionConfig(_Section):
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
        from qwen25_rl.reward.registry import get_reward

        try:
            spec = get_reward(data["type"])
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        try:
            validated = spec.params_model.model_validate(params)
        except ValidationError as e:
            problems = "; ".join(_describe_param_error(err, list(spec.params_model.model_fields)) for err in e.errors())
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
        from qwen25_rl.reward.registry import get_reward

        return get_reward(self.type).params_model.model_validate(self.params)


def _describe_param_error(err: dict[str, Any], known: list[str]) -> str:
    key = "params." + ".".join(str(p) for p in err["loc"]) if err["loc"] else "params"
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(err["loc"][-1]), known, n=2, cutoff=0.5) if len(err["loc"]) == 1 else []
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        return f"unknown key {key!r} ({hint}params of this reward: {', '.join(known)})"
    if err["type"] == "missing":
        return f"{key}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{key}: {msg} (got {err.get('input')!r})"


class RewardPoolConfig(_Section):
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
    # Seconds to wait for the workers to start (they load every reward function).
    startup_timeout_s: float = Field(default=300.0, gt=0)
    # Actors are named f"{name_prefix}-{i}" (readable on the Ray dashboard).
    name_prefix: str = "reward"


class RewardConfig(_Section):
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
    def _unique_labels(self) -> "RewardConfig":
        if not self.functions:
            raise ValueError("functions: give at least one reward function")
        seen: dict[str, int] = {}
        for i, f in enumerate(self.functions):
            if f.label in seen:
                raise ValueError(f"functions.{i}: name {f.label!r} is used twice (functions.{seen[f.label]} too); give each a distinct `name`")
            seen[f.label] = i
        return self

    def timeout_for(self, f: RewardFunctionConfig) -> float:
        return f.timeout_s if f.timeout_s is not None else self.pool.sample_timeout_s


# ---------------------------------------------------------------------------------------------
# serving


class ServeConfig(_Section):
    """Ray Serve settings of `qwen25-rl serve-reward`."""

    # Loopback by default: a reward endpoint is not meant for the open network.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    app_name: str = "reward"
    route_prefix: str = "/reward"
    num_replicas: int = Field(default=1, ge=1)
    num_cpus_per_replica: float = Field(default=1.0, ge=0)
    # @serve.batch: samples from concurrent requests are scored together up to this many,
    # waiting at most batch_wait_timeout_s for a batch to fill.
    max_batch_size: int = Field(default=64, ge=1)
    batch_wait_timeout_s: float = Field(default=0.01, ge=0)
    max_ongoing_requests: int = Field(default=64, ge=1)
    # Largest number of samples accepted in one request (HTTP 400 beyond it).
    max_samples_per_request: int = Field(default=4096, ge=1)

    @field_validator("route_prefix")
    @classmethod
    def _slash(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"route_prefix must start with '/', got {v!r}")
        return v


class RewardModelServeConfig(_Section):
    """A learned reward model to serve: a local Hugging Face sequence-classification
    checkpoint with one output (the reward is that logit)."""

    path: str
    # chat: score the ChatML rendering of [user: prompt, assistant: response] (what the
    # reward model was trained on); plain: prompt + response as one string.
    template: Literal["chat", "plain"] = "chat"
    max_length: int = Field(default=2048, gt=0)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # Samples per forward pass inside a batch.
    micro_batch_size: int = Field(default=16, ge=1)
    # torch threads of a replica (null: its CPU request, at least 1).
    num_threads: int | None = Field(default=None, ge=1)

"""Scoring a batch with a reward config, in one process: build the configured functions,
run each over the samples it applies to, combine the weighted terms, apply the failure
policy, count what failed.

The Ray pool runs a `RewardScorer` in each worker actor, the Serve deployment in each
replica, `qwen25-rl reward score` in the CLI process. The policy and the statistics are pure
functions over results, so the pool applies them once to a whole batch (groups may span
workers).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from qwen25_rl.errors import UserError, UserValueError
from qwen25_rl.reward.catalog import get_reward
from qwen25_rl.reward.config import RewardConfig, RewardFunctionConfig
from qwen25_rl.reward.types import FunctionOutcome, RewardFunction, RewardResult, RewardSample, describe_exception

log = logging.getLogger("reward")


class RewardSetupError(UserValueError):
    """A configured reward could not be built (bad plugin, missing module, bad params)."""


class RewardFailureError(UserError, RuntimeError):
    """The failure policy says stop: carries the batch statistics with the first examples."""

    def __init__(self, message: str, stats: RewardStats):
        super().__init__(message)
        self.stats = stats


class RewardScorer:
    """Builds every function of a RewardConfig once; `score(samples)` -> results in order."""

    def __init__(self, cfg: RewardConfig):
        self.cfg = cfg
        self.functions: list[tuple[RewardFunctionConfig, RewardFunction]] = []
        try:
            for f in cfg.functions:
                spec = get_reward(f.type)
                try:
                    fn = spec.build(f.params_model())
                except Exception as e:
                    raise RewardSetupError(f"reward function {f.label!r} (type {f.type}) failed to start: {e}") from e
                self.functions.append((f, fn))
        except BaseException:
            self.close()
            raise

    @property
    def labels(self) -> list[str]:
        return [f.label for f in self.cfg.functions]

    def score_raw(self, samples: list[RewardSample]) -> list[dict[str, FunctionOutcome]]:
        """Each sample's outcome per function label (functions that do not apply: skipped)."""
        per_sample: list[dict[str, FunctionOutcome]] = [{} for _ in samples]
        for f, fn in self.functions:
            idx = [i for i, s in enumerate(samples) if f.data_sources is None or s.data_source in f.data_sources]
            skipped = FunctionOutcome(None, "skipped", None)
            for i in set(range(len(samples))) - set(idx):
                per_sample[i][f.label] = skipped
            if not idx:
                continue
            batch = [samples[i] for i in idx]
            try:
                outcomes = fn.score_batch(batch, self.cfg.timeout_for(f))
                if len(outcomes) != len(batch):
                    raise RuntimeError(f"returned {len(outcomes)} outcomes for {len(batch)} samples")
            except Exception as e:  # the function's own machinery broke: its samples are errors
                err = f"reward {f.label!r} failed on the whole batch: {describe_exception(e)}"
                outcomes = [FunctionOutcome.failed("error", err)] * len(batch)
            for i, o in zip(idx, outcomes):
                per_sample[i][f.label] = o
        return per_sample

    def score(self, samples: list[RewardSample], on_failure: str | None = None) -> list[RewardResult]:
        """Combined results; `on_failure` zero/drop_group/fail applied (default: the config's)."""
        raw = self.score_raw(samples)
        results = [combine(samples[i], raw[i], self.cfg) for i in range(len(samples))]
        return apply_failure_policy(samples, results, on_failure or self.cfg.pool.on_failure, self.cfg, raise_on_fail=False)

    def close(self) -> None:
        for _, fn in self.functions:
            try:
                fn.close()
            except Exception:  # closing must not hide the error that brought us here
                log.exception("closing a reward function failed")
        self.functions = []

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_plugins(cfg: RewardConfig) -> None:
    """Import every custom reward of `cfg` here and check its signature (start-up check).

    The pool and the Serve deployment call this in the driver before starting actors, so a
    bad path or signature is reported with its own message rather than as an actor failure.
    """
    from qwen25_rl.reward.plugins import PluginError, load_plugin

    for f in cfg.functions:
        if f.type == "custom":
            p = f.params
            try:
                load_plugin(p["path"], p["style"], p["answer_column"], p["conversational"])
            except PluginError as e:
                raise RewardSetupError(f"reward function {f.label!r}: {e}") from None


# ---------------------------------------------------------------------------------------------
# pure functions over outcomes and results


def combine(sample: RewardSample, outcomes: dict[str, FunctionOutcome], cfg: RewardConfig) -> RewardResult:
    """Weighted sum of the ok terms; status = worst outcome (timeout > error > ok).

    `reward` is the sum only when every applicable term is ok; the failure policy decides
    what a failed sample's reward becomes. A sample no function applies to is an error
    (probably a data_source the config does not cover), not a silent 0.
    """
    weights = {f.label: f.weight for f in cfg.functions}
    breakdown: dict[str, float | None] = {}
    details: dict[str, dict[str, Any]] = {}
    function_status: dict[str, str] = {}
    total, errors = 0.0, []
    for label, o in outcomes.items():
        if o.status == "skipped":
            continue
        breakdown[label] = o.value
        function_status[label] = o.status
        if o.details:
            details[label] = o.details
        if o.status == "ok":
            total += weights[label] * o.value  # type: ignore[operator]
        else:
            errors.append(f"{label}: {o.error}")
    if not breakdown:
        return RewardResult(
            None,
            {},
            "error",
            f"no reward function applies to data_source {sample.data_source!r} "
            f"(functions: {', '.join(f.label + ' ' + str(f.data_sources or 'all') for f in cfg.functions)})",
        )
    statuses = set(function_status.values())
    status = "timeout" if "timeout" in statuses else "error" if "error" in statuses else "ok"
    return RewardResult(total if status == "ok" else None, breakdown, status, "; ".join(errors) or None, details, False, function_status)


def zero_failed(result: RewardResult, cfg: RewardConfig) -> float:
    """The weighted sum with failed terms counted as 0 (the `zero` policy)."""
    weights = {f.label: f.weight for f in cfg.functions}
    return float(sum(weights[k] * v for k, v in result.breakdown.items() if v is not None))


def apply_failure_policy(
    samples: list[RewardSample],
    results: list[RewardResult],
    policy: str,
    cfg: RewardConfig,
    raise_on_fail: bool = True,
) -> list[RewardResult]:
    """zero: failed terms count 0 (status stays error/timeout). drop_group: every sample of a
    group with a failed sample is `dropped` with reward None (a sample without group_id is its
    own group). fail: raise RewardFailureError if anything failed (when raise_on_fail)."""
    if policy == "zero":
        for r in results:
            if r.status != "ok":
                r.reward = zero_failed(r, cfg)
    elif policy == "drop_group":
        bad_groups = {_group_key(s, i) for i, (s, r) in enumerate(zip(samples, results)) if r.status != "ok"}
        for i, (s, r) in enumerate(zip(samples, results)):
            if _group_key(s, i) in bad_groups:
                r.dropped = True
                r.reward = None
    elif policy == "fail":
        if raise_on_fail and any(r.status != "ok" for r in results):
            stats = summarize(samples, results, cfg, 3)
            raise RewardFailureError(f"reward failed and on_failure is 'fail': {stats.headline()}", stats)
    else:
        raise ValueError(f"unknown on_failure policy {policy!r}; known: drop_group, zero, fail")
    return results


def _group_key(s: RewardSample, i: int) -> Hashable:
    return ("group", _hashable(s.group_id)) if s.group_id is not None else ("sample", i)


def _hashable(v: Any) -> Hashable:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    return v


@dataclass
class RewardStats:
    """What one scored batch looked like: counts for metrics, examples for logs."""

    num_samples: int = 0
    num_ok: int = 0
    num_error: int = 0
    num_timeout: int = 0
    num_dropped: int = 0
    num_groups_dropped: int = 0
    reward_mean: float | None = None
    # label -> {"mean": mean of ok values, "ok": n, "error": n, "timeout": n, "skipped": n}
    functions: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    # the first failed samples: sample_id, group_id, function(s), status, error, response head
    examples: list[dict[str, Any]] = field(default_factory=list)
    seconds: float | None = None

    def headline(self) -> str:
        text = f"{self.num_samples} samples: {self.num_ok} ok, {self.num_error} error, {self.num_timeout} timeout"
        if self.num_dropped:
            text += f", {self.num_dropped} dropped ({self.num_groups_dropped} groups)"
        for ex in self.examples:
            text += f"\n  - sample {ex['sample_id']!r} (group {ex['group_id']!r}) {ex['status']}: {ex['error']}"
        return text

    def as_metrics(self, prefix: str = "reward/") -> dict[str, float | int]:
        """Flat numbers for metrics.jsonl / TensorBoard / Ray metrics."""
        m: dict[str, float | int] = {
            f"{prefix}samples": self.num_samples,
            f"{prefix}ok": self.num_ok,
            f"{prefix}error": self.num_error,
            f"{prefix}timeout": self.num_timeout,
            f"{prefix}dropped": self.num_dropped,
            f"{prefix}groups_dropped": self.num_groups_dropped,
        }
        if self.reward_mean is not None:
            m[f"{prefix}mean"] = self.reward_mean
        if self.seconds is not None:
            m[f"{prefix}seconds"] = self.seconds
        for label, d in self.functions.items():
            for k, v in d.items():
                if v is not None:
                    m[f"{prefix}{label}/{k}"] = v
        return m


def summarize(samples: list[RewardSample], results: list[RewardResult], cfg: RewardConfig, max_examples: int) -> RewardStats:
    st = RewardStats(num_samples=len(results))
    counts = Counter(r.status for r in results)
    st.num_ok, st.num_error, st.num_timeout = counts["ok"], counts["error"], counts["timeout"]
    st.num_dropped = sum(r.dropped for r in results)
    st.num_groups_dropped = len({_group_key(s, i) for i, (s, r) in enumerate(zip(samples, results)) if r.dropped})
    kept = [r.reward for r in results if r.reward is not None and not r.dropped]
    st.reward_mean = sum(kept) / len(kept) if kept else None
    for f in cfg.functions:
        vals, c = [], Counter()
        for r in results:
            status = r.function_status.get(f.label, "skipped")
            c[status] += 1
            if status == "ok":
                vals.append(r.breakdown[f.label])
        st.functions[f.label] = {
            "mean": sum(vals) / len(vals) if vals else None,
            "ok": c["ok"],
            "error": c["error"],
            "timeout": c["timeout"],
            "skipped": c["skipped"],
        }
    for i, (s, r) in enumerate(zip(samples, results)):
        if len(st.examples) >= max_examples:
            break
        if r.status != "ok":
            st.examples.append(
                {
                    "sample_id": s.sample_id if s.sample_id is not None else i,
                    "group_id": s.group_id,
                    "functions": list(r.failed_functions),
                    "status": r.status,
                    "error": r.error,
                    "response_head": s.response[:120],
                }
            )
    return st

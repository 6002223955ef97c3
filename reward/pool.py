"""`RewardPool`: score batches on Ray CPU actors, concurrently, with per-sample deadlines.

    pool = RewardPool(cfg.reward)             # Ray must be initialised (qwen25_rl.ray_utils.init_ray)
    results = pool.score(samples)             # list[RewardResult], same order as samples
    metrics.update(pool.last_stats.as_metrics())
    pool.shutdown()

Each `RewardWorker` actor (num_cpus = pool.num_cpus_per_worker) holds a `RewardScorer`: the
reward functions are built once per worker, and each enforces the per-sample deadline its own
way (verifier processes killed at the deadline, sandbox wall-clock kills, custom rewards in
killable child processes, HTTP timeouts). The pool splits a batch into chunks, keeps every
worker busy with one chunk at a time, and watches each chunk with a backstop deadline: a
worker that does not answer in time (or dies) is killed and replaced, and its chunk's samples
are marked timeout (or error) rather than waited for.

Then the batch as a whole gets the configured failure policy (drop_group needs the whole
batch: a group's samples may have gone to different workers), the statistics are computed,
failures are logged with their first examples, and counters go to Ray's metrics.

Faults and counters. A custom reward that hangs, dies (os._exit, a signal) or passes its
memory cap (pool.memory_limit_mb) is killed inside its worker by reward.isolation and its
child replaced; a worker that dies (a plugin that killed it, a crash in the scoring code) or
does not answer by the backstop deadline is replaced by the pool. Either way the lost samples
are errors or timeouts for the failure policy, and `last_stats` (a PoolStats) counts what
happened in that batch: worker_restarts, plugin_restarts, failure causes (timeout, memory,
crash, worker_died, worker_hung, raised, error); `counters()` keeps the totals and
`health()` says how many workers answer.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from qwen25_rl.reward.catalog import get_reward
from qwen25_rl.reward.config import RewardConfig
from qwen25_rl.reward.scorer import (
    RewardFailureError,
    RewardScorer,
    RewardSetupError,
    RewardStats,
    apply_failure_policy,
    check_plugins,
    combine,
    summarize,
)
from qwen25_rl.reward.types import RewardResult, RewardSample

log = logging.getLogger("reward.pool")


class RewardWorker:
    """Ray actor body: one RewardScorer. Returns raw (policy-free) results per chunk."""

    def __init__(self, cfg_json: dict[str, Any]):
        from qwen25_rl.reward.isolation import limit_memory

        self.cfg = RewardConfig.model_validate(cfg_json)
        self.scorer = RewardScorer(self.cfg)
        limit_memory(self.scorer, self.cfg.pool.memory_limit_mb)

    def ready(self) -> int:
        return os.getpid()

    def score(self, samples: list[RewardSample]) -> list[RewardResult]:
        raw = self.scorer.score_raw(samples)
        return [combine(s, o, self.cfg) for s, o in zip(samples, raw)]

    def score_chunk(self, samples: list[RewardSample]) -> tuple[list[RewardResult], dict[str, Any]]:
        """`score`, plus this worker's `counters()` after it (the pool's restart counts)."""
        return self.score(samples), self.counters()

    def counters(self) -> dict[str, Any]:
        """Totals of this worker's process-isolated custom rewards: children replaced, and
        failed calls per cause; the children alive now."""
        from qwen25_rl.reward.isolation import ProcessRewardFunction

        isolated = [fn for _, fn in self.scorer.functions if isinstance(fn, ProcessRewardFunction)]
        failures: Counter[str] = Counter()
        for fn in isolated:
            failures.update(fn.failures)
        return {
            "pid": os.getpid(),
            "plugin_restarts": sum(fn.restarts for fn in isolated),
            "plugin_failures": dict(failures),
            "plugin_pids": [pid for fn in isolated for pid in fn.pids()],
        }

    def close(self) -> None:
        self.scorer.close()


@dataclass
class PoolStats(RewardStats):
    """RewardStats of one batch plus what the pool went through to score it."""

    # reward worker actors the pool killed/replaced (died, hung)
    worker_restarts: int = 0
    # custom-reward child processes replaced inside the workers (hung, died, over memory)
    plugin_restarts: int = 0
    # failed function outcomes per cause: timeout, memory, crash (reward.isolation), raised
    # (the worker's scoring code raised), worker_died, worker_hung, error (anything else)
    failure_causes: dict[str, int] = field(default_factory=dict)

    def as_metrics(self, prefix: str = "reward/") -> dict[str, float | int]:
        m = super().as_metrics(prefix)
        m[f"{prefix}worker_restarts"] = self.worker_restarts
        m[f"{prefix}plugin_restarts"] = self.plugin_restarts
        for cause, n in self.failure_causes.items():
            m[f"{prefix}{cause}_failures"] = n
        return m


def failure_causes(results: list[RewardResult]) -> Counter[str]:
    """Failed function outcomes per cause: reward.isolation and the pool tag theirs in
    details[label]["failure"]; other failures count as their status (error, timeout)."""
    causes: Counter[str] = Counter()
    for r in results:
        for label, status in r.function_status.items():
            if status in ("error", "timeout"):
                d = r.details.get(label) or {}
                causes[str(d.get("failure", status))] += 1
        if r.status != "ok" and not r.function_status:  # no function applied (see combine)
            causes[r.status] += 1
    return causes


class RewardPool:
    """A fixed set of reward worker actors. One `score` call at a time (use `score_async` to
    overlap scoring with other work)."""

    def __init__(self, cfg: RewardConfig, *, name_prefix: str | None = None):
        import ray

        if not ray.is_initialized():
            raise RuntimeError("RewardPool needs Ray: call qwen25_rl.ray_utils.init_ray (or ray.init) first")
        self.cfg = cfg
        self.prefix = name_prefix or cfg.pool.name_prefix
        self._cfg_json = cfg.model_dump(mode="json")
        # Start-up check in this process first: a bad plugin path, import or signature fails
        # here with its own message, instead of as an actor-creation error.
        check_plugins(cfg)
        self._deadline_terms = [(get_reward(f.type), f.params_model(), cfg.timeout_for(f)) for f in cfg.functions]
        self._actor_cls = ray.remote(RewardWorker)
        self._generation = [0] * cfg.pool.num_workers
        self.workers = [self._start(i) for i in range(cfg.pool.num_workers)]
        self.last_stats: PoolStats | None = None
        self.restarts = 0  # worker actors replaced, in total
        self.plugin_restarts = 0  # custom-reward child processes replaced, in total
        self.failures: Counter[str] = Counter()  # failed samples per status, in total
        self.causes: Counter[str] = Counter()  # failed function outcomes per cause, in total
        self._plugin_restarts_seen = [0] * cfg.pool.num_workers  # per worker slot, its current actor's total
        self._background: ThreadPoolExecutor | None = None
        self._metrics = _RayCounters()
        self._wait_ready(self.workers)

    # -- actors ---------------------------------------------------------------------------------

    def _start(self, i: int):
        gen = self._generation[i]
        name = f"{self.prefix}-{i}" + (f"-r{gen}" if gen else "")
        return self._actor_cls.options(
            name=name,
            num_cpus=self.cfg.pool.num_cpus_per_worker,
            max_restarts=0,  # the pool replaces workers itself, knowing which chunk was lost
            max_concurrency=1,
        ).remote(self._cfg_json)

    def _wait_ready(self, actors: list) -> None:
        import ray

        refs = [a.ready.remote() for a in actors]
        try:
            ray.get(refs, timeout=self.cfg.pool.startup_timeout_s)
        except ray.exceptions.GetTimeoutError:
            need = self.cfg.pool.num_cpus_per_worker
            free = ray.available_resources().get("CPU", 0.0)
            self.shutdown()
            hint = ""
            if free < need:
                hint = (
                    f"; the cluster has {free:g} CPUs free and each worker asks for {need:g} "
                    "(pool.num_cpus_per_worker): lower it, or free CPUs"
                )
            raise RewardSetupError(
                f"reward workers did not start within {self.cfg.pool.startup_timeout_s:g} s (pool.startup_timeout_s){hint}"
            ) from None
        except ray.exceptions.RayActorError as e:
            self.shutdown()
            cause = getattr(e, "cause", None) or e
            raise RewardSetupError(f"a reward worker failed to start: {cause}") from None

    def _replace(self, i: int, why: str) -> None:
        import ray

        log.warning("replacing reward worker %s-%d: %s", self.prefix, i, why)
        try:
            ray.kill(self.workers[i], no_restart=True)
        except Exception:  # already dead
            pass
        self._generation[i] += 1
        self.restarts += 1
        self._plugin_restarts_seen[i] = 0
        self.workers[i] = self._start(i)
        # Wait for it here: a replacement that cannot start is a setup error to report, not
        # something to retry forever. Chunks on the other workers keep running meanwhile.
        self._wait_ready([self.workers[i]])

    # -- scoring --------------------------------------------------------------------------------

    def _chunk_deadline(self, chunk: list[RewardSample]) -> float:
        """Backstop for one chunk: every function's longest time on each of its samples (a
        function that knows its samples' own limits, as the code reward does, says so), plus
        worker_grace_s."""
        total = 0.0
        for spec, params, timeout_s in self._deadline_terms:
            total += sum(spec.sample_seconds(params, s, timeout_s) for s in chunk)
        return total + self.cfg.pool.worker_grace_s

    def score(self, samples: list[RewardSample]) -> list[RewardResult]:
        """Score a batch; results in sample order, the failure policy applied, stats recorded.

        Raises RewardFailureError under on_failure: fail (or when max_failure_fraction is
        exceeded) after logging the counts and first examples.
        """
        import ray

        t0 = time.monotonic()
        restarts0, plugin_restarts0 = self.restarts, self.plugin_restarts
        n = len(samples)
        results: list[RewardResult | None] = [None] * n
        if n:
            size = self.cfg.pool.chunk_size or max(1, math.ceil(n / (2 * len(self.workers))))
            queue = [list(range(i, min(i + size, n))) for i in range(0, n, size)]
            queue.reverse()
            running: dict[Any, tuple[int, list[int], float]] = {}  # ref -> (worker, indices, deadline)
            busy: set[int] = set()
            while queue or running:
                for w in range(len(self.workers)):
                    if queue and w not in busy:
                        idx = queue.pop()
                        chunk = [samples[j] for j in idx]
                        ref = self.workers[w].score_chunk.remote(chunk)
                        running[ref] = (w, idx, time.monotonic() + self._chunk_deadline(chunk))
                        busy.add(w)
                next_deadline = min(d for _, _, d in running.values())
                done, _ = ray.wait(list(running), num_returns=1, timeout=max(0.0, next_deadline - time.monotonic()))
                if done:  # collect everything already finished, so no finished chunk is timed out
                    done, _ = ray.wait(list(running), num_returns=len(running), timeout=0)
                for ref in done:
                    w, idx, _ = running.pop(ref)
                    busy.discard(w)
                    try:
                        chunk_results, counters = ray.get(ref)
                        for j, r in zip(idx, chunk_results):
                            results[j] = r
                        self._note_plugin_restarts(w, counters["plugin_restarts"])
                    except ray.exceptions.RayActorError as e:
                        self._fail_chunk(results, idx, "error", "worker_died", f"reward worker died while scoring: {_first_line(e)}")
                        self._replace(w, "it died")
                    except ray.exceptions.RayTaskError as e:  # a bug in the scoring code itself
                        self._fail_chunk(results, idx, "error", "raised", f"reward worker raised: {_first_line(e)}")
                now = time.monotonic()
                for ref, (w, idx, deadline) in list(running.items()):
                    if now >= deadline:
                        running.pop(ref)
                        busy.discard(w)
                        waited = self._chunk_deadline([samples[j] for j in idx])
                        self._fail_chunk(
                            results,
                            idx,
                            "timeout",
                            "worker_hung",
                            f"reward worker did not answer within {waited:.0f} s; it was killed and replaced",
                        )
                        self._replace(w, f"no answer for {len(idx)} samples within the backstop deadline")
        final: list[RewardResult] = results  # type: ignore[assignment]
        final = apply_failure_policy(samples, final, self.cfg.pool.on_failure, self.cfg, raise_on_fail=False)
        base = summarize(samples, final, self.cfg, self.cfg.pool.log_examples)
        causes = failure_causes(final)
        stats = PoolStats(
            **{f.name: getattr(base, f.name) for f in dataclasses.fields(RewardStats)},
            worker_restarts=self.restarts - restarts0,
            plugin_restarts=self.plugin_restarts - plugin_restarts0,
            failure_causes=dict(causes),
        )
        stats.seconds = time.monotonic() - t0
        self.last_stats = stats
        self.failures.update({"error": stats.num_error, "timeout": stats.num_timeout})
        self.causes.update(causes)
        self._metrics.record(stats)
        failed = stats.num_error + stats.num_timeout
        if failed:
            log.warning("reward failures (on_failure=%s): %s", self.cfg.pool.on_failure, stats.headline())
        if failed and self.cfg.pool.on_failure == "fail":
            raise RewardFailureError(f"reward failed and pool.on_failure is 'fail': {stats.headline()}", stats)
        frac = self.cfg.pool.max_failure_fraction
        if frac is not None and n and failed / n > frac:
            raise RewardFailureError(f"{failed}/{n} samples failed, more than pool.max_failure_fraction={frac}: {stats.headline()}", stats)
        return final

    def score_async(self, samples: list[RewardSample]) -> Future:
        """`score` in a background thread: returns a Future of the results (or of the
        RewardFailureError), so the caller can overlap reward scoring with other work.
        Calls are queued one after another: the pool scores one batch at a time."""
        if self._background is None:
            self._background = ThreadPoolExecutor(1, thread_name_prefix="reward-pool")
        return self._background.submit(self.score, samples)

    def _fail_chunk(self, results: list, idx: list[int], status: str, cause: str, error: str) -> None:
        for j in idx:
            results[j] = RewardResult(None, {}, status, error, {"(worker)": {"failure": cause}}, False, {"(worker)": status})  # type: ignore[arg-type]

    def _note_plugin_restarts(self, w: int, total: int) -> None:
        """A worker reports its own total; the pool adds what is new since its last report."""
        self.plugin_restarts += max(0, total - self._plugin_restarts_seen[w])
        self._plugin_restarts_seen[w] = total

    # -- counters and health --------------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        """Totals since the pool started: worker and plugin restarts, failed samples per
        status, failed function outcomes per cause."""
        return {
            "worker_restarts": self.restarts,
            "plugin_restarts": self.plugin_restarts,
            "failures": {k: v for k, v in self.failures.items() if v},
            "failure_causes": dict(self.causes),
        }

    def health(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """How many workers answer now (call it between batches: a worker scores one chunk at
        a time), their pids and their custom-reward child processes."""
        import ray

        refs = [w.counters.remote() for w in self.workers]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        alive = []
        for ref in ready:
            try:
                alive.append(ray.get(ref))
            except ray.exceptions.RayError:
                pass
        return {
            "workers": len(self.workers),
            "workers_alive": len(alive),
            "worker_pids": [c["pid"] for c in alive],
            "plugin_pids": [p for c in alive for p in c["plugin_pids"]],
        }

    # -- lifecycle ------------------------------------------------------------------------------

    def worker_pids(self) -> list[int]:
        import ray

        return ray.get([w.ready.remote() for w in self.workers])

    def shutdown(self) -> None:
        import ray

        if getattr(self, "_background", None) is not None:
            self._background.shutdown(wait=True)
            self._background = None
        for w in getattr(self, "workers", []):
            try:
                ray.get(w.close.remote(), timeout=30)
            except Exception:
                pass
            try:
                ray.kill(w, no_restart=True)
            except Exception:
                pass
        self.workers = []

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1][:500] if text else type(e).__name__


class _RayCounters:
    """Sample counts per status, failures per cause and restarts into Ray's metrics
    (Prometheus / dashboard); best effort."""

    def __init__(self):
        try:
            from ray.util.metrics import Counter as RayCounter

            self.samples = RayCounter("qwen25_rl_reward_samples", "reward samples scored, by status", tag_keys=("status",))
            self.dropped = RayCounter("qwen25_rl_reward_dropped", "reward samples dropped by the drop_group policy")
            self.failures = RayCounter("qwen25_rl_reward_failures", "failed reward function outcomes, by cause", tag_keys=("cause",))
            self.worker_restarts = RayCounter("qwen25_rl_reward_worker_restarts", "reward worker actors replaced (died or hung)")
            self.plugin_restarts = RayCounter(
                "qwen25_rl_reward_plugin_restarts", "custom reward child processes replaced (hung, died or over memory)"
            )
        except Exception as e:  # metrics are an extra, never a reason to fail scoring
            log.debug("ray metrics unavailable: %s", e)
            self.samples = None

    def record(self, st: PoolStats) -> None:
        if self.samples is None:
            return
        try:
            for status, k in (("ok", st.num_ok), ("error", st.num_error), ("timeout", st.num_timeout)):
                if k:
                    self.samples.inc(k, tags={"status": status})
            if st.num_dropped:
                self.dropped.inc(st.num_dropped)
            for cause, k in st.failure_causes.items():
                self.failures.inc(k, tags={"cause": cause})
            if st.worker_restarts:
                self.worker_restarts.inc(st.worker_restarts)
            if st.plugin_restarts:
                self.plugin_restarts.inc(st.plugin_restarts)
        except Exception as e:
            log.debug("recording ray metrics failed: %s", e)

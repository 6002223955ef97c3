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
"""

from __future__ import annotations

import logging
import math
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
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
        self.cfg = RewardConfig.model_validate(cfg_json)
        self.scorer = RewardScorer(self.cfg)

    def ready(self) -> int:
        return os.getpid()

    def score(self, samples: list[RewardSample]) -> list[RewardResult]:
        raw = self.scorer.score_raw(samples)
        return [combine(s, o, self.cfg) for s, o in zip(samples, raw)]

    def close(self) -> None:
        self.scorer.close()


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
        self.last_stats: RewardStats | None = None
        self.restarts = 0
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
                        ref = self.workers[w].score.remote(chunk)
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
                        for j, r in zip(idx, ray.get(ref)):
                            results[j] = r
                    except ray.exceptions.RayActorError as e:
                        self._fail_chunk(results, idx, "error", f"reward worker died while scoring: {_first_line(e)}")
                        self._replace(w, "it died")
                    except ray.exceptions.RayTaskError as e:  # a bug in the scoring code itself
                        self._fail_chunk(results, idx, "error", f"reward worker raised: {_first_line(e)}")
                now = time.monotonic()
                for ref, (w, idx, deadline) in list(running.items()):
                    if now >= deadline:
                        running.pop(ref)
                        busy.discard(w)
                        waited = self._chunk_deadline([samples[j] for j in idx])
                        self._fail_chunk(
                            results, idx, "timeout", f"reward worker did not answer within {waited:.0f} s; it was killed and replaced"
                        )
                        self._replace(w, f"no answer for {len(idx)} samples within the backstop deadline")
        final: list[RewardResult] = results  # type: ignore[assignment]
        final = apply_failure_policy(samples, final, self.cfg.pool.on_failure, self.cfg, raise_on_fail=False)
        stats = summarize(samples, final, self.cfg, self.cfg.pool.log_examples)
        stats.seconds = time.monotonic() - t0
        self.last_stats = stats
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

    def _fail_chunk(self, results: list, idx: list[int], status: str, error: str) -> None:
        for j in idx:
            results[j] = RewardResult(None, {}, status, error, {}, False, {"(worker)": status})  # type: ignore[arg-type]

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
    """Sample counts per status into Ray's metrics (Prometheus / dashboard); best effort."""

    def __init__(self):
        try:
            from ray.util.metrics import Counter

            self.samples = Counter("qwen25_rl_reward_samples", "reward samples scored, by status", tag_keys=("status",))
            self.dropped = Counter("qwen25_rl_reward_dropped", "reward samples dropped by the drop_group policy")
        except Exception as e:  # metrics are an extra, never a reason to fail scoring
            log.debug("ray metrics unavailable: %s", e)
            self.samples = None

    def record(self, st: RewardStats) -> None:
        if self.samples is None:
            return
        for status, k in (("ok", st.num_ok), ("error", st.num_error), ("timeout", st.num_timeout)):
            if k:
                self.samples.inc(k, tags={"status": status})
        if st.num_dropped:
            self.dropped.inc(st.num_dropped)

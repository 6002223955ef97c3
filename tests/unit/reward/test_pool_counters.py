"""The reward pool's fault counters without Ray: failure causes read from results, PoolStats'
metrics, and what goes to Ray's metrics (the chaos tests drive them through a real pool)."""

from __future__ import annotations

from qwen25_rl.reward.pool import PoolStats, _RayCounters, failure_causes
from qwen25_rl.reward.types import RewardResult


def result(status: str, causes: dict[str, str | None]) -> RewardResult:
    statuses = {label: ("ok" if cause is None else cause.split(":")[0]) for label, cause in causes.items()}
    details = {label: {"failure": cause.split(":")[1]} for label, cause in causes.items() if cause and ":" in cause}
    return RewardResult(None if status != "ok" else 1.0, {}, status, None, details, False, statuses)  # type: ignore[arg-type]


def test_failure_causes_come_from_the_tags_else_the_status():
    results = [
        result("ok", {"math": None, "mine": None}),
        result("timeout", {"math": None, "mine": "timeout:timeout"}),
        result("error", {"math": "error", "mine": "error:memory"}),  # math raised: no tag
        result("error", {"(worker)": "error:worker_died"}),
        result("timeout", {"(worker)": "timeout:worker_hung"}),
        RewardResult(None, {}, "error", "no reward function applies"),
    ]
    assert failure_causes(results) == {"timeout": 1, "error": 2, "memory": 1, "worker_died": 1, "worker_hung": 1}


def test_pool_stats_metrics_carry_restarts_and_causes():
    st = PoolStats(num_samples=4, num_ok=3, num_error=1, worker_restarts=1, plugin_restarts=2, failure_causes={"memory": 1})
    m = st.as_metrics()
    assert (m["reward/error"], m["reward/worker_restarts"], m["reward/plugin_restarts"], m["reward/memory_failures"]) == (1, 1, 2, 1)
    assert PoolStats().as_metrics()["reward/worker_restarts"] == 0  # always there, 0 when nothing happened


class _Fake:
    def __init__(self):
        self.calls: list[tuple[float, dict | None]] = []

    def inc(self, value=1.0, tags=None):
        self.calls.append((value, tags))


def test_ray_counters_get_failures_per_cause_and_restarts():
    c = _RayCounters.__new__(_RayCounters)
    c.samples, c.dropped, c.failures, c.worker_restarts, c.plugin_restarts = (_Fake() for _ in range(5))
    c.record(PoolStats(num_ok=5, num_timeout=1, worker_restarts=1, plugin_restarts=2, failure_causes={"timeout": 1, "crash": 2}))
    assert c.samples.calls == [(5, {"status": "ok"}), (1, {"status": "timeout"})]
    assert c.failures.calls == [(1, {"cause": "timeout"}), (2, {"cause": "crash"})]
    assert (c.worker_restarts.calls, c.plugin_restarts.calls, c.dropped.calls) == ([(1, None)], [(2, None)], [])

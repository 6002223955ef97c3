"""Chaos: custom rewards that hang, kill their own process, grow past the memory cap, or kill
the reward worker that runs them, inside a real RewardPool on the session's local Ray.

Each test injects its fault into one sample of a batch and asserts: the sample's status (and
what the pool's on_failure policy made of it), a wall-time bound (tests/bounds.py), the
counters (PoolStats of the batch, the pool's totals), the pool back to full size (every
worker answers, one plug-in child per worker after the next batch), and nothing left behind
(the killed child, and after shutdown every worker and plug-in process of the pool, is gone).
Recovery times are printed (`-s`) for RELIABILITY.md.
"""

from __future__ import annotations

import textwrap
import time

import psutil
import pytest
from bounds import SLACK_S

from qwen25_rl.reward.config import RewardConfig
from qwen25_rl.reward.pool import RewardPool
from qwen25_rl.reward.scorer import RewardFailureError
from qwen25_rl.reward.types import RewardSample

pytestmark = pytest.mark.chaos

NUM_WORKERS = 2
TIMEOUT_S = 1.0  # per-sample deadline of the plug-in
MEMORY_LIMIT_MB = 200

PLUGIN = """
import os
import signal
import time

_hoard = []


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    if solution_str == "hang":
        while True:
            pass
    if solution_str == "grow":  # about 3 GB/s until something stops it
        while True:
            _hoard.append(bytearray(16 * 2**20))
            time.sleep(0.005)
    if solution_str == "exit":
        os._exit(3)
    if solution_str == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if solution_str == "kill-worker":  # the reward worker actor that started this process
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(60)
    return {"score": 1.0, "pid": os.getpid()}
"""


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("chaos_plugins") / "faulty_reward.py"
    path.write_text(textwrap.dedent(PLUGIN))
    return f"{path}:compute_score"


def make_cfg(plugin: str, on_failure: str, **pool) -> RewardConfig:
    return RewardConfig.model_validate(
        {
            "functions": [{"type": plugin, "name": "faulty", "timeout_s": TIMEOUT_S}],
            "pool": {
                "num_workers": NUM_WORKERS,
                "num_cpus_per_worker": 0.5,
                "chunk_size": 2,
                "on_failure": on_failure,
                "memory_limit_mb": MEMORY_LIMIT_MB,
                # well above what a fault inside a plug-in takes to be handled by isolation:
                # the backstop must not be what recovers these faults
                "worker_grace_s": 30.0,
                "log_examples": 3,
                **pool,
            },
        }
    )


def batch(faults: dict[int, str], n_groups: int = 4, per_group: int = 2) -> list[RewardSample]:
    """n_groups x per_group samples; group g's first sample says faults[g] when given."""
    out = []
    for g in range(n_groups):
        for k in range(per_group):
            text = faults.get(g, "fine") if k == 0 else "fine"
            out.append(RewardSample(text, answer="x", group_id=g, sample_id=f"{g}-{k}"))
    return out


def isolation_children() -> set[int]:
    """Plug-in child processes (reward.isolation) anywhere below this test process: Ray's
    raylet is our child, its workers its children, and the plug-in processes theirs."""
    found = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if "qwen25_rl.reward.isolation" in " ".join(p.cmdline()):
                found.add(p.pid)
        except psutil.Error:
            pass
    return found


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids, timeout_s: float = 15.0) -> list[int]:
    """The pids still running after timeout_s (an actor killed by Ray exits within about a second)."""
    deadline = time.monotonic() + timeout_s
    left = [p for p in pids if running(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if running(p)]
    return left


class Harness:
    """A started pool, warmed so that every worker has its plug-in child, with its processes noted."""

    def __init__(self, pool: RewardPool):
        self.pool = pool
        self.before = isolation_children()
        warm = pool.score(batch({}))
        assert all(r.status == "ok" for r in warm)
        self.health0 = pool.health()
        assert self.health0["workers_alive"] == NUM_WORKERS
        assert len(self.health0["plugin_pids"]) == NUM_WORKERS
        self.seen_workers = set(self.health0["worker_pids"])
        self.seen_plugins = set(self.health0["plugin_pids"])

    def score_timed(self, samples):
        t = time.perf_counter()
        results = self.pool.score(samples)
        return results, time.perf_counter() - t

    def assert_back_to_full_size(self) -> float:
        """A normal batch after the fault: all ok, every worker alive, one child per worker.
        Returns how long that batch took (it pays for restarting the killed child)."""
        t = time.perf_counter()
        after = self.pool.score(batch({}))
        took = time.perf_counter() - t
        assert [r.status for r in after] == ["ok"] * len(after)
        h = self.pool.health()
        assert h["workers_alive"] == NUM_WORKERS == len(self.pool.workers)
        assert len(h["plugin_pids"]) == NUM_WORKERS
        self.seen_workers |= set(h["worker_pids"])
        self.seen_plugins |= set(h["plugin_pids"])
        # the processes that were killed are gone, not just replaced
        replaced = (set(self.health0["plugin_pids"]) - set(h["plugin_pids"])) | (set(self.health0["worker_pids"]) - set(h["worker_pids"]))
        assert wait_gone(replaced) == []
        return took

    def assert_nothing_left(self) -> None:
        self.pool.shutdown()
        assert wait_gone(self.seen_workers | self.seen_plugins) == [], "pool processes outlived shutdown"
        assert wait_gone(isolation_children() - self.before, timeout_s=5) == [], "plug-in child processes left behind"


@pytest.fixture
def harness(local_ray):
    made: list[Harness] = []

    def start(cfg: RewardConfig, name: str) -> Harness:
        h = Harness(RewardPool(cfg, name_prefix=f"chaos/{name}"))
        made.append(h)
        return h

    yield start
    for h in made:  # a failed assertion must not leave actors on the session's Ray
        h.pool.shutdown()


def test_hanging_reward_is_killed_at_its_deadline_and_its_group_dropped(harness, plugin):
    h = harness(make_cfg(plugin, "drop_group"), "hang")
    results, elapsed = h.score_timed(batch({1: "hang"}))
    print(f"\nhang: batch with one hung sample took {elapsed:.2f} s (deadline {TIMEOUT_S:g} s)")
    assert elapsed < TIMEOUT_S + SLACK_S
    bad = results[2]
    assert bad.status == "timeout" and "'compute_score' did not finish within 1 s; its process was killed" in bad.error
    assert bad.details["faulty"]["failure"] == "timeout"
    # drop_group: its whole group is out, the others are scored
    assert [r.dropped for r in results] == [False, False, True, True, False, False, False, False]
    assert all(r.reward == 1.0 for r in results if not r.dropped)
    st = h.pool.last_stats
    assert (st.num_timeout, st.num_error, st.num_dropped) == (1, 0, 2)
    assert (st.plugin_restarts, st.worker_restarts) == (1, 0)
    assert st.failure_causes == {"timeout": 1}
    assert st.as_metrics()["reward/plugin_restarts"] == 1 and st.as_metrics()["reward/timeout_failures"] == 1
    took = h.assert_back_to_full_size()
    print(f"hang: next batch (restarts the killed plug-in process) took {took:.2f} s")
    assert h.pool.counters() == {
        "worker_restarts": 0,
        "plugin_restarts": 1,
        "failures": {"timeout": 1},
        "failure_causes": {"timeout": 1},
    }
    h.assert_nothing_left()


def test_reward_that_kills_its_own_process_is_an_error_and_scores_zero(harness, plugin):
    h = harness(make_cfg(plugin, "zero"), "crash")
    results, elapsed = h.score_timed(batch({1: "exit", 3: "sigkill"}))
    print(f"\ncrash: batch with os._exit and SIGKILL-self samples took {elapsed:.2f} s")
    assert elapsed < SLACK_S
    exited, killed = results[2], results[6]
    assert exited.status == "error" and "'compute_score': its process died (exit code 3) while scoring" in exited.error
    assert killed.status == "error" and "killed by SIGKILL" in killed.error
    # zero: the failed term counts 0, the sample stays marked as failed, nothing is dropped
    assert (exited.reward, killed.reward) == (0.0, 0.0)
    assert not any(r.dropped for r in results)
    assert [r.reward for i, r in enumerate(results) if i not in (2, 6)] == [1.0] * 6
    st = h.pool.last_stats
    assert (st.num_error, st.plugin_restarts, st.worker_restarts) == (2, 2, 0)
    assert st.failure_causes == {"crash": 2}
    took = h.assert_back_to_full_size()
    print(f"crash: next batch took {took:.2f} s")
    assert h.pool.counters()["failure_causes"] == {"crash": 2}
    h.assert_nothing_left()


def test_reward_growing_past_the_memory_cap_is_killed_and_fails_the_batch(harness, plugin):
    h = harness(make_cfg(plugin, "fail"), "memory")
    t = time.perf_counter()
    with pytest.raises(RewardFailureError, match=r"1 error") as e:
        h.pool.score(batch({2: "grow"}))
    elapsed = time.perf_counter() - t
    print(f"\nmemory: batch with a sample growing past {MEMORY_LIMIT_MB} MB took {elapsed:.2f} s")
    # the cap stops it long before its deadline would, and well before the machine notices
    assert elapsed < SLACK_S
    st = e.value.stats
    (example,) = st.examples
    assert example["sample_id"] == "2-0" and example["status"] == "error"
    assert "'compute_score' used" in example["error"]
    assert f"more than its memory limit of {MEMORY_LIMIT_MB} MB (reward.pool.memory_limit_mb); its process was killed" in example["error"]
    assert (st.plugin_restarts, st.worker_restarts, st.failure_causes) == (1, 0, {"memory": 1})
    took = h.assert_back_to_full_size()
    print(f"memory: next batch took {took:.2f} s")
    h.assert_nothing_left()


def test_reward_that_kills_its_reward_worker_costs_only_that_chunk(harness, plugin):
    h = harness(make_cfg(plugin, "drop_group"), "killer")
    results, elapsed = h.score_timed(batch({0: "kill-worker"}))
    print(f"\nkill-worker: batch whose plug-in killed its worker took {elapsed:.2f} s (includes starting a new worker)")
    # a dead worker is noticed at once; the time is the replacement worker's start
    assert elapsed < 30 + SLACK_S
    # the chunk in flight (group 0: samples 0 and 1) is lost with the worker, as errors
    assert [r.status for r in results[:2]] == ["error", "error"]
    assert "reward worker died while scoring" in results[0].error
    assert [r.dropped for r in results] == [True, True] + [False] * 6
    assert all(r.reward == 1.0 for r in results[2:])
    st = h.pool.last_stats
    assert (st.worker_restarts, st.num_error, st.failure_causes) == (1, 2, {"worker_died": 2})
    took = h.assert_back_to_full_size()
    print(f"kill-worker: next batch took {took:.2f} s")
    assert h.pool.counters()["worker_restarts"] == 1
    h.assert_nothing_left()

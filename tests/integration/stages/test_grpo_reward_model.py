"""GRPO with a learned reward model beside the math verifier: the session's tiny RM (trained by
`qwen25-rl rm` from the arithmetic chain's SFT model) scores every sample on a worker group of
its own; each criterion is a reward component, combined with the verifier's by GDPO's group
normalisation. Over a short run the policy raises the RM's score."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from qwen25_rl.paths import REPO_ROOT
from qwen25_rl.runs import read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

CRITERIA = ["truthfulness", "helpfulness", "conciseness", "relevance", "harmlessness", "debiasing"]
STEPS = 12


def test_grpo_with_a_reward_model_worker_raises_the_rm_score(chain, trained_rm, tmp_path):
    cfg = yaml.safe_load((REPO_ROOT / "configs" / "tiny" / "grpo.yaml").read_text())
    cfg["model"]["path"] = str(chain / "runs" / "tiny-sft" / "final")
    cfg["data"]["train_files"] = [str(chain / "data" / "arithmetic_train.jsonl")]
    cfg["data"]["eval_files"] = []
    cfg["reward"]["functions"] = [{"type": "math", "weight": 1.0}]
    cfg["reward"]["pool"] = {"num_workers": 1, "num_cpus_per_worker": 0.25}
    cfg["reward_models"] = [{"name": "rm", "path": str(trained_rm / "final"), "weight": 1.0, "num_cpus_per_worker": 0.5}]
    cfg["algorithm"].update(total_steps=STEPS, reward_combination="group_normalized", dynamic_sampling={"enabled": False})
    cfg["optimizer"]["lr"] = 1.0e-4
    cfg.pop("eval", None)
    cfg["checkpoint"] = {"every_n_steps": None}
    cfg["ray"] = {"num_cpus": 4, "include_dashboard": False}
    cfg["logging"] = {"output_dir": str(tmp_path), "run_name": "grpo-rm", "tensorboard": False}
    path = tmp_path / "grpo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "qwen25_rl", "grpo", "--config", str(path)], capture_output=True, text=True, timeout=1200, cwd=REPO_ROOT
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    rows = [r for r in read_metrics(tmp_path / "grpo-rm" / "metrics.jsonl") if "reward/mean" in r]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    for key in ["reward/math/mean", "reward/rm/mean", *(f"reward/rm/{c}/mean" for c in CRITERIA)]:
        assert key in rows[0], key
    rm = [r["reward/rm/mean"] for r in rows]
    half = STEPS // 2
    first, last = sum(rm[:half]) / half, sum(rm[half:]) / half
    print(f"RM score, mean of steps 1-{half}: {first:.3f}, of steps {half + 1}-{STEPS}: {last:.3f}: {[round(x, 2) for x in rm]}")
    # Seen (2026-12-06): with the session RM trained 100 steps, 6.96 -> 10.00 (first vs last 3
    # steps); with the 160-step RM, whose scores start near their top for this policy, 14.06 ->
    # 14.52 (halves). Step-to-step noise is ~1, so halves, not single steps, are compared.
    assert last > first, rm

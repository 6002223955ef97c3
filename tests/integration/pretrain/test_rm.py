"""`qwen25-rl rm` end to end: a reward model trained on Ray Train from the tiny chain's SFT model,
on synthetic pairs labelled per criterion (held out by prompt).

- held-out pairwise accuracy on every criterion well above chance (the figures measured are
  in the test and in the closing note of issue 14);
- final/ loads in transformers as a sequence classifier and scores as the training task did,
  with criteria, weights and the held-out score statistics in reward_model.json;
- a run killed after a checkpoint and started again continues to the same steps and losses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from qwen25_rl.paths import REPO_ROOT
from qwen25_rl.runs import read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

CRITERIA = ["truthfulness", "helpfulness", "conciseness", "relevance", "harmlessness", "debiasing"]
# Measured on the tiny chain's SFT model (seed 0, 240 prompts, 72 steps of 16 pairs): every
# criterion 0.9-1.0 except truthfulness (~0.7: checking an answer is arithmetic, the other
# criteria are surface features). Chance is 0.5.
MIN_ACCURACY = {"truthfulness": 0.6}
DEFAULT_MIN_ACCURACY = 0.8


def rm_config(chain, root, run_name: str, **trainer) -> dict:
    cfg = yaml.safe_load((REPO_ROOT / "configs" / "tiny" / "rm.yaml").read_text())
    data = root / "preferences"
    cfg["model"]["path"] = str(chain / "runs" / "tiny-sft" / "final")
    cfg["data"]["synthetic"] = {"out_dir": str(data), "seed": 0, "num_prompts": 240}
    cfg["data"]["train_files"] = [str(data / "preferences_train.jsonl")]
    cfg["data"]["eval_files"] = [str(data / "preferences_heldout.jsonl")]
    cfg["trainer"].update({"eval_every_n_steps": None, "report_interval_s": 0, **trainer})
    cfg["checkpoint"]["every_n_steps"] = None
    cfg["ray"]["include_dashboard"] = False
    cfg["logging"].update(output_dir=str(root / "runs"), run_name=run_name, tensorboard=False, ray_metrics=False)
    return cfg


def run_rm(cfg: dict, path) -> subprocess.CompletedProcess:
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "qwen25_rl", "rm", "--config", str(path)], capture_output=True, text=True, timeout=1200, cwd=REPO_ROOT
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def trained(chain, tmp_path_factory):
    root = tmp_path_factory.mktemp("rm")
    proc = run_rm(rm_config(chain, root, "rm"), root / "rm.yaml")
    return root / "runs" / "rm", proc.stdout


def test_heldout_pairwise_accuracy_is_well_above_chance_on_every_criterion(trained):
    run, _ = trained
    rows = read_metrics(run / "metrics.jsonl")
    final = [r for r in rows if "eval_accuracy" in r][-1]
    first = [r for r in rows if "eval_accuracy" in r][0]
    got = {c: final[f"eval_accuracy/{c}"] for c in CRITERIA}
    print("held-out accuracy per criterion:", json.dumps({c: round(v, 3) for c, v in got.items()}), "at start:", first["eval_accuracy"])
    for c, acc in got.items():
        assert acc >= MIN_ACCURACY.get(c, DEFAULT_MIN_ACCURACY), (c, got)
    assert final["eval_accuracy"] > first["eval_accuracy"] + 0.2


def test_final_loads_in_transformers_and_scores_as_training_did(trained):
    """Saving and loading: transformers' own model class, our scoring path, the same numbers; the
    saved score statistics are those of the held-out responses under the final weights."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from qwen25_rl.pretrain.prepare import RowStore
    from qwen25_rl.pretrain.rm_task import PAIR_ARRAYS, RewardTask
    from qwen25_rl.reward.learned import COMBINED, combined_scores, load_reward_model

    run, _ = trained
    final = run / "final"
    info = json.loads((final / "reward_model.json").read_text())
    assert info["criteria"] == CRITERIA and set(info["weights"]) == set(CRITERIA)
    hf = AutoModelForSequenceClassification.from_pretrained(final).eval()
    ours, rm_info = load_reward_model(final)
    tok = AutoTokenizer.from_pretrained(final)
    texts = ["Question: what is 2 + 3?\nAnswer: 5", "The weather is nice today."]
    enc = tok(texts, return_tensors="pt", padding=True, padding_side="right")
    with torch.no_grad():
        torch.testing.assert_close(hf(**enc).logits, ours(**enc).logits, rtol=0, atol=0)

    store = RowStore(run / "data" / "rm" / "eval", names=PAIR_ARRAYS)
    task = RewardTask({"reward_model": {**info, "centering_coef": 0, "rating_weight": 0, "use_margin": False}, "model": {}})
    batch = store.batch(range(store.num_rows))
    with torch.no_grad():
        chosen, rejected = task.scores(hf, batch)
    both = torch.cat([chosen, rejected])
    for i, c in enumerate(CRITERIA):
        assert info["score_mean"][c] == pytest.approx(float(both[:, i].mean()), abs=1e-4)
        assert info["score_std"][c] == pytest.approx(float(both[:, i].std(unbiased=False)), abs=1e-4)
    combined = combined_scores(both, rm_info.weight_vector())
    assert info["score_mean"][COMBINED] == pytest.approx(float(combined.mean()), abs=1e-4)


def test_a_killed_run_resumes_to_the_same_steps(chain, tmp_path):
    common = {"max_steps": 12}
    straight = rm_config(chain, tmp_path, "straight", **common)
    straight["checkpoint"]["every_n_steps"] = 4
    straight["data"]["eval_files"] = []
    run_rm(straight, tmp_path / "straight.yaml")

    killed = {**straight, "logging": {**straight["logging"], "run_name": "killed"}}
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(killed))
    args = [sys.executable, "-m", "qwen25_rl", "rm", "--config", str(path)]
    proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoints = tmp_path / "runs" / "killed" / "checkpoints"
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline and not any(checkpoints.glob("step_4*/trainer_state.json")):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any(checkpoints.glob("step_4*/trainer_state.json")), "the run never reached its step-4 checkpoint"
    run_rm(killed, path)

    a = {r["step"]: r for r in read_metrics(tmp_path / "runs" / "straight" / "metrics.jsonl") if "loss" in r}
    b = {r["step"]: r for r in read_metrics(tmp_path / "runs" / "killed" / "metrics.jsonl") if "loss" in r}
    assert sorted(a) == list(range(1, 13)) and set(b) >= set(range(5, 13))
    for step in range(5, 13):
        assert b[step]["batch_hash"] == a[step]["batch_hash"], step
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], rel=1e-5, abs=1e-6), step
    assert (tmp_path / "runs" / "killed" / "final" / "reward_model.json").is_file()

"""`qwen25-rl rm` end to end: a reward model trained on Ray Train from the tiny chain's SFT model,
on synthetic pairs labelled per criterion (held out by prompt).

- held-out pairwise accuracy on every criterion well above chance (the figures measured are
  in the test and in the closing note of issue 14);
- final/ loads in transformers as a sequence classifier and scores as the training task did,
  with criteria, weights and the held-out score statistics in reward_model.json;
- a run resumed from a checkpoint continues to the same steps and losses.
"""

from __future__ import annotations

import json

import pytest
import torch
from rm_chain import RM_CHECKPOINT, RM_STEPS, rm_config, run_rm

from qwen25_rl.runs import read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

CRITERIA = ["truthfulness", "helpfulness", "conciseness", "relevance", "harmlessness", "debiasing"]
# Measured on the tiny chain's SFT model (seed 0, 240 prompts, 160 steps of 16 pairs, lr 5e-4;
# 2026-12-06): conciseness, relevance, harmlessness, debiasing 1.0, helpfulness 0.81,
# truthfulness 0.69 (telling a right final answer from a wrong one after the same working is
# the one criterion that is not a surface feature; ~145 held-out pairs, so chance is 0.5 +- 0.04;
# 100 steps gave 0.58). Start: 0.55 overall.
MIN_ACCURACY = {"truthfulness": 0.62}
DEFAULT_MIN_ACCURACY = 0.75


def test_heldout_pairwise_accuracy_is_well_above_chance_on_every_criterion(trained_rm):
    run = trained_rm
    rows = read_metrics(run / "metrics.jsonl")
    final = [r for r in rows if "eval_accuracy" in r][-1]
    assert final["step"] == RM_STEPS, "the session RM stopped early: check its epochs against RM_STEPS"
    first = [r for r in rows if "eval_accuracy" in r][0]
    got = {c: final[f"eval_accuracy/{c}"] for c in CRITERIA}
    print("held-out accuracy per criterion:", json.dumps({c: round(v, 3) for c, v in got.items()}), "at start:", first["eval_accuracy"])
    for c, acc in got.items():
        assert acc >= MIN_ACCURACY.get(c, DEFAULT_MIN_ACCURACY), (c, got)
    assert final["eval_accuracy"] > first["eval_accuracy"] + 0.2


def test_final_loads_in_transformers_and_scores_as_training_did(trained_rm):
    """Saving and loading: transformers' own model class, our scoring path, the same numbers; the
    saved score statistics are those of the held-out responses under the final weights."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from qwen25_rl.pretrain.prepare import RowStore
    from qwen25_rl.pretrain.rm_task import PAIR_ARRAYS, RewardTask
    from qwen25_rl.reward.learned import COMBINED, combined_scores, load_reward_model

    run = trained_rm
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


def test_a_run_resumed_from_a_checkpoint_continues_exactly(trained_rm, chain, tmp_path):
    """A new run started from the session RM's step-140 checkpoint (weights, optimizer, RNG, data
    position) trains steps 141-160 on the same rows to the same losses."""
    resumed = rm_config(chain, tmp_path, "resumed", max_steps=RM_STEPS)
    resumed["data"]["synthetic"] = None  # the session RM's own files
    for key in ("train_files", "eval_files"):
        resumed["data"][key] = [f.replace(str(tmp_path), str(trained_rm.parent.parent)) for f in resumed["data"][key]]
    resumed["checkpoint"]["resume"] = str(trained_rm / "checkpoints" / f"step_{RM_CHECKPOINT}")
    run_rm(resumed, tmp_path / "resumed.yaml")
    a = {r["step"]: r for r in read_metrics(trained_rm / "metrics.jsonl") if "loss" in r}
    b = {r["step"]: r for r in read_metrics(tmp_path / "runs" / "resumed" / "metrics.jsonl") if "loss" in r}
    assert sorted(b) == list(range(RM_CHECKPOINT + 1, RM_STEPS + 1))
    for step in sorted(b):
        assert b[step]["batch_hash"] == a[step]["batch_hash"], step
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], rel=1e-5, abs=1e-6), step
    final_a = json.loads((trained_rm / "final" / "reward_model.json").read_text())
    final_b = json.loads((tmp_path / "runs" / "resumed" / "final" / "reward_model.json").read_text())
    assert final_b["score_mean"] == pytest.approx(final_a["score_mean"], abs=1e-4)

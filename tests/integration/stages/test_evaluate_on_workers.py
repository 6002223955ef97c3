"""`qwen25-rl eval` with the tiny model sampling on a vLLM rollout worker and the reward pool
scoring, on the session's Ray: a prompt file of 8 items, one results row per item, pass@k from
each item's own counts, and greedy decoding sampling once per item."""

from __future__ import annotations

import json

import pytest

from qwen25_rl.algorithms.pass_at_k import pass_at_k
from qwen25_rl.cli import main
from qwen25_rl.paths import REPO_ROOT

CONFIG = str(REPO_ROOT / "configs" / "tiny" / "eval.yaml")
# Solved = the response holds the letter "e": a random tiny model then solves some samples of
# an item and not others, so pass@k differs from pass@1.
HAS_E = 'def has_e(sample):\n    return float("e" in sample.response)\n'


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval_task")
    words = ["river", "stone", "count", "list", "write", "numbers", "alpha", "beta"]
    rows = [{"id": f"q{i}", "prompt": f"{w} {i} plus {i}", "answer": f"#### {2 * i}"} for i, w in enumerate(words)]
    (d / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "has_e.py").write_text(HAS_E)
    return d


def run_eval(tmp_path, capsys, model_dir, task, *args: str) -> tuple[dict, list[dict]]:
    out = tmp_path / "eval"
    argv = ["eval", "--config", CONFIG, "--model", str(model_dir), "--data", str(task / "prompts.jsonl"), "--out", str(out)]
    overrides = ["data.prompt_key=prompt", "rollout.max_model_len=256", "reward.pool.num_cpus_per_worker=0.25"]
    rc = main([*argv, *args, *overrides])
    assert rc == 0, capsys.readouterr().err[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return summary, results


@pytest.mark.vllm
def test_sampled_eval_has_a_row_per_item_and_pass_at_k_from_its_counts(local_ray, tiny_model_dir, task, tmp_path, capsys):
    reward = f"reward.functions=[{{type: custom, name: has_e, params: {{path: '{task / 'has_e.py'}:has_e', isolation: thread}}}}]"
    summary, results = run_eval(
        tmp_path, capsys, tiny_model_dir, task, "--n", "4", "--temperature", "1.0", "--k", "1,2,4", "--max-new-tokens", "12", reward
    )
    assert [r["id"] for r in results] == [f"q{i}" for i in range(8)]
    for r in results:
        assert r["n"] == len(r["responses"]) == len(r["correct"]) == len(r["statuses"]) == 4
        assert r["correct"] == ["e" in text for text in r["responses"]] and r["passes"] == sum(r["correct"])
    for k in (1, 2, 4):
        assert summary[f"pass@{k}"] == pytest.approx(sum(pass_at_k(4, r["passes"], k) for r in results) / 8)
    assert summary["accuracy"] == pytest.approx(sum(r["passes"] for r in results) / 32)
    assert summary["pass@1"] < summary["pass@4"], results  # some items solved by some samples only
    assert (summary["items"], summary["responses"], summary["n"], summary["reward"]) == (8, 32, 4, "has_e")


@pytest.mark.vllm
def test_greedy_eval_samples_one_response_per_item(local_ray, tiny_model_dir, task, tmp_path, capsys):
    summary, results = run_eval(tmp_path, capsys, tiny_model_dir, task, "--max-new-tokens", "8")
    assert len(results) == 8 and all(r["n"] == 1 and len(r["responses"]) == 1 for r in results)
    assert (summary["n"], summary["temperature"], summary["reward"]) == (1, 0.0, "math")
    assert summary["pass@1"] == summary["accuracy"] and sum(summary["statuses"].values()) == 8

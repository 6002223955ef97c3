"""`qwen25-rl filter` (best-of-n) on the session's Ray: given responses or responses sampled by
the rollout workers, scored by a rule reward and a reward-model worker group, the best per
prompt kept as a chat file, which `qwen25-rl sft` then trains on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from qwen25_rl.paths import REPO_ROOT
from qwen25_rl.runs import read_metrics

CONFIG = str(REPO_ROOT / "configs" / "tiny" / "filter.yaml")
RESPONSES = [
    ("count the stones", ["none", "1 2 3", "12 stones", "a1"]),
    ("write numbers quickly", ["42", "forty two", "4 and 2", "x"]),
    (
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "list two"}],
        ["one two", "1, 2", "12"],
    ),
]


@pytest.fixture(scope="module")
def rm_dir(tiny_model_dir, tiny_tokenizer, tmp_path_factory):
    from qwen25_rl.models.reward_model import save_new_reward_model

    out = tmp_path_factory.mktemp("filter_rm") / "rm"
    save_new_reward_model(
        out,
        tiny_model_dir,
        tiny_tokenizer,
        ["helpfulness", "conciseness"],
        {"helpfulness": 1.0, "conciseness": 1.0},
        max_length=128,
        seed=2,
    )
    return out


def overrides(digit_task, tmp_path, run_name: str, rm_dir=None, **extra) -> list[str]:
    base = {
        "data.train_files": "[]",
        "data.prompt_key": "prompt",
        "reward.functions": "[{type: custom, name: digits, params: {path: '"
        + str(digit_task / "digit_reward.py")
        + ":digit_fraction', isolation: thread}}]",
        "reward.pool.num_workers": 1,
        "reward.pool.num_cpus_per_worker": 0.25,
        "reward_models": f"[{{name: rm, path: '{rm_dir}', weight: 0.5, num_cpus_per_worker: 0.5}}]" if rm_dir else "[]",
        "selection.min_components": "{}",
        "logging.output_dir": str(tmp_path),
        "logging.run_name": run_name,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def run_filter(args: list[str], capsys) -> tuple[int, str]:
    from qwen25_rl.cli import main

    rc = main(["filter", "--config", CONFIG, *args])
    return rc, capsys.readouterr().err


def rows_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_given_responses_keep_the_best_by_rule_reward_plus_reward_model(local_ray, digit_task, rm_dir, tmp_path, capsys):
    from qwen25_rl.reward.learned import RewardModelScorer

    given = tmp_path / "given.jsonl"
    given.write_text("".join(json.dumps({"prompt" if isinstance(p, str) else "messages": p, "responses": r}) + "\n" for p, r in RESPONSES))
    rc, err = run_filter(overrides(digit_task, tmp_path, "best", rm_dir, **{"data.responses_files": f"[{given}]"}), capsys)
    assert rc == 0, err[-3000:]
    kept = rows_of(tmp_path / "best" / "filtered.jsonl")
    assert len(kept) == 3
    scorer = RewardModelScorer(rm_dir)
    for (prompt, responses), row in zip(RESPONSES, kept):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        rm = scorer.score([messages] * len(responses), responses).combined.tolist()
        digits = [sum(c.isdigit() for c in r) / max(len(r), 1) for r in responses]
        total = [d + 0.5 * s for d, s in zip(digits, rm)]
        best = max(range(len(responses)), key=total.__getitem__)
        assert row["messages"] == [*messages, {"role": "assistant", "content": responses[best]}]
        assert row["reward"] == pytest.approx(total[best], abs=1e-4)
        assert row["breakdown"]["digits"] == pytest.approx(digits[best]) and "rm/conciseness" in row["breakdown"]
    summary = read_metrics(tmp_path / "best" / "metrics.jsonl")[-1]
    assert summary["responses"] == 11 and summary["kept"] == 3
    assert summary["reward/mean_kept"] > summary["reward/mean_scored"]


def test_threshold_and_component_minimums_select_what_they_say(local_ray, digit_task, tmp_path, capsys):
    given = tmp_path / "given.jsonl"
    given.write_text("".join(json.dumps({"prompt" if isinstance(p, str) else "messages": p, "responses": r}) + "\n" for p, r in RESPONSES))
    files = {"data.responses_files": f"[{given}]"}
    rc, err = run_filter(
        overrides(digit_task, tmp_path, "thr", **files, **{"selection.keep": "threshold", "selection.threshold": 0.5}), capsys
    )
    assert rc == 0, err[-3000:]
    kept = [r["messages"][-1]["content"] for r in rows_of(tmp_path / "thr" / "filtered.jsonl")]
    assert sorted(kept) == sorted(["1 2 3", "a1", "42", "1, 2", "12"])  # digit fraction >= 0.5
    rc, err = run_filter(overrides(digit_task, tmp_path, "min", **files, **{"selection.min_components": "{digits: 1.0}"}), capsys)
    assert rc == 0, err[-3000:]
    assert [r["messages"][-1]["content"] for r in rows_of(tmp_path / "min" / "filtered.jsonl")] == ["42", "12"]


def test_sampled_responses_are_filtered_and_sft_trains_on_the_file(local_ray, tiny_model_dir, digit_task, tmp_path, capsys):
    rc, err = run_filter(
        overrides(
            digit_task,
            tmp_path,
            "sampled",
            **{
                "model.path": str(tiny_model_dir),
                "data.train_files": f"[{digit_task / 'train.jsonl'}]",
                "rollout.engine": "hf",
                "rollout.samples_per_prompt": 4,
                "rollout.max_new_tokens": 12,
                "rollout.max_model_len": 256,
                "selection.prompts_per_batch": 32,
            },
        ),
        capsys,
    )
    assert rc == 0, err[-3000:]
    out = tmp_path / "sampled" / "filtered.jsonl"
    kept = rows_of(out)
    summary = read_metrics(tmp_path / "sampled" / "metrics.jsonl")[-1]
    assert summary["prompts"] == 64 and summary["responses"] == 256 and len(kept) == summary["kept"] == 64
    assert all(r["messages"][-1]["role"] == "assistant" and r["candidates"] == 4 for r in kept)

    sft = yaml.safe_load((REPO_ROOT / "configs" / "tiny" / "sft.yaml").read_text())
    sft["model"]["path"] = str(tiny_model_dir)
    sft["data"] = {"train_files": [str(out)], "max_length": 128, "overlong": "drop", "packing": True}
    sft["trainer"].update(max_steps=2, micro_batch_size=4, global_batch_size=4, strategy="ddp", eval_every_n_steps=None)
    sft["checkpoint"] = {"every_n_steps": None}
    sft["ray"] = {"num_cpus": 2, "include_dashboard": False}
    sft["logging"] = {"output_dir": str(tmp_path), "run_name": "sft", "tensorboard": False, "ray_metrics": False}
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(sft))
    proc = subprocess.run(
        [sys.executable, "-m", "qwen25_rl", "sft", "--config", str(tmp_path / "sft.yaml")],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "sft" / "final" / "config.json").is_file()
    steps = [r for r in read_metrics(tmp_path / "sft" / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]

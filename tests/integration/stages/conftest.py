"""A verifiable toy task for the RL stage tests: reward = fraction of the completion's
characters that are digits. A random tiny model emits digits rarely (~1% of tokens), so the
reward starts near 0 and only rises if the RL loop really learns."""

from __future__ import annotations

import json
import random

import pytest

DIGIT_REWARD = '''
def digit_fraction(sample):
    text = sample.response
    return sum(c.isdigit() for c in text) / max(len(text), 1)


def letter_e_fraction(sample):
    text = sample.response
    return text.count("e") / max(len(text), 1)
'''


@pytest.fixture(scope="session")
def digit_task(tmp_path_factory):
    d = tmp_path_factory.mktemp("digit_task")
    rng = random.Random(0)
    words = ["alpha", "beta", "river", "stone", "count", "list", "write", "numbers", "quickly", "now"]
    with (d / "train.jsonl").open("w") as f:
        for i in range(64):
            f.write(json.dumps({"prompt": " ".join(rng.choice(words) for _ in range(4)), "data_source": "digits", "row": i}) + "\n")
    with (d / "heldout.jsonl").open("w") as f:
        for i in range(8):
            f.write(json.dumps({"prompt": " ".join(rng.choice(words) for _ in range(5)), "data_source": "digits"}) + "\n")
    (d / "digit_reward.py").write_text(DIGIT_REWARD)
    return d


@pytest.fixture(scope="session")
def grpo_overrides():
    return make_grpo_overrides


def make_grpo_overrides(model_dir, task_dir, out_dir, run_name: str, **extra) -> list[str]:
    """Overrides of configs/tiny/grpo.yaml for the toy task (small, fast, deterministic)."""
    base = {
        "model.path": str(model_dir),
        "data.train_files": f"[{task_dir / 'train.jsonl'}]",
        "data.eval_files": f"[{task_dir / 'heldout.jsonl'}]",
        "data.prompt_key": "prompt",
        "data.answer_key": "answer",
        "reward.functions": "[{type: custom, name: digits, params: {path: '" + str(task_dir / "digit_reward.py") + ":digit_fraction', isolation: thread}}]",
        "reward.pool.num_workers": 1,
        "reward.pool.num_cpus_per_worker": 0.25,
        "rollout.samples_per_prompt": 8,
        "rollout.max_new_tokens": 16,
        "rollout.max_model_len": 256,
        "rollout.num_cpus_per_worker": 1,
        "policy.num_cpus_per_worker": 1,
        "policy.micro_batch_size": 64,
        "algorithm.prompts_per_step": 8,
        "algorithm.dynamic_sampling.enabled": False,
        "algorithm.kl_coef": 0.0,
        "optimizer.lr": 1.0e-3,
        "eval.every_n_steps": "null",
        "checkpoint.every_n_steps": "null",
        "logging.output_dir": str(out_dir),
        "logging.run_name": run_name,
        "logging.tensorboard": False,
        "ray.num_cpus": 4,
        "ray.include_dashboard": False,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]

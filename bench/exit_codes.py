"""The tiny GRPO command run many times in a row: every exit code must be 0 (a flaky shutdown, a
hang at exit or a race in start-up shows here, not in one run). Each run is a fresh process with
its own embedded Ray and its own run folder; the tiny model (`init-model --preset tiny`) and a
toy prompt file with a digit-share reward are made once.

    .venv/bin/python bench/exit_codes.py [--runs 20] [--steps 2]

Prints one line per run (exit code, seconds) and a summary; exits 1 if any run did not exit 0.
Not part of the test suite (minutes on 2 cores); results are in RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REWARD = """
def digit_fraction(sample):
    text = sample.response
    return sum(c.isdigit() for c in text) / max(len(text), 1)
"""


def make_task(root: Path) -> tuple[Path, Path]:
    model = root / "model"
    subprocess.run([sys.executable, "-m", "qwen25_rl", "init-model", "--preset", "tiny", "--out", str(model)], check=True, cwd=REPO)
    rng = random.Random(0)
    words = ["alpha", "beta", "river", "stone", "count", "list", "write", "numbers", "quickly", "now"]
    task = root / "task"
    task.mkdir()
    with (task / "train.jsonl").open("w") as f:
        for _ in range(64):
            f.write(json.dumps({"prompt": " ".join(rng.choice(words) for _ in range(4))}) + "\n")
    (task / "reward.py").write_text(REWARD)
    return model, task


def command(model: Path, task: Path, out: Path, name: str, steps: int) -> list[str]:
    """The tiny GRPO run of the stage tests: hf rollouts, DDP policy, one reward worker."""
    overrides = {
        "model.path": str(model),
        "data.train_files": f"[{task / 'train.jsonl'}]",
        "data.eval_files": "[]",
        "data.prompt_key": "prompt",
        "reward.functions": f"[{{type: custom, name: digits, params: {{path: '{task / 'reward.py'}:digit_fraction', isolation: thread}}}}]",
        "reward.pool.num_workers": 1,
        "reward.pool.num_cpus_per_worker": 0.25,
        "rollout.engine": "hf",
        "policy.strategy": "ddp",
        "rollout.samples_per_prompt": 4,
        "rollout.max_new_tokens": 16,
        "rollout.max_model_len": 256,
        "rollout.num_cpus_per_worker": 1,
        "policy.num_cpus_per_worker": 1,
        "algorithm.prompts_per_step": 4,
        "algorithm.total_steps": steps,
        "algorithm.dynamic_sampling.enabled": False,
        "eval.every_n_steps": "null",
        "eval.at_start": False,
        "checkpoint.every_n_steps": 1,
        "logging.output_dir": str(out),
        "logging.run_name": name,
        "logging.tensorboard": False,
        "logging.report": False,
        "ray.num_cpus": 4,
        "ray.include_dashboard": False,
    }
    return [sys.executable, "-m", "qwen25_rl", "grpo", "--config", "configs/tiny/grpo.yaml", *(f"{k}={v}" for k, v in overrides.items())]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="qwen25-exit-codes-"))
    try:
        model, task = make_task(root)
        codes: collections.Counter[int] = collections.Counter()
        walls = []
        t_all = time.perf_counter()
        for i in range(args.runs):
            t = time.perf_counter()
            try:
                proc = subprocess.run(
                    command(model, task, root / "runs", f"run{i}", args.steps),
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    timeout=args.timeout,
                )
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                proc, rc = None, "timeout"
            wall = time.perf_counter() - t
            codes[rc] += 1
            walls.append(wall)
            print(f"run {i + 1}/{args.runs}: exit {rc} in {wall:.1f}s", flush=True)
            if rc != 0 and proc is not None:
                print(proc.stderr[-3000:], flush=True)
        total = time.perf_counter() - t_all
        walls.sort()
        print(
            f"{args.runs} runs of {args.steps} GRPO steps: exit codes {dict(codes)}; total {total:.0f}s, "
            f"per run min {walls[0]:.1f}s median {walls[len(walls) // 2]:.1f}s max {walls[-1]:.1f}s"
        )
        return 0 if set(codes) == {0} else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

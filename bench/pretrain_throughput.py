"""Pretraining throughput: Ray Train + DeepSpeed ZeRO-2 against a plain PyTorch loop.

Same tiny model (same initial weights), same packed rows in the same order, same micro-batch
/ accumulation / AdamW / clipping / loss, measured in one invocation:

1. `qwen25-rl pretrain` with 1 Ray Train worker (2 torch threads, DeepSpeed ZeRO-2);
2. a single-process loop over the rows that run prepared (2 torch threads), no Ray, no
   DeepSpeed, no reporting;
3. the same Ray Train run with 2 workers (1 thread each, gloo all-reduce);
4. the plain loop again (to see load drift on a shared machine).

Steady-state tokens/s is the median over the steps after `--warmup` (a Ray step's time
includes its share of reporting, i.e. everything between two optimizer updates). Overhead is
1 - ray / plain. Prints a Markdown section for BENCHMARKS.md.

    .venv/bin/python bench/pretrain_throughput.py [--steps 24] [--workdir /tmp/qwen25-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SEQ_LEN, MICRO, GLOBAL = 256, 8, 16


def config(workdir: Path, name: str, workers: int, steps: int, model_path: str | None) -> dict:
    data = workdir / "data"
    cfg = {
        "stage": "pretrain",
        "data": {
            "synthetic": {"out_dir": str(data), "arithmetic_train": 1500, "arithmetic_heldout": 50, "code_train": 200, "code_heldout": 10},
            "sources": [
                {"name": "arithmetic", "files": [str(data / "pretrain_arithmetic.jsonl")], "weight": 0.7},
                {"name": "code", "files": [str(data / "pretrain_code.jsonl")], "weight": 0.3},
            ],
        },
        "phases": [{"name": "general", "steps": steps, "seq_len": SEQ_LEN}],
        "optimizer": {"lr": 1e-3},
        "scheduler": {"name": "cosine", "warmup_steps": 2, "min_lr_ratio": 0.1},
        "trainer": {
            "num_workers": workers, "strategy": "deepspeed", "zero_stage": 2,
            "micro_batch_size": MICRO, "global_batch_size": GLOBAL, "cpus_per_worker": 2 // workers,
        },
        "ray": {"num_cpus": 2, "include_dashboard": False, "object_store_memory_mb": 256},
        "checkpoint": {"every_n_steps": None, "keep_last": 1},
        "logging": {"output_dir": str(workdir / "runs"), "run_name": name, "tensorboard": False, "ray_metrics": False, "console": False},
    }  # fmt: skip
    if model_path:
        cfg["model"] = {"path": model_path}
    else:
        cfg["model"] = {"preset": "tiny"}
        cfg["tokenizer_training"] = {"enabled": True, "vocab_size": 1024}
    return cfg


def ray_run(workdir: Path, name: str, workers: int, steps: int, model_path: str | None) -> dict:
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config(workdir, name, workers, steps, model_path)))
    t = time.time()
    proc = subprocess.run([sys.executable, "-m", "qwen25_rl", "pretrain", "--config", str(path)], capture_output=True, text=True)
    wall = time.time() - t
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-4000:]}")
    rows = [json.loads(line) for line in (workdir / "runs" / name / "metrics.jsonl").read_text().splitlines()]
    return {"rows": [r for r in rows if "loss" in r], "wall_s": wall}


def steady(values: list[float], warmup: int) -> float:
    # Skip warm-up steps and the last one (it carries the final checkpoint).
    return statistics.median(values[warmup:-1])


def plain_loop(run_dir: Path, steps: int, threads: int) -> dict:
    """The same updates as the Ray worker, in this process, with nothing around them."""
    from pretrain.reference import reference_steps
    from pretrain.schedule import PhaseSchedule

    res = reference_steps(
        run_dir / "init_model", run_dir / "data" / "general" / "train", steps=steps, global_batch=GLOBAL,
        micro_batch=MICRO, schedule=PhaseSchedule(steps=steps, peak_lr=1e-3, warmup_steps=2, decay="cosine", min_lr_ratio=0.1),
        optimizer={"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "grad_clip": 1.0}, threads=threads,
    )  # fmt: skip
    return {"tokens_per_step": res.tokens_per_step[0], "step_s": res.step_s, "losses": res.losses}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--workdir", default="/tmp/qwen25-bench-pretrain")
    args = ap.parse_args()
    work = Path(args.workdir)
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

    one = ray_run(work, "ray-1w", 1, args.steps, None)
    init = str(work / "runs" / "ray-1w" / "init_model")
    plain_a = plain_loop(work / "runs" / "ray-1w", args.steps, threads=2)
    two = ray_run(work, "ray-2w", 2, args.steps, init)
    plain_b = plain_loop(work / "runs" / "ray-1w", args.steps, threads=2)

    tok = plain_a["tokens_per_step"]
    plain_tps = [tok / statistics.median(p["step_s"][args.warmup : -1]) for p in (plain_a, plain_b)]
    ray1 = steady([r["tokens_per_s"] for r in one["rows"]], args.warmup)
    ray2 = steady([r["tokens_per_s"] for r in two["rows"]], args.warmup)
    best_plain = max(plain_tps)
    # Same model, data and order: the losses must agree (a check that the comparison is fair).
    loss_gap = max(abs(a - b["loss"]) for a, b in zip(plain_a["losses"], one["rows"]))
    loss_gap_2w = max(abs(a - b["loss"]) for a, b in zip(plain_a["losses"], two["rows"]))
    load = os.getloadavg()
    result = {
        "plain_tokens_per_s": plain_tps, "ray_1w_tokens_per_s": ray1, "ray_2w_tokens_per_s": ray2,
        "overhead_1w": 1 - ray1 / best_plain, "scaling_2w_over_1w": ray2 / ray1,
        "ray_1w_wall_s": one["wall_s"], "ray_2w_wall_s": two["wall_s"], "max_loss_gap_plain_vs_ray": loss_gap, "max_loss_gap_plain_vs_ray_2w": loss_gap_2w,
        "loadavg": load,
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    print(
        f"""
## Pretraining throughput: Ray Train + DeepSpeed vs a plain PyTorch loop (issue 6)

Command: `.venv/bin/python bench/pretrain_throughput.py --steps {args.steps}` ({time.strftime('%Y-%m-%d')}, {platform.machine()},
{os.cpu_count()} cores, float32, load average at the end {load[0]:.1f}).
Tiny Qwen2 preset, {SEQ_LEN}-token packed rows, {GLOBAL} rows per optimizer step ({tok} tokens),
micro-batch {MICRO}; median over steps {args.warmup + 1}..{args.steps - 1}.

| path | tokens/s | vs plain loop |
| --- | ---: | ---: |
| plain PyTorch loop, 1 process, 2 threads (before / after the Ray runs) | {plain_tps[0]:.0f} / {plain_tps[1]:.0f} | 1.00 |
| Ray Train TorchTrainer, DeepSpeed ZeRO-2, 1 worker x 2 threads | {ray1:.0f} | {ray1 / best_plain:.2f} (overhead {100 * (1 - ray1 / best_plain):.1f}%) |
| Ray Train TorchTrainer, DeepSpeed ZeRO-2, 2 workers x 1 thread | {ray2:.0f} | {ray2 / best_plain:.2f} ({ray2 / ray1:.2f}x the 1-worker run) |

End to end (process start to final/ written, {args.steps} steps): 1 worker {one['wall_s']:.0f} s, 2 workers {two['wall_s']:.0f} s.
Largest per-step loss difference from the plain loop (same rows, same init): 1 worker {loss_gap:.1e}, 2 workers {loss_gap_2w:.1e}.
"""
    )


if __name__ == "__main__":
    main()

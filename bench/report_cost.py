"""What a run report costs (qwen25_rl.reports.write_report), the time every stage adds at its end.

Writes 200-step metrics files shaped like a GRPO run's (the keys of the tiny demo: rewards with
reward-model criteria, held-out accuracy every 10 steps, policy and timing metrics, counters that
never change) and like a pretraining run's (two phases, held-out loss every 20 steps), then times
`write_report` in a fresh process per repeat: "cold" includes importing matplotlib (as at the end
of a stage), "warm" is a second report in the same process.

    .venv/bin/python bench/report_cost.py [--steps 200] [--repeats 3] [--out /tmp/report-bench]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
from pathlib import Path

CRITERIA = ("truthfulness", "helpfulness", "conciseness", "relevance", "harmlessness", "debiasing")


def grpo_rows(steps: int, rng: random.Random) -> list[dict]:
    def jitter(x: float) -> float:
        return x * (1 + 0.2 * (rng.random() - 0.5))

    rows = [
        {"step": 0, "time": 0.0, "eval/accuracy": 0.15, "eval/prompts": 32.0, "eval/seconds": 5.7, "eval/pass@1": 0.15, "eval/pass@4": 0.28}
    ]
    for s in range(1, steps + 1):
        row = {"step": s, "time": 1.4 * s, "time/generate_s": jitter(0.5), "time/reward_s": jitter(0.25)}
        row |= {
            k: 0.0
            for k in (
                "reward/error",
                "reward/timeout",
                "reward/dropped",
                "reward/groups_dropped",
                "reward/math/error",
                "reward/length/error",
            )
        }
        row |= {
            "reward_model/rm/truncated": 0.0,
            "time/reward_model/rm_s": jitter(0.2),
            "groups/generated": 8.0,
            "groups/kept": 8,
            "dynamic_sampling/rounds": 1,
        }
        row |= {
            "reward/mean": jitter(1.0),
            "reward/std": jitter(0.5),
            "response_length/mean": jitter(35),
            "response_length/max": jitter(58),
        }
        row |= {"response_length/clipped_frac": rng.choice([0.0, 0.03]), "tokens/generated": jitter(1100), "reward/math/mean": jitter(0.1)}
        row |= {"reward/length/mean": jitter(-0.15), "reward/rm/mean": jitter(11.0), "accuracy": jitter(0.1)}
        row |= {f"reward/rm/{c}/mean": jitter(1.0 + i) for i, c in enumerate(CRITERIA)}
        row |= {
            "policy/loss": jitter(0.02),
            "policy/pg_loss": jitter(0.02),
            "policy/approx_kl": 0.0,
            "policy/clip_frac": 0.0,
            "policy/entropy": jitter(0.46),
        }
        row |= {
            "policy/ratio_max": 1.0,
            "policy/ratio_mean": 1.0,
            "logprob_gap/sampler_trainer_abs_max": jitter(1.5e-5),
            "policy/grad_norm": jitter(1.2),
        }
        row |= {
            "policy/lr": 1e-5,
            "policy/optimizer_steps": 1.0,
            "time/train_s": jitter(0.6),
            "time/sync_s": jitter(0.06),
            "policy_version/lag_mean": 0.0,
        }
        row |= {"policy_version": s, "time/step_s": jitter(1.4), "tokens_per_s": jitter(770), "prompts/position": 8 * s}
        if s % 10 == 0:
            row |= {
                "eval/accuracy": jitter(0.15),
                "eval/prompts": 32.0,
                "eval/seconds": jitter(4.0),
                "eval/pass@1": jitter(0.15),
                "eval/pass@4": jitter(0.28),
            }
        rows.append(row)
    return rows


def pretrain_rows(steps: int, rng: random.Random) -> list[dict]:
    rows = [{"step": 0, "time": 0.0, "event": "data", "phase": "general", "rows": 610, "tokens": 155943, "sources": {"a": {"tokens": 1}}}]
    for s in range(1, steps + 1):
        phase = "general" if s <= steps * 0.85 else "long_context"
        row = {"step": s, "time": 0.5 * s, "phase": phase, "loss": 6.0 / (1 + 0.1 * s) + 0.05 * rng.random(), "lr": 3e-4 * min(1, s / 10)}
        row |= {"grad_norm": 3.0 / (1 + 0.05 * s), "tokens": 4096, "loss_tokens": 4096, "step_time_s": 0.5 + 0.05 * rng.random()}
        row |= {"tokens_per_s": 8000 + 500 * rng.random(), "tflops": 0.1 + 0.01 * rng.random(), "batch_hash": f"{s:016x}"}
        if s % 20 == 0:
            row["eval_loss"] = 6.0 / (1 + 0.1 * s)
        rows.append(row)
    return rows


CHILD = """
import json, sys, time
t0 = time.perf_counter()
from qwen25_rl.reports import write_report
write_report(sys.argv[1])
cold = time.perf_counter() - t0
t1 = time.perf_counter()
write_report(sys.argv[1])
print(json.dumps({"cold": cold, "warm": time.perf_counter() - t1}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="/tmp/report-bench")
    args = ap.parse_args()
    rng = random.Random(0)
    for name, rows, stage in (("grpo", grpo_rows(args.steps, rng), "grpo"), ("pretrain", pretrain_rows(args.steps, rng), "pretrain")):
        run = Path(args.out) / name
        run.mkdir(parents=True, exist_ok=True)
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run / "config.yaml").write_text(f"stage: {stage}\n")
        times = [
            json.loads(subprocess.run([sys.executable, "-c", CHILD, str(run)], capture_output=True, text=True, check=True).stdout)
            for _ in range(args.repeats)
        ]
        cold = statistics.median(t["cold"] for t in times)
        warm = statistics.median(t["warm"] for t in times)
        plots = len(list((run / "plots").glob("*.png")))
        print(
            f"{name}: {args.steps} steps, {plots} PNGs: cold {cold:.2f}s (with the matplotlib import), warm {warm:.2f}s; median of {args.repeats} -> {run / 'report.html'}"
        )


if __name__ == "__main__":
    main()

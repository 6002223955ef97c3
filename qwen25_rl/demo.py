"""`make demo`: the tiny Qwen2.5 recipe end to end on one embedded local Ray, on 2 CPU cores.

    synthetic data -> BPE tokenizer -> pretraining (general + long-context phase, Ray Train +
    DeepSpeed) -> chat SFT (Ray Train) -> reward model (Ray Train, one score per criterion) ->
    offline RL (DPO on rejection-sampled pairs, two rounds) -> online RL (GRPO; vLLM rollout,
    DeepSpeed policy, math verifier reward workers and a reward-model worker as Ray actors)
    -> held-out accuracy before and after each RL stage

It is `qwen25-rl pipeline --config configs/tiny/pipeline.yaml --force output_dir=runs/demo`
(the stages `qwen25-rl pretrain|sft|rm|dpo|grpo` run, from the same `configs/tiny/*.yaml`) plus a
summary of what each stage learned. All stages share one Ray instance (its dashboard URL is
printed) and each writes its own run folder under the demo's (default `runs/demo`, recreated on
every run): resolved config, `metrics.jsonl`, TensorBoard events, checkpoints and `final/` in
Hugging Face format.

    python -m qwen25_rl.demo [--out runs/demo] [--no-dashboard] [stage.key=value ...]

Overrides are prefixed with the stage they apply to, e.g. `grpo.algorithm.total_steps=5`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
PIPELINE = REPO / "configs" / "tiny" / "pipeline.yaml"
STAGES = ("pretrain", "sft", "rm", "dpo", "grpo")  # the stage names in configs/tiny/pipeline.yaml


def _last(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if key in r]
    return vals[-1] if vals else None


def _first(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if key in r]
    return vals[0] if vals else None


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qwen25_rl.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/demo", help="output folder (deleted and recreated)")
    parser.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard")
    parser.add_argument("overrides", nargs="*", help="STAGE.key=value, e.g. grpo.algorithm.total_steps=5")
    args = parser.parse_args(argv)
    from qwen25_rl.runs import read_metrics
    from qwen25_rl.stages.pipeline import load_pipeline, run_pipeline

    out = Path(args.out).resolve()
    # Every stage config is built and validated (plan) before any work, so a typo in an
    # override fails in a second, not at GRPO.
    cfg, base_dir = load_pipeline(PIPELINE, [f"output_dir={out}", f"ray.include_dashboard={not args.no_dashboard}", *args.overrides])
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    summary = run_pipeline(cfg, base_dir, force=True)
    times = {r["stage"]: r["seconds"] for r in summary["stages"]}

    def rows(stage: str) -> list[dict]:
        return read_metrics(out / stage / "metrics.jsonl")

    pre_rows, sft_rows, rm_rows, dpo_rows, grpo_rows = (rows(s) for s in STAGES)
    print("\n== demo summary ==")
    print(
        f"pretrain  {times['pretrain']:6.0f}s  train loss {_fmt(_last(pre_rows, 'loss'))}, "
        f"held-out loss {_fmt(_last(pre_rows, 'eval_loss'))}, rope_theta -> {_rope_theta(out / 'pretrain' / 'final')}"
    )
    print(f"sft       {times['sft']:6.0f}s  train loss {_fmt(_last(sft_rows, 'loss'))}, held-out loss {_fmt(_last(sft_rows, 'eval_loss'))}")
    acc = [r for r in rm_rows if "eval_accuracy" in r]
    per_criterion = ", ".join(f"{k.split('/', 1)[1]} {v:.2f}" for k, v in acc[-1].items() if k.startswith("eval_accuracy/")) if acc else ""
    print(
        f"rm        {times['rm']:6.0f}s  held-out pairwise accuracy {_fmt(acc[0]['eval_accuracy'] if acc else None)} -> "
        f"{_fmt(acc[-1]['eval_accuracy'] if acc else None)} ({per_criterion})"
    )
    pairs = [int(r["round/pairs"]) for r in dpo_rows if "round/pairs" in r]
    print(f"dpo       {times['dpo']:6.0f}s  {len(dpo_rows) - 1} steps, pairs per round {pairs}{_accuracy_change(dpo_rows)}")
    rewards = [r["reward/mean"] for r in grpo_rows if "reward/mean" in r]
    print(
        f"grpo      {times['grpo']:6.0f}s  {len(rewards)} steps, reward {_fmt(rewards[0] if rewards else None)} -> "
        f"{_fmt(rewards[-1] if rewards else None)}, RM score {_fmt(_first(grpo_rows, 'reward/rm/mean'))} -> "
        f"{_fmt(_last(grpo_rows, 'reward/rm/mean'))}{_accuracy_change(grpo_rows)}"
    )
    print(f"total {time.time() - t0:.0f}s; final model (HF format, loads in vLLM): {out / 'grpo' / 'final'}")
    print(f"TensorBoard: tensorboard --logdir {out}")
    return 0


def _accuracy_change(rows: list[dict]) -> str:
    """ ", held-out accuracy A (step 0) -> B (step N)" from a stage's evaluation rows."""
    evals = [r for r in rows if "eval/accuracy" in r]
    if len(evals) < 2:
        return ""
    before, after = evals[0], evals[-1]
    return (
        f", held-out accuracy {before['eval/accuracy']:.3f} (step {before['step']}) -> {after['eval/accuracy']:.3f} (step {after['step']})"
    )


def _rope_theta(final: Path | None) -> str:
    import json

    if final is None:
        return "-"
    from qwen25_rl.models.factory import rope_theta_of

    return str(rope_theta_of(json.loads((final / "config.json").read_text())) or "-")


if __name__ == "__main__":
    sys.exit(main())

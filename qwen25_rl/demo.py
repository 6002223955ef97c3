"""`make demo`: the tiny Qwen2.5 recipe end to end on one embedded local Ray, on 2 CPU cores.

    synthetic data -> BPE tokenizer -> pretraining (general + long-context phase, Ray Train +
    DeepSpeed) -> chat SFT (Ray Train) -> reward model (Ray Train, one score per criterion) ->
    offline RL (DPO on rejection-sampled pairs, two rounds) -> online RL (GRPO; vLLM rollout,
    DeepSpeed policy, math verifier reward workers and a reward-model worker as Ray actors)
    -> held-out accuracy before and after each RL stage

The stages are the ones `qwen25-rl pretrain|sft|rm|dpo|grpo` run, from the same `configs/tiny/*.yaml`,
with their folders moved under the demo's output folder (default `runs/demo`, recreated on
every run) so that each stage reads the one before it. All stages share one Ray instance
(its dashboard URL is printed) and each writes its own run folder: resolved config,
`metrics.jsonl`, TensorBoard events, checkpoints and `final/` in Hugging Face format.

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
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
STAGES = ("pretrain", "sft", "rm", "dpo", "grpo")
# The tiny configs chain through these folders; the demo moves them under its own.
TINY_PATHS = {
    "runs/data/synthetic-tiny": "data",
    "runs/tiny-pretrain/final": "pretrain/final",
    "runs/tiny-sft/final": "sft/final",
    "runs/tiny-dpo/final": "dpo/final",
    "runs/tiny-rm/final": "rm/final",
    "runs/data/preferences-tiny": "preferences",
}
# GRPO's online RL scores with the reward model (Qwen2.5's recipe) beside the math verifier and
# the length shaping; a small weight: the verifier stays the main signal of the tiny task.
GRPO_REWARD_MODEL = {"name": "rm", "path": "runs/tiny-rm/final", "weight": 0.1, "num_cpus_per_worker": 0.5}


def _relocate(value: Any, out: Path) -> Any:
    if isinstance(value, dict):
        return {k: _relocate(v, out) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocate(v, out) for v in value]
    if isinstance(value, str):
        for old, new in TINY_PATHS.items():
            if value.startswith(old):
                return str(out / new) + value[len(old) :]
    return value


def stage_config(stage: str, out: Path, overrides: list[str], dashboard: bool):
    """`configs/tiny/<stage>.yaml` with its data/model folders under `out` and its run in `out/<stage>`."""
    from qwen25_rl.config.loader import apply_overrides, read_yaml, stage_schema, validate_config

    source = REPO / "configs" / "tiny" / f"{stage}.yaml"
    data = _relocate(read_yaml(source), out)
    if stage == "grpo":
        data["reward_models"] = [_relocate(GRPO_REWARD_MODEL, out)]
    data.setdefault("logging", {}).update(output_dir=str(out), run_name=stage)
    data.setdefault("ray", {})["include_dashboard"] = dashboard
    origin = apply_overrides(data, overrides)
    return validate_config(data, str(source), stage_schema(stage, str(source)), origin)


def split_overrides(items: list[str]) -> dict[str, list[str]]:
    by_stage: dict[str, list[str]] = {s: [] for s in STAGES}
    for item in items:
        stage, _, rest = item.partition(".")
        if stage not in by_stage or "=" not in rest:
            raise SystemExit(f"override {item!r}: expected STAGE.key=value with STAGE one of {', '.join(STAGES)}")
        by_stage[stage].append(rest)
    return by_stage


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
    overrides = split_overrides(args.overrides)
    out = Path(args.out).resolve()
    # Validate every stage's config before any work, so a typo fails in a second, not at GRPO.
    cfgs = {s: stage_config(s, out, overrides[s], not args.no_dashboard) for s in STAGES}
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    import ray

    from qwen25_rl.pretrain.driver import run_pretrain, run_rm, run_sft
    from qwen25_rl.ray_utils import init_ray
    from qwen25_rl.runs import read_metrics
    from qwen25_rl.stages.dpo import run_dpo
    from qwen25_rl.stages.grpo import run_grpo

    # One Ray for the whole pipeline, sized for its largest stage (GRPO's actors).
    init_ray(cfgs["grpo"].ray)
    if not args.no_dashboard:
        from ray._private.worker import get_dashboard_url  # the address the dashboard really bound

        print(f"Ray dashboard: http://{get_dashboard_url()}", flush=True)
    times: dict[str, float] = {}
    t0 = time.time()
    try:
        print("\n== [1/5] pretraining: synthetic corpus, BPE tokenizer, general + long-context phases ==", flush=True)
        t = time.time()
        pre = run_pretrain(cfgs["pretrain"])
        times["pretrain"] = time.time() - t
        print("\n== [2/5] SFT: ChatML conversations, loss on assistant tokens ==", flush=True)
        t = time.time()
        sft = run_sft(cfgs["sft"])
        times["sft"] = time.time() - t
        print("\n== [3/5] reward model: one score per criterion, synthetic pairs labelled per criterion ==", flush=True)
        t = time.time()
        rm = run_rm(cfgs["rm"])
        times["rm"] = time.time() - t
        print("\n== [4/5] DPO: rejection sampling on vLLM, math-verifier pairs, two rounds ==", flush=True)
        t = time.time()
        dpo_dir = run_dpo(cfgs["dpo"])
        times["dpo"] = time.time() - t
        print("\n== [5/5] GRPO: vLLM rollouts, DeepSpeed policy, math-verifier and reward-model rewards ==", flush=True)
        t = time.time()
        grpo_dir = run_grpo(cfgs["grpo"])
        times["grpo"] = time.time() - t
    finally:
        ray.shutdown()

    pre_rows = read_metrics(pre.run_dir / "metrics.jsonl")
    sft_rows = read_metrics(sft.run_dir / "metrics.jsonl")
    dpo_rows = read_metrics(dpo_dir / "metrics.jsonl")
    grpo_rows = read_metrics(grpo_dir / "metrics.jsonl")
    print("\n== summary ==")
    print(
        f"pretrain  {times['pretrain']:6.0f}s  {pre.steps} steps, train loss {_fmt(_last(pre_rows, 'loss'))}, "
        f"held-out loss {_fmt(_last(pre_rows, 'eval_loss'))}, rope_theta -> {_rope_theta(pre.final)}"
    )
    print(
        f"sft       {times['sft']:6.0f}s  {sft.steps} steps, train loss {_fmt(_last(sft_rows, 'loss'))}, "
        f"held-out loss {_fmt(_last(sft_rows, 'eval_loss'))}"
    )
    rm_rows = read_metrics(rm.run_dir / "metrics.jsonl")
    acc = [r for r in rm_rows if "eval_accuracy" in r]
    per_criterion = ", ".join(f"{k.split('/', 1)[1]} {v:.2f}" for k, v in acc[-1].items() if k.startswith("eval_accuracy/")) if acc else ""
    print(
        f"rm        {times['rm']:6.0f}s  {rm.steps} steps, held-out pairwise accuracy {_fmt(acc[0]['eval_accuracy'] if acc else None)} -> "
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
    print(f"total {time.time() - t0:.0f}s; final model (HF format, loads in vLLM): {grpo_dir / 'final'}")
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

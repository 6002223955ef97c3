"""`qwen25-rl grpo` (online RL), `qwen25-rl dpo` (offline RL) and `qwen25-rl filter` (best-of-n) on
Ray: policy, reference, rollout, reward-model and reward workers."""

from __future__ import annotations

import argparse
import json

from qwen25_rl.cli import arg, cli_command


@cli_command(
    "grpo",
    help="Online RL (GRPO/DAPO/Dr. GRPO/RLOO/REINFORCE++) with vLLM rollouts and DeepSpeed policy workers on Ray.",
    arguments=[
        arg("--config", required=True, help="stage YAML file (stage: grpo)"),
        arg("overrides", nargs="*", help="key.sub=value overrides"),
    ],
)
def grpo(args: argparse.Namespace) -> int:
    from qwen25_rl.stages.grpo import main

    run_dir = main(args.config, args.overrides)
    print(json.dumps({"run_dir": str(run_dir), "final": str(run_dir / "final")}))
    return 0


@cli_command(
    "dpo",
    help="Offline RL: DPO on a pair file, or on pairs from rejection sampling (vLLM rollouts scored by the reward pool) in rounds.",
    arguments=[
        arg("--config", required=True, help="stage YAML file (stage: dpo)"),
        arg("overrides", nargs="*", help="key.sub=value overrides"),
    ],
)
def dpo(args: argparse.Namespace) -> int:
    from qwen25_rl.stages.dpo import main

    run_dir = main(args.config, args.overrides)
    print(json.dumps({"run_dir": str(run_dir), "final": str(run_dir / "final")}))
    return 0


@cli_command(
    "filter",
    help="Best-of-n filtering: sample K responses per prompt (or read given ones), score them with rule rewards and/or "
    "reward models, keep the best (or those above a threshold) as a chat file for `qwen25-rl sft`.",
    arguments=[
        arg("--config", required=True, help="stage YAML file (stage: filter)"),
        arg("overrides", nargs="*", help="key.sub=value overrides"),
    ],
)
def filter_(args: argparse.Namespace) -> int:
    from qwen25_rl.stages.filter import main

    out = main(args.config, args.overrides)
    print(json.dumps({"output": str(out)}))
    return 0

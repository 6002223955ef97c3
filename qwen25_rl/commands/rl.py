"""`qwen25-rl grpo` (online RL) and `qwen25-rl dpo` (offline RL) on Ray: policy, reference,
rollout and reward workers."""

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

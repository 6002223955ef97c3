"""`qwen25-rl grpo`: online RL on Ray (policy, reference, rollout and reward workers)."""

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

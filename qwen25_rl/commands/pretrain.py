"""`qwen25-rl pretrain`, `qwen25-rl sft`, `qwen25-rl rm` and `qwen25-rl synth-data`."""

from __future__ import annotations

import argparse
import json

import qwen25_rl.pretrain.config  # noqa: F401  (registers the `pretrain`, `sft` and `rm` stage configs for `config show`)
from qwen25_rl.cli import arg, cli_command

_CONFIG_ARGS = [
    arg("--config", required=True, help="stage YAML file"),
    arg("overrides", nargs="*", help="key.sub=value overrides"),
]


def _summary(result) -> dict:
    """The one JSON line a Ray Train stage ends with (worker_failures: Ray Train's restarts)."""
    return {
        "run_dir": str(result.run_dir),
        "final": str(result.final) if result.final else None,
        "steps": result.steps,
        "worker_failures": result.worker_failures,
    }


@cli_command(
    "pretrain",
    help="Pretrain (multi-phase, optional tokenizer training) with Ray Train + DeepSpeed/DDP; writes final/ in HF format.",
    arguments=_CONFIG_ARGS,
)
def pretrain(args: argparse.Namespace) -> int:
    from qwen25_rl.config import load_config
    from qwen25_rl.pretrain.config import PretrainConfig
    from qwen25_rl.pretrain.driver import run_pretrain

    result = run_pretrain(load_config(args.config, args.overrides, schema=PretrainConfig))
    print(json.dumps(_summary(result)))
    return 0


@cli_command(
    "sft",
    help="Supervised fine-tuning on ChatML conversations (loss on assistant tokens only) with Ray Train.",
    arguments=_CONFIG_ARGS,
)
def sft(args: argparse.Namespace) -> int:
    from qwen25_rl.config import load_config
    from qwen25_rl.pretrain.config import SFTConfig
    from qwen25_rl.pretrain.driver import run_sft

    result = run_sft(load_config(args.config, args.overrides, schema=SFTConfig))
    print(json.dumps(_summary(result)))
    return 0


@cli_command(
    "rm",
    help="Train a reward model (one score per criterion, Bradley-Terry on preference pairs, regression on ratings) with Ray Train.",
    arguments=_CONFIG_ARGS,
)
def rm(args: argparse.Namespace) -> int:
    from qwen25_rl.config import load_config
    from qwen25_rl.pretrain.config import RMConfig
    from qwen25_rl.pretrain.driver import run_rm

    result = run_rm(load_config(args.config, args.overrides, schema=RMConfig))
    print(json.dumps(_summary(result)))
    return 0


@cli_command(
    "synth-data",
    help="Write the synthetic task data (arithmetic in GSM8K format, Python tasks in MBPP format, pretraining and chat files, "
    "and preference pairs labelled per reward-model criterion).",
    arguments=[
        arg("--out", required=True, help="output folder"),
        arg("--seed", type=int, default=0),
        arg("--arithmetic-train", type=int, default=2000),
        arg("--arithmetic-heldout", type=int, default=200),
        arg("--code-train", type=int, default=400),
        arg("--code-heldout", type=int, default=60),
        arg("--max-operand", type=int, default=20),
        arg("--preference-prompts", type=int, default=400, help="prompts of the reward-model preference set (0: none)"),
        arg("--preference-heldout-fraction", type=float, default=0.25),
    ],
)
def synth_data(args: argparse.Namespace) -> int:
    from qwen25_rl.data import SyntheticSpec, write_synthetic_dataset
    from qwen25_rl.data.synth_preferences import write_synthetic_preferences

    spec = SyntheticSpec(
        seed=args.seed,
        arithmetic_train=args.arithmetic_train,
        arithmetic_heldout=args.arithmetic_heldout,
        code_train=args.code_train,
        code_heldout=args.code_heldout,
        max_operand=args.max_operand,
    )
    manifest = write_synthetic_dataset(args.out, spec)
    summary = {"rows": manifest["rows"]}
    if args.preference_prompts:
        # Pairs labelled per reward-model criterion, split by prompt (qwen25_rl.data.synth_preferences).
        prefs = write_synthetic_preferences(
            args.out, seed=args.seed, num_prompts=args.preference_prompts, heldout_fraction=args.preference_heldout_fraction
        )
        summary["preferences"] = {
            split: {k: s[k] for k in ("prompts", "rows", "labelled", "missing_labels")} for split, s in prefs["splits"].items()
        }
    print(json.dumps(summary))
    return 0

"""`qwen25-rl pipeline`: the recipe's stages in order, as one command (and one `ray job submit`)."""

from __future__ import annotations

import argparse

from qwen25_rl.cli import arg, cli_command


@cli_command(
    "pipeline",
    help="Run stages in order (pretrain -> SFT -> RM -> DPO -> GRPO, any subset) on one Ray, each from an earlier "
    "stage's final/; completed stages are skipped, an interrupted one resumes.",
    arguments=[
        arg("--config", required=True, help="pipeline YAML file (stage: pipeline)"),
        arg("--force", action="store_true", help="run every stage again, also the completed ones"),
        arg("overrides", nargs="*", help="key=value for the pipeline, STAGE.key=value for a stage's config"),
    ],
)
def pipeline(args: argparse.Namespace) -> int:
    from qwen25_rl.stages.pipeline import load_pipeline, run_pipeline

    cfg, base_dir = load_pipeline(args.config, args.overrides)
    run_pipeline(cfg, base_dir, force=args.force)
    return 0

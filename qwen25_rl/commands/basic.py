"""Foundation commands: `config show`, `config defaults`, `init-model`."""

from __future__ import annotations

import argparse
from pathlib import Path

from qwen25_rl.cli import arg, cli_command


@cli_command(
    "show",
    parent="config",
    help="Print the resolved config (defaults + FILE + overrides) as YAML, or its errors.",
    arguments=[
        arg("file", help="YAML config file"),
        arg("overrides", nargs="*", help="key.sub=value overrides"),
    ],
)
def config_show(args: argparse.Namespace) -> int:
    from qwen25_rl.config import dump_config, load_config

    print(dump_config(load_config(args.file, args.overrides)), end="")
    return 0


@cli_command(
    "defaults",
    parent="config",
    help="Print a stage's default config as YAML (a starting point for a new config file).",
    arguments=[arg("--stage", default="base", help="stage name (default: base)")],
)
def config_defaults(args: argparse.Namespace) -> int:
    from qwen25_rl.config import dump_config
    from qwen25_rl.config.loader import stage_schema

    print(dump_config(stage_schema(args.stage, "--stage")()), end="")
    return 0


@cli_command(
    "init-model",
    help="Write a randomly initialised Qwen2-architecture model + trained BPE tokenizer (HF format).",
    arguments=[
        arg("--preset", default="tiny", help="size preset (tiny, small-20m, qwen2.5-0.5b, ...)"),
        arg("--out", required=True, help="output folder"),
        arg("--corpus", nargs="*", default=None, help="text or JSONL files to train the tokenizer on (default: built-in corpus)"),
        arg("--tokenizer", default=None, help="use this existing tokenizer folder instead of training one"),
        arg("--vocab-size", type=int, default=4096, help="learned BPE vocabulary size (without control tokens)"),
        arg("--seed", type=int, default=0),
        arg("--dtype", default="float32", choices=["float32", "bfloat16", "float16"]),
    ],
)
def init_model(args: argparse.Namespace) -> int:
    from qwen25_rl.models import build_model, count_parameters, get_preset, load_tokenizer, save_pretrained
    from qwen25_rl.models.tokenizer import build_tokenizer, builtin_corpus, read_corpus

    preset = get_preset(args.preset)
    if args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer)
    else:
        texts = list(read_corpus(args.corpus)) if args.corpus else builtin_corpus()
        tokenizer = build_tokenizer(texts, vocab_size=args.vocab_size, model_max_length=preset.max_position_embeddings)
    model = build_model(preset, tokenizer=tokenizer, seed=args.seed, dtype=args.dtype)
    out = save_pretrained(model, tokenizer, Path(args.out))
    n = sum(p.numel() for p in model.parameters())
    print(
        f"wrote {out}: preset {preset.name}, {n:,} parameters (shape formula {count_parameters(preset):,} at preset vocab), vocab {len(tokenizer)}"
    )
    return 0

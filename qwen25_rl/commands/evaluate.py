"""`qwen25-rl eval`: accuracy and pass@k of a model (or of given responses) on GSM8K, MATH-500,
HumanEval, MBPP or a prompt file, on the rollout workers and reward pool of the RL stages."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qwen25_rl.cli import arg, cli_command
from qwen25_rl.errors import UserPathError, UserValueError

NAMED_SETS = ("gsm8k", "math500", "humaneval", "mbpp")


def _value(v) -> str:
    """An override's value as YAML (JSON is YAML): paths and names stay strings whatever they hold."""
    return json.dumps(v)


def _existing(flag: str, value: str, *, folder: bool) -> str:
    # A path on the command line means the shell's current directory (a path in a config file
    # resolves against the storage root instead, qwen25_rl.config.storage).
    p = Path(value).expanduser().resolve()
    if not (p.is_dir() if folder else p.is_file()):
        raise UserPathError(f"{flag} {value}: {'folder' if folder else 'file'} not found ({p})")
    return str(p)


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The flags as config overrides; they come after the positional ones, so flags win."""
    out: list[str] = []
    if args.model is not None:
        out += [f"model.path={_value(_existing('--model', args.model, folder=True))}", "model.preset=null"]
    if args.data is not None:
        if args.data in NAMED_SETS:
            out += [f"data.name={args.data}", "data.eval_files=[]"]
        else:
            p = Path(args.data).expanduser().resolve()
            if not p.is_file():
                raise UserValueError(f"--data {args.data}: neither a named set ({', '.join(NAMED_SETS)}) nor a file ({p} not found)")
            out += ["data.name=null", f"data.eval_files=[{_value(str(p))}]"]
    if args.responses is not None:
        out.append(f"data.responses_file={_value(_existing('--responses', args.responses, folder=False))}")
    if args.n is not None:
        out.append(f"rollout.samples_per_prompt={args.n}")
    if args.k is not None:
        try:
            ks = [int(x) for x in args.k.split(",") if x.strip()]
        except ValueError:
            raise UserValueError(f"--k {args.k!r}: expected comma-separated integers, e.g. 1,4") from None
        out.append(f"eval.pass_k={ks}")
    elif args.n is not None and args.n > 1:
        out.append(f"eval.pass_k={sorted({1, args.n})}")  # n samples: pass@1 and pass@n unless told
    if args.temperature is not None:
        out.append(f"rollout.temperature={args.temperature}")
    if args.max_new_tokens is not None:
        out.append(f"rollout.max_new_tokens={args.max_new_tokens}")
    if args.limit is not None:
        out.append(f"data.limit={args.limit}")
    if args.out is not None:
        run = Path(args.out).expanduser().resolve()
        out += [f"logging.output_dir={_value(str(run.parent))}", f"logging.run_name={_value(run.name)}"]
    return out


@cli_command(
    "eval",
    help="Evaluate a model (sampled on the rollout workers) or given responses on gsm8k, math500, humaneval, mbpp or a prompt "
    "file: accuracy and pass@k, scored by the math verifier / code sandbox / your reward functions. Writes results.jsonl "
    "(one row per item) and summary.json into the run folder.",
    arguments=[
        arg("--config", default=None, help="stage YAML (stage: eval), e.g. configs/tiny/eval.yaml; default: the schema's defaults"),
        arg("--model", default=None, help="checkpoint folder (Hugging Face format) to sample from (model.path)"),
        arg("--data", default=None, help=f"{' | '.join(NAMED_SETS)} (read from $QWEN25_RL_DATA), or a JSONL/Parquet prompt file"),
        arg(
            "--responses",
            default=None,
            help="JSONL of responses to score instead of sampling: rows {id or index, response or responses} (data.responses_file)",
        ),
        arg("--n", type=int, default=None, help="samples per prompt (rollout.samples_per_prompt; > 1 needs --temperature > 0)"),
        arg("--k", default=None, help="pass@k for these k, comma-separated, e.g. 1,4 (eval.pass_k; default 1, plus n with --n)"),
        arg("--temperature", type=float, default=None, help="sampling temperature (rollout.temperature; 0 = greedy, the default)"),
        arg("--max-new-tokens", type=int, default=None, help="tokens per response (rollout.max_new_tokens)"),
        arg("--limit", type=int, default=None, help="evaluate the first L items only (data.limit)"),
        arg("--out", default=None, help="run folder to write (default: <logging.output_dir>/eval-<time>)"),
        arg("overrides", nargs="*", help="key.sub=value overrides (flags win over them)"),
    ],
)
def evaluate(args: argparse.Namespace) -> int:
    from qwen25_rl.stages.evaluate import main

    summary = main(args.config, [*args.overrides, *flag_overrides(args)])
    run_dir = Path(summary["run_dir"])
    print(json.dumps({"run_dir": str(run_dir), "results": str(run_dir / "results.jsonl"), "summary": str(run_dir / "summary.json")}))
    return 0

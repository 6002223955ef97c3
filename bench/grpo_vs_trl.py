"""GRPO step time: qwen25-rl (Ray: vLLM rollout worker, DeepSpeed/DDP policy worker, reference
worker, reward pool) against TRL's `GRPOTrainer` (transformers generation, float32, no bf16,
no activation checkpointing), on the same model, prompts, reward and settings.

Each system runs in its own fresh process; runs alternate (TRL, ours, TRL, ours, ...). A
system's figure is the median step time over all runs' steps after `--warmup`. The fp32 matmul
rate of this machine is measured in the same invocation, and compute efficiency is

    model FLOPs of a step / (step seconds x matmul rate)

with model FLOPs = 2 N (prompt + generated tokens, generation) + 2 N T (reference forward)
+ 6 N T (policy forward + backward), N = parameters in matmuls (non-embedding + output head),
T = all tokens of the step's sequences. Both systems are charged the same useful FLOPs.

    .venv/bin/python bench/grpo_vs_trl.py --setting a [--runs 2 --steps 6 --warmup 2]
    .venv/bin/python bench/grpo_vs_trl.py --setting b [--runs 2 --steps 4 --warmup 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SETTINGS = {
    # tiny model: framework overhead dominates
    "a": {"preset": "tiny", "prompts": 8, "samples": 4, "new_tokens": 32, "beta": 0.04, "lr": 1e-5, "micro": 32},
    # ~20M-parameter Qwen2 shape: compute dominates
    "b": {"preset": "small-20m", "prompts": 16, "samples": 8, "new_tokens": 128, "beta": 0.04, "lr": 1e-5, "micro": 32},
}

REWARD_SRC = '''
def letter_e(sample):
    """Fraction of the completion's characters that are the letter e (cheap, verifiable)."""
    return sample.response.count("e") / max(len(sample.response), 1)


def letter_e_trl(prompts, completions, **kwargs):
    out = []
    for c in completions:
        text = c[0]["content"] if isinstance(c, list) else c
        out.append(text.count("e") / max(len(text), 1))
    return out
'''

WORDS = ["alpha", "beta", "river", "stone", "count", "list", "write", "numbers", "quickly", "now", "seven", "blue"]


def prepare(workdir: Path, setting: str) -> dict:
    """Model (HF folder), prompt file and reward file, built once per invocation."""
    import random

    from qwen25_rl.models import build_model, save_pretrained
    from qwen25_rl.models.tokenizer import build_tokenizer, builtin_corpus

    s = SETTINGS[setting]
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = workdir / f"model-{s['preset']}"
    if not (model_dir / "config.json").is_file():
        tok = build_tokenizer(builtin_corpus(), vocab_size=4096)
        save_pretrained(build_model(s["preset"], tokenizer=tok, seed=0), tok, model_dir)
    rng = random.Random(0)
    prompts = workdir / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": " ".join(rng.choice(WORDS) for _ in range(6))}) + "\n" for _ in range(256)))
    reward = workdir / "bench_reward.py"
    reward.write_text(REWARD_SRC)
    return {"model": str(model_dir), "prompts": str(prompts), "reward": str(reward)}


def matmul_gflops(seconds: float = 3.0, n: int = 1024, device: str = "cpu", dtype: str = "float32") -> float:
    """Dense n x n matmul rate (GFLOP/s) on `device` in `dtype`: the ceiling the run is judged by."""
    import torch

    dt = getattr(torch, dtype)
    a, b = torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt)

    def sync():
        if device != "cpu":
            torch.cuda.synchronize()

    torch.mm(a, b)
    sync()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10 if device != "cpu" else 1):  # GPU: queue several, then wait
            torch.mm(a, b)
            reps += 1
        sync()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def matmul_params(model_dir: str) -> int:
    from transformers import AutoConfig

    from qwen25_rl.models.presets import ModelPreset, count_parameters

    c = AutoConfig.from_pretrained(model_dir)
    p = ModelPreset(
        "x", c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size, c.vocab_size, True
    )
    # tied count = non-embedding parameters + one vocab x hidden matrix, which as the output
    # head is a matmul (the embedding lookup is not)
    return count_parameters(p)


# ---------------------------------------------------------------------------------------------
# workers (each in its own process)


def run_trl(art: dict, setting: str, steps: int) -> dict:
    import importlib.util
    import shutil
    import tempfile

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    s = SETTINGS[setting]
    spec = importlib.util.spec_from_file_location("bench_reward", art["reward"])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = [json.loads(x) for x in Path(art["prompts"]).read_text().splitlines()]
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}]} for r in rows])
    tok = AutoTokenizer.from_pretrained(art["model"])
    model = AutoModelForCausalLM.from_pretrained(art["model"], dtype=torch.float32, attn_implementation="sdpa")
    out = tempfile.mkdtemp(prefix="trl-bench-")
    batch = s["prompts"] * s["samples"]
    args = GRPOConfig(
        output_dir=out,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        num_generations=s["samples"],
        max_completion_length=s["new_tokens"],
        beta=s["beta"],
        learning_rate=s["lr"],
        max_steps=steps,
        logging_steps=1,
        report_to="none",
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        save_strategy="no",
        temperature=1.0,
        loss_type="dapo",
        seed=0,
        num_iterations=1,
        log_completions=False,
        dataloader_num_workers=0,
    )
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    trainer = GRPOTrainer(
        model=model, reward_funcs=mod.letter_e_trl, args=args, train_dataset=ds, processing_class=tok, callbacks=[StepTimer()]
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    shutil.rmtree(out, ignore_errors=True)
    return {"step_s": times, "mean_length": [h["completions/mean_length"] for h in logs], "threads": torch.get_num_threads()}


def run_ours(
    art: dict,
    setting: str,
    steps: int,
    strategy: str,
    engine: str = "vllm",
    rollout_workers: int = 1,
    eager: bool = False,
    one_step_off_policy: bool = False,
) -> dict:
    import tempfile

    from qwen25_rl.config import load_config
    from qwen25_rl.runs import read_metrics
    from qwen25_rl.stages.grpo import run_grpo
    from qwen25_rl.stages.grpo_config import GRPOConfig

    s = SETTINGS[setting]
    out = tempfile.mkdtemp(prefix="ours-bench-")
    reward = "[{type: custom, name: letter_e, params: {path: '" + art["reward"] + ":letter_e', isolation: thread}}]"
    overrides = {
        "model.path": art["model"],
        "data.train_files": f"[{art['prompts']}]",
        "data.eval_files": "[]",
        "data.prompt_key": "prompt",
        "reward.functions": reward,
        "reward.pool.num_workers": 1,
        "reward.pool.num_cpus_per_worker": 0.25,
        "rollout.engine": engine,
        "rollout.num_workers": rollout_workers,
        "rollout.num_cpus_per_worker": 1 / rollout_workers,
        "rollout.torch_threads": 2,
        "rollout.samples_per_prompt": s["samples"],
        "rollout.enforce_eager": eager,
        "rollout.max_new_tokens": s["new_tokens"],
        "rollout.max_model_len": 512,
        "policy.strategy": strategy,
        "policy.zero_stage": 2,
        "policy.micro_batch_size": s["micro"],
        "policy.num_cpus_per_worker": 1,
        "policy.torch_threads": 2,
        "reference.num_cpus_per_worker": 1,
        "reference.torch_threads": 2,
        "reference.micro_batch_size": s["micro"],
        "algorithm.prompts_per_step": s["prompts"],
        "algorithm.total_steps": steps,
        "algorithm.kl_coef": s["beta"],
        "algorithm.kl_estimator": "k3",
        "algorithm.loss_agg_mode": "token-mean",
        "algorithm.clip_high": 0.2,
        "algorithm.dynamic_sampling.enabled": False,
        "algorithm.one_step_off_policy": one_step_off_policy,
        "optimizer.lr": s["lr"],
        "eval.every_n_steps": "null",
        "eval.at_start": False,
        "checkpoint.every_n_steps": "null",
        "checkpoint.save_final": False,
        "logging.output_dir": out,
        "logging.run_name": "bench",
        "logging.tensorboard": False,
        "logging.console": False,
        "ray.num_cpus": 4,
        "ray.include_dashboard": False,
    }
    cfg = load_config(REPO / "configs" / "tiny" / "grpo.yaml", [f"{k}={v}" for k, v in overrides.items()], schema=GRPOConfig)
    run = run_grpo(cfg)
    rows = read_metrics(run / "metrics.jsonl")
    phases = {
        k: [r.get(k, 0.0) for r in rows]
        for k in ("time/generate_s", "time/reward_s", "time/reference_s", "time/old_log_probs_s", "time/train_s", "time/sync_s")
    }
    # The sampler-vs-trainer log-prob gap of every step: proof that the rollout engine samples
    # from the weights being trained (a compiled engine that kept stale weights would show here).
    gap = [r.get("logprob_gap/sampler_trainer_abs_max", float("nan")) for r in rows]
    return {
        "step_s": [r["time/step_s"] for r in rows],
        "mean_length": [r["response_length/mean"] for r in rows],
        "phases": phases,
        "gap": gap,
    }


# ---------------------------------------------------------------------------------------------


def worker_main(argv: list[str]) -> None:
    system, setting, steps, art_json, opts_json = argv
    art, opts = json.loads(art_json), json.loads(opts_json)
    if system == "trl":
        result = run_trl(art, setting, int(steps))
    else:
        result = run_ours(art, setting, int(steps), **opts, one_step_off_policy=system == "ours-off-policy")
    print("BENCH_RESULT " + json.dumps(result), flush=True)


def spawn(system: str, setting: str, steps: int, art: dict, args: argparse.Namespace) -> dict:
    env = os.environ | {"TOKENIZERS_PARALLELISM": "false", "RAY_ADDRESS": ""}
    opts = {"strategy": args.strategy, "engine": args.engine, "rollout_workers": args.rollout_workers, "eager": args.eager}
    proc = subprocess.run(
        [sys.executable, __file__, "_worker", system, setting, str(steps), json.dumps(art), json.dumps(opts)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=7200,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT ") :])
    raise RuntimeError(f"{system} run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", choices=sorted(SETTINGS), default="a")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--strategy", choices=["deepspeed", "ddp"], default="deepspeed", help="our policy worker's engine")
    ap.add_argument("--engine", choices=["vllm", "hf"], default="vllm", help="our rollout engine")
    ap.add_argument("--rollout-workers", type=int, default=1, help="our rollout workers (generation split between them)")
    ap.add_argument("--eager", action="store_true", help="our vLLM engine eager instead of torch.compile'd (rollout.enforce_eager)")
    ap.add_argument(
        "--systems",
        nargs="+",
        choices=["trl", "ours", "ours-off-policy"],
        default=["trl", "ours"],
        help="which systems to run; ours-off-policy: ours with algorithm.one_step_off_policy (generation of step k+1 "
        "overlaps the update of step k: a different algorithm from TRL's on-policy step, reported for information)",
    )
    ap.add_argument("--workdir", default="/tmp/qwen25-bench-grpo")
    args = ap.parse_args()
    s = SETTINGS[args.setting]
    art = prepare(Path(args.workdir), args.setting)
    gflops = matmul_gflops()
    n = matmul_params(art["model"])
    results: dict[str, list[dict]] = {s: [] for s in args.systems}
    for r in range(args.runs):
        for system in args.systems:
            t = time.time()
            res = spawn(system, args.setting, args.steps, art, args)
            results[system].append(res)
            print(f"run {r + 1} {system}: steps {[round(x, 2) for x in res['step_s']]} ({time.time() - t:.0f} s with start-up)", flush=True)
    gflops_end = matmul_gflops()

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(art["model"])
    prompt_len = statistics.mean(
        len(
            tok.apply_chat_template(
                [{"role": "user", "content": json.loads(x)["prompt"]}], tokenize=True, return_dict=True, add_generation_prompt=True
            )["input_ids"]
        )
        for x in Path(art["prompts"]).read_text().splitlines()[:32]
    )
    rate = (gflops + gflops_end) / 2 * 1e9
    summary = {}
    for system, runs in results.items():
        steps = [x for res in runs for x in res["step_s"][args.warmup :]]
        length = (
            statistics.mean(x for res in runs for x in res["mean_length"][args.warmup :]) if runs[0]["mean_length"] else s["new_tokens"]
        )
        seqs = s["prompts"] * s["samples"]
        tokens = seqs * (prompt_len + length)
        flops = 2 * n * tokens + 2 * n * tokens + 6 * n * tokens  # generation, reference, policy fwd+bwd
        med = statistics.median(steps)
        summary[system] = {"median_step_s": med, "steps": len(steps), "mean_length": length, "efficiency": flops / (med * rate)}
        if system.startswith("ours"):
            summary[system]["phases"] = {
                k: statistics.median(v for res in runs for v in res["phases"][k][args.warmup :]) for k in runs[0]["phases"]
            }
            summary[system]["gap"] = max(x for res in runs for x in res["gap"])
    print(f"\n## GRPO step time vs TRL, setting ({args.setting}) — {time.strftime('%Y-%m-%d')}\n")
    print(
        f"Command: `.venv/bin/python bench/grpo_vs_trl.py --setting {args.setting} --runs {args.runs} --steps {args.steps} --warmup {args.warmup} "
        f"--strategy {args.strategy} --engine {args.engine} --rollout-workers {args.rollout_workers}{' --eager' if args.eager else ''}"
        f" --systems {' '.join(args.systems)}`  "
    )
    print(
        f"Model: preset `{s['preset']}` ({n / 1e6:.1f}M matmul parameters), {s['prompts']} prompts x {s['samples']} samples, "
        f"{s['new_tokens']} new tokens, beta {s['beta']} (reference model), lr {s['lr']}, float32, prompt ~{prompt_len:.0f} tokens.  "
    )
    print(f"fp32 matmul rate measured in this run: {gflops:.0f} GFLOP/s before, {gflops_end:.0f} GFLOP/s after.\n")
    print("| system | median s/step | steps measured | mean completion tokens | compute efficiency |")
    print("| --- | --- | --- | --- | --- |")
    for system in args.systems:
        x = summary[system]
        label = {
            "trl": f"TRL {__import__('trl').__version__} GRPOTrainer",
            "ours": "qwen25-rl grpo",
            "ours-off-policy": "qwen25-rl grpo, one-step-off-policy",
        }[system]
        print(f"| {label} | {x['median_step_s']:.2f} | {x['steps']} | {x['mean_length']:.1f} | {x['efficiency']:.1%} |")
    for system in [x for x in args.systems if x.startswith("ours")]:
        x = summary[system]
        if "trl" in summary:
            print(f"\nSpeed-up of {system} (TRL / {system}): **{summary['trl']['median_step_s'] / x['median_step_s']:.2f}x**  ")
        print(f"{system} step by phase (median s): " + ", ".join(f"{k.split('/')[1][:-2]} {v:.2f}" for k, v in x["phases"].items()) + "  ")
        print(f"{system} largest sampler-vs-trainer log-prob gap over all steps: {x['gap']:.1e}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker_main(sys.argv[2:])
    else:
        main()

"""Reward-model training and scoring: qwen25-rl `rm` (Ray Train worker, DeepSpeed or DDP) against
TRL's `RewardTrainer`, and our `RewardModelGroup` against a plain transformers scoring loop.

Training (`--settings a b`): the same one-output score head on the same backbone, the same pairs
in the same batches, fp32 on CPU with 2 torch threads, AdamW (same lr, betas, eps, no weight
decay), gradient clipping at 1.0, a constant lr, `pairs` pairs per optimizer step in one
micro-batch (no accumulation), the Bradley-Terry loss -logsigmoid(r_chosen - r_rejected) without
margin or centering, chosen and rejected rows in one forward pass, right padded to the batch's
longest row. Systems (each run in its own fresh process; runs alternate trl, ours, torch, trl,
...):

    trl    TRL RewardTrainer on the text pairs (its non-conversational format with an explicit
           prompt: prompt + response + EOS tokenised as one text), sequential sampler over the
           pairs put in our order, so both train the same batches (per-step losses compared)
    ours   `python -m qwen25_rl rm --config <generated yaml>`: the real stage (driver, data prep,
           Ray, one Ray Train worker); criteria [overall], data.apply_chat_template false (the
           prompt's tokens + the response's tokens + EOS: the same ids, checked by make_pairs)
    torch  a plain PyTorch loop over the same batches, model and optimizer in one process: the
           floor both systems' per-step overhead is measured against (AdamW foreach, as our
           engines; each phase of its step is timed)

Diagnostic systems (not run by default): `torch-fused` (the floor with fused AdamW, which
transformers picks for TRL on CPU), `torch-ray` (the floor as a Ray task of a fresh local Ray),
`torch-raytrain` (the floor as the train function of a one-worker Ray Train TorchTrainer, as our
stage hosts its loop). `--strategy` takes several of ddp / deepspeed-zero0 / deepspeed-zero2 (one
`ours-...` system each).

Both systems start from the same weights: `build_reward_model` (the function our stage uses)
with seed 0 makes the initial RM that TRL and the plain loop load; our stage builds the same one
in its run folder. Step time: TRL, a TrainerCallback's on_step_begin -> on_step_end (forward,
backward, clipping, optimizer step; the collator and logging fall outside; the step-to-step
period, which includes them, is reported too); ours, `step_time_s` of metrics.jsonl (from the end
of the previous step's update to the end of this one: data loading, forward, backward, the
optimizer, the step's all-reduce of metrics, any report); torch, the whole step including
padding the batch. The first `--warmup` (2) steps of every run are left out; pairs/s = pairs per
step / median step time. Compute efficiency = 6 N T / (step s x the fp32 matmul rate measured
before and after in the same invocation), N = matmul parameters of the backbone (the score head
is negligible), T = the step's non-padding tokens.

Scoring (`--settings score`): a 20M RM (the `small-20m` backbone with a one-output head) over
`--score-samples` (prompt, response) texts of ~256 tokens, micro-batches of `--score-micro`, right
padding, fp32, 2 cores in all: `plain` = AutoModelForSequenceClassification forward over
micro-batches in the input order (tokenizer call with padding, inference_mode) in one process
with 2 threads; `plain-sorted` the same with the samples sorted by length; `group1` =
RewardModelGroup with 1 worker (2 CPUs, 2 threads); `group2` = 2 workers (1 CPU, 1 thread each).
samples/s = samples / median wall time of a `.score()` call (the first call of every process is
a warm-up and left out; process start, Ray start-up and model load are reported apart). Every
variant's scores are checked against `plain`'s (max |diff| <= 1e-4).

The machine may be shared: a watcher records the cores processes outside a run's tree kept busy
during each step (as in bench/dpo_vs_trl.py), and medians are also given over the steps during
which others used at most `--clean` cores; `--quiet-wait` waits for an idle machine before every
run and before each matmul-rate measurement, `--busy-retry` repeats a run others disturbed.

    .venv/bin/python bench/rm_vs_trl.py --quick     # smoke run, ~5 min on an idle machine
    .venv/bin/python bench/rm_vs_trl.py --quiet-wait 300 --busy-retry 0.3     # ~11 min of runs, plus waits
    # where the time goes: the floor with TRL's fused AdamW, the floor hosted by Ray Train, ours
    # with two strategies
    .venv/bin/python bench/rm_vs_trl.py --settings a b --systems torch torch-fused torch-raytrain ours
        --strategy ddp deepspeed-zero0 --repeats 1 --quiet-wait 300 --busy-retry 0.3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.dpo_vs_trl import build_model_dir, make_pairs, wait_quiet, watched  # noqa: E402
from bench.grpo_vs_trl import matmul_gflops, matmul_params  # noqa: E402

THREADS = 2
CRITERIA = ["overall"]
SETTINGS = {
    # tiny model: per-step framework overhead dominates
    "a": {"preset": "tiny", "pairs": 8, "fill": 64, "max_length": 64, "lr": 1e-5, "steps": 24, "warmup": 2},
    # the ~20M-parameter shape of the GRPO benchmark (preset small-20m), rows of a few hundred
    # tokens under max length 512: compute dominates
    "b": {"preset": "small-20m", "pairs": 8, "fill": 384, "max_length": 512, "lr": 1e-5, "steps": 4, "warmup": 2},
}
QUICK = {"a": {"steps": 5}, "b": {"steps": 3, "warmup": 1}}
SYSTEMS = ["trl", "ours", "torch", "torch-fused", "torch-ray", "torch-raytrain"]
DEFAULT_SYSTEMS = ["trl", "ours", "torch"]
SCORE_MODES = ["plain", "plain-sorted", "group1", "group2"]


STRATEGIES = ["ddp", "deepspeed-zero0", "deepspeed-zero2"]


def label(system: str) -> str:
    import trl

    if system.startswith("ours-"):
        return f"qwen25-rl rm ({system[5:]}, 1 Ray Train worker)"
    return {
        "trl": f"TRL {trl.__version__} RewardTrainer",
        "torch": "plain PyTorch loop (floor)",
        "torch-fused": "plain PyTorch loop, fused AdamW",
        "torch-ray": "plain PyTorch loop as a Ray task",
        "torch-raytrain": "plain PyTorch loop in a Ray Train worker",
    }[system]


def expand(systems: list[str], strategies: list[str]) -> list[str]:
    """`ours` becomes one system per strategy: ours-ddp, ours-deepspeed-zero2, ..."""
    return [y for x in systems for y in ([f"ours-{st}" for st in strategies] if x == "ours" else [x])]


# ---------------------------------------------------------------------------------------------
# inputs


def build_rm_folder(workdir: Path, policy: str, preset: str, max_length: int) -> str:
    """The initial RM our stage builds (`build_reward_model`, seed 0, one output), saved as an RM
    folder (with reward_model.json) for TRL, the plain loop and the scoring benchmark."""
    from transformers import AutoTokenizer

    from qwen25_rl.models.reward_model import build_reward_model
    from qwen25_rl.reward.learned import RewardModelInfo

    folder = workdir / f"rm-init-{preset}"
    if not (folder / "reward_model.json").is_file():
        tok = AutoTokenizer.from_pretrained(policy)
        model = build_reward_model(policy, CRITERIA, pad_token_id=tok.pad_token_id, seed=0, attn_implementation="sdpa")
        model.save_pretrained(folder, safe_serialization=True)
        tok.save_pretrained(folder)
        RewardModelInfo(criteria=list(CRITERIA), weights={c: 1.0 for c in CRITERIA}, max_length=max_length, source=policy).save(folder)
    return str(folder)


def prepare(workdir: Path, setting: str, steps: int) -> dict:
    from transformers import AutoTokenizer

    s = SETTINGS[setting]
    workdir.mkdir(parents=True, exist_ok=True)
    policy = build_model_dir(workdir, s["preset"])
    rm = build_rm_folder(workdir, policy, s["preset"], s["max_length"])
    tok = AutoTokenizer.from_pretrained(policy)
    # make_pairs fills `fill` tokens: prompt ~1/4, each response 85-100 % of the rest, and checks
    # that TRL's joint tokenisation (prompt + response + EOS) splits where ours does.
    rows, stats = make_pairs(tok, steps * s["pairs"], s["fill"])
    pairs = workdir / f"pairs-{setting}-{len(rows)}.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"policy": policy, "rm": rm, "pairs": str(pairs), "stats": stats}


def our_order(n: int, steps: int, pairs: int) -> list[int]:
    """The pair order of our stage (prepare_rm_data: one epoch of `n` pairs, data.seed 0)."""
    from qwen25_rl.pretrain.data_order import build_order

    order, _ = build_order([n], [1.0], steps * pairs, seed=0)
    return [int(i) for i in order]


def read_rows(art: dict, s: dict, steps: int) -> list[dict]:
    rows = [json.loads(x) for x in Path(art["pairs"]).read_text().splitlines()]
    return [rows[i] for i in our_order(len(rows), steps, s["pairs"])]


# ---------------------------------------------------------------------------------------------
# TRL (its own process: `rm_vs_trl.py _trl SETTING STEPS ART`)


def run_trl(art: dict, setting: str, steps: int) -> dict:
    import resource

    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    torch.set_num_threads(THREADS)
    s = SETTINGS[setting]
    rows = read_rows(art, s, steps)
    tok = AutoTokenizer.from_pretrained(art["rm"])
    model = AutoModelForSequenceClassification.from_pretrained(art["rm"], dtype=torch.float32, attn_implementation="sdpa")
    out = tempfile.mkdtemp(prefix="trl-rm-bench-")
    args = RewardConfig(
        output_dir=out,
        per_device_train_batch_size=s["pairs"],
        gradient_accumulation_steps=1,
        max_length=s["max_length"],
        learning_rate=s["lr"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        max_steps=steps,
        center_rewards_coefficient=None,
        train_sampling_strategy="sequential",  # the rows are already in our stage's order
        logging_steps=1,
        report_to="none",
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        save_strategy="no",
        eval_strategy="no",
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    times: list[float] = []
    starts: list[float] = []
    windows: list[tuple[float, float]] = []
    wall = {"t": 0.0}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            wall["t"] = time.time()
            starts.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - starts[-1])
            windows.append((wall["t"], time.time()))

    t_init = time.perf_counter()
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok, callbacks=[StepTimer()])
    init_s = time.perf_counter() - t_init
    # The batches TRL trains on: tokens per step without padding, and the padded width.
    lengths = [(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in trainer.train_dataset]
    result = trainer.train()
    opt = trainer.optimizer
    opt = getattr(opt, "optimizer", opt)
    group = opt.param_groups[0]
    logs = [h for h in trainer.state.log_history if "loss" in h]
    shutil.rmtree(out, ignore_errors=True)
    p = s["pairs"]
    return {
        "step_s": times,
        "period_s": [b - a for a, b in zip(starts, starts[1:])],
        "step_windows": windows,
        "tokens": [sum(c + r for c, r in lengths[i * p : (i + 1) * p]) for i in range(steps)],
        "padded_tokens": [2 * p * max(max(c, r) for c, r in lengths[i * p : (i + 1) * p]) for i in range(steps)],
        "init_s": init_s,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "loss": [h["loss"] for h in logs],
        "optimizer": f"{type(opt).__name__}(lr={group['lr']}, betas={group['betas']}, eps={group['eps']}, "
        f"wd={group['weight_decay']}, foreach={group.get('foreach')}, fused={group.get('fused')})",
        "threads": torch.get_num_threads(),
        "self_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# ---------------------------------------------------------------------------------------------
# plain PyTorch loop (its own process: `rm_vs_trl.py _torch SETTING STEPS ART`)


def run_torch(art: dict, setting: str, steps: int, fused: bool = False) -> dict:
    """The floor: batch building, forward, backward, clipping and AdamW (foreach, as our engines;
    `fused`: TRL's default on CPU) with each phase timed."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(THREADS)
    s = SETTINGS[setting]
    rows = read_rows(art, s, steps)
    tok = AutoTokenizer.from_pretrained(art["rm"])
    model = AutoModelForSequenceClassification.from_pretrained(art["rm"], dtype=torch.float32, attn_implementation="sdpa")
    model.train()

    def ids(prompt: str, response: str) -> list[int]:
        return tok.encode(prompt, add_special_tokens=False) + tok.encode(response, add_special_tokens=False) + [tok.eos_token_id]

    seqs = [(ids(r["prompt"], r["chosen"]), ids(r["prompt"], r["rejected"])) for r in rows]
    opt = torch.optim.AdamW(
        model.parameters(), lr=s["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **({"fused": True} if fused else {"foreach": True})
    )
    p = s["pairs"]
    times, windows, losses, tokens, padded = [], [], [], [], []
    phases: dict[str, list[float]] = {k: [] for k in ("batch", "forward", "backward", "clip", "optimizer")}
    for step in range(steps):
        w0, t0 = time.time(), time.perf_counter()
        marks = [t0]
        batch = seqs[step * p : (step + 1) * p]
        both = [c for c, _ in batch] + [r for _, r in batch]
        width = max(len(x) for x in both)
        input_ids = torch.full((len(both), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(both), width), dtype=torch.long)
        for i, x in enumerate(both):
            input_ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        marks.append(time.perf_counter())
        logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits.squeeze(-1)
        loss = -F.logsigmoid(logits[:p] - logits[p:]).mean()
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        marks.append(time.perf_counter())
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        marks.append(time.perf_counter())
        for k, a, b in zip(phases, marks, marks[1:]):
            phases[k].append(b - a)
        times.append(time.perf_counter() - t0)
        windows.append((w0, time.time()))
        tokens.append(sum(len(x) for x in both))
        padded.append(len(both) * width)
    return {
        "step_s": times,
        "period_s": times[1:],
        "step_windows": windows,
        "loss": losses,
        "tokens": tokens,
        "padded_tokens": padded,
        "phases": phases,
    }


def _local_ray() -> None:
    from qwen25_rl.config.schema import RayConfig
    from qwen25_rl.ray_utils import init_ray

    init_ray(RayConfig(num_cpus=THREADS, include_dashboard=False, object_store_memory_mb=256), log_to_driver=False)


def run_torch_ray(art: dict, setting: str, steps: int) -> dict:
    """The plain loop as a Ray task (2 CPUs) of a fresh local Ray: what Ray's daemons cost."""
    import ray

    _local_ray()
    return ray.get(ray.remote(num_cpus=THREADS)(run_torch).remote(art, setting, steps))


def run_torch_raytrain(art: dict, setting: str, steps: int) -> dict:
    """The plain loop as the train function of a Ray Train TorchTrainer with one worker (2 CPUs,
    gloo), as our stage runs its loop: what Ray Train's controller and worker group add."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    _local_ray()
    out = tempfile.mkdtemp(prefix="torch-raytrain-bench-")

    def loop(config: dict) -> None:
        result = run_torch(config["art"], config["setting"], config["steps"])
        (Path(config["out"]) / "result.json").write_text(json.dumps(result))

    trainer = TorchTrainer(
        loop,
        train_loop_config={"art": art, "setting": setting, "steps": steps, "out": out},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=1, use_gpu=False, resources_per_worker={"CPU": THREADS}),
        run_config=RunConfig(name="bench", storage_path=out),
    )
    trainer.fit()
    result = json.loads((Path(out) / "result.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    return result


# ---------------------------------------------------------------------------------------------
# ours: the CLI


def ours_config(art: dict, setting: str, steps: int, out: str, strategy: str) -> Path:
    import yaml

    s = SETTINGS[setting]
    engine, _, zero = strategy.partition("-zero")
    cfg = {
        "stage": "rm",
        "seed": 0,
        "model": {"path": art["policy"], "gradient_checkpointing": False, "attn_implementation": "sdpa"},
        "data": {
            "train_files": [art["pairs"]],
            "eval_files": [],
            "apply_chat_template": False,
            "max_length": s["max_length"],
            "on_long": "error",
            "seed": 0,
        },
        "reward_model": {"criteria": CRITERIA, "weights": None, "centering_coef": 0.0, "use_margin": False, "rating_weight": 0.0},
        "optimizer": {"lr": s["lr"], "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "grad_clip": 1.0},
        "scheduler": {"name": "constant", "warmup_steps": 0},
        "trainer": {
            "num_workers": 1,
            "strategy": engine,
            "zero_stage": int(zero or 0),
            "micro_batch_size": s["pairs"],
            "global_batch_size": s["pairs"],
            "cpus_per_worker": THREADS,
            "torch_threads": THREADS,
            "precision": "fp32",
            "epochs": 1,
            "max_steps": steps,
            "report_interval_s": 3600,  # one report, at the final checkpoint
            "eval_every_n_steps": None,
        },
        "ray": {"num_cpus": THREADS, "include_dashboard": False, "object_store_memory_mb": 256},
        "checkpoint": {"every_n_steps": None, "keep_last": 1, "save_final": True, "resume": "never"},
        "logging": {"output_dir": out, "run_name": "bench", "tensorboard": False, "console": False, "ray_metrics": False},
    }
    path = Path(out) / "rm.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def ours_result(out: str) -> dict:
    from qwen25_rl.runs import read_metrics

    rows = [r for r in read_metrics(Path(out) / "bench" / "metrics.jsonl") if "step_time_s" in r]
    if not rows:
        raise RuntimeError(f"no step rows in {out}/bench/metrics.jsonl")
    return {
        "step_s": [r["step_time_s"] for r in rows],
        "period_s": [b["wall_time"] - a["wall_time"] for a, b in zip(rows, rows[1:])],
        "step_windows": [(r["wall_time"] - r["step_time_s"], r["wall_time"]) for r in rows],
        "tokens": [r["tokens"] for r in rows],
        "loss": [r["loss"] for r in rows],
    }


# ---------------------------------------------------------------------------------------------
# running one system


def add_foreign(res: dict, watch) -> dict:
    res["step_foreign"] = [watch.foreign_cores(a, b) for a, b in res.pop("step_windows")]
    return res


def run_system(system: str, art: dict, setting: str, steps: int) -> dict:
    if system in ("trl", "torch", "torch-fused", "torch-ray", "torch-raytrain"):
        cmd = [sys.executable, __file__, f"_{system}", setting, str(steps), json.dumps(art)]
        proc, mem, wall, watch = watched(cmd)
        for line in proc.stdout.splitlines():
            if line.startswith("BENCH_RESULT "):
                return add_foreign(json.loads(line[len("BENCH_RESULT ") :]), watch) | {"memory": mem, "wall_s": wall}
        raise RuntimeError(f"{system} run failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    out = tempfile.mkdtemp(prefix="ours-rm-bench-")
    config = ours_config(art, setting, steps, out, system[len("ours-") :])
    proc, mem, wall, watch = watched([sys.executable, "-m", "qwen25_rl", "rm", "--config", str(config)])
    if proc.returncode != 0:
        raise RuntimeError(f"ours run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    res = ours_result(out)
    shutil.rmtree(out, ignore_errors=True)
    return add_foreign(res, watch) | {"memory": mem, "wall_s": wall}


def summarise(runs: list[dict], warmup: int, clean: float, pairs: int, n: int, rate: float) -> dict:
    def pick(key: str, only_clean: bool) -> list[float]:
        return [
            v for res in runs for v, f in zip(res[key][warmup:], res["step_foreign"][warmup:]) if not only_clean or (f == f and f <= clean)
        ]

    tokens = statistics.mean(t for res in runs for t in res["tokens"][warmup:])
    out: dict = {
        "tokens_per_step": tokens,
        "wall_s": [round(r["wall_s"]) for r in runs],
        "other_cores": [round(r["memory"]["foreign_cores"], 2) for r in runs],
        "period_s": statistics.median(x for r in runs for x in r["period_s"][max(warmup - 1, 0) :])
        if any(r["period_s"] for r in runs)
        else None,
        "tree_rss_peak_mib": max(r["memory"]["tree_rss_peak_mib"] for r in runs),
    }
    if "phases" in runs[0]:
        out["phases"] = {k: statistics.median(v for r in runs for v in r["phases"][k][warmup:]) for k in runs[0]["phases"]}
    if "padded_tokens" in runs[0]:
        out["padding_fraction"] = 1 - tokens / statistics.mean(t for r in runs for t in r["padded_tokens"][warmup:])
    for name, only_clean in (("all", False), ("clean", True)):
        steps = pick("step_s", only_clean)
        if not steps:
            out[name] = None
            continue
        step = statistics.median(steps)
        out[name] = {
            "median_step_s": step,
            "steps_measured": len(steps),
            "step_range_s": [min(steps), max(steps)],
            "pairs_per_s": pairs / step,
            "tokens_per_s": tokens / step,
            "efficiency": 6 * n * tokens / (step * rate),
        }
    return out


def train_setting(setting: str, args: argparse.Namespace, steps: int, warmup: int) -> dict:
    art = prepare(Path(args.workdir), setting, steps)
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(art["policy"])
    n = matmul_params(art["policy"]) - c.vocab_size * c.hidden_size  # backbone only: the head is 1 output
    systems = expand(args.systems, args.strategy)
    results: dict[str, list[dict]] = {x: [] for x in systems}
    discarded = {x: 0 for x in systems}
    for r in range(args.repeats):
        for system in systems:
            results[system].append(
                retried(
                    lambda system=system: run_system(system, art, setting, steps),
                    args,
                    f"[{setting}] run {r + 1} {system}",
                    discarded,
                    system,
                )
            )
    return {"setting": setting, "art": art, "n": n, "steps": steps, "warmup": warmup, "results": results, "discarded": discarded}


def retried(run, args: argparse.Namespace, what: str, discarded: dict, key: str) -> dict:
    """One run after waiting (`--quiet-wait`) for an idle machine; repeated (at most
    `--max-retries` times) while other processes kept more than `--busy-retry` cores busy."""
    for attempt in range(args.max_retries + 1):
        quiet = wait_quiet(args.quiet_wait) if args.quiet_wait else None
        res = run()
        res["cores_busy_before"] = quiet
        times = res.get("step_s") or res.get("call_s")
        other = res["memory"]["foreign_cores"]
        print(
            f"{what}: {[round(x, 3) for x in times]} s, other processes {other:.2f} cores, {res['wall_s']:.0f} s with start-up", flush=True
        )
        if not args.busy_retry or other <= args.busy_retry or attempt == args.max_retries:
            return res
        discarded[key] += 1
        print(f"{what}: discarded (other processes used {other:.2f} cores > {args.busy_retry:g}), repeating", flush=True)
    raise AssertionError


# ---------------------------------------------------------------------------------------------
# scoring (its own process: `rm_vs_trl.py _score MODE CALLS ART`)


def score_samples(tok, n: int, fill: int) -> list[dict]:
    """`n` (prompt, response) texts of ~`fill` tokens (both sides of n/2 make_pairs pairs)."""
    rows, _ = make_pairs(tok, (n + 1) // 2, fill, seed=1)
    out = []
    for i, r in enumerate(rows):
        out += [
            {"id": f"s{2 * i}", "prompt": r["prompt"], "response": r["chosen"]},
            {"id": f"s{2 * i + 1}", "prompt": r["prompt"], "response": r["rejected"]},
        ]
    return out[:n]


def run_score(art: dict, mode: str, calls: int, micro: int) -> dict:
    import torch

    samples = [json.loads(x) for x in Path(art["samples"]).read_text().splitlines()]
    t0 = time.perf_counter()
    times, windows = [], []
    if mode.startswith("plain"):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.set_num_threads(THREADS)
        tok = AutoTokenizer.from_pretrained(art["rm"])
        model = AutoModelForSequenceClassification.from_pretrained(art["rm"], dtype=torch.float32, attn_implementation="sdpa").eval()
        startup = time.perf_counter() - t0

        def score() -> list[float]:
            texts = [x["prompt"] + x["response"] + tok.eos_token for x in samples]
            order = list(range(len(texts)))
            if mode == "plain-sorted":
                n_tok = [len(t) for t in tok(texts, add_special_tokens=False)["input_ids"]]
                order.sort(key=lambda i: n_tok[i])
            scores = [0.0] * len(texts)
            with torch.inference_mode():
                for start in range(0, len(order), micro):
                    idx = order[start : start + micro]
                    enc = tok([texts[i] for i in idx], padding=True, padding_side="right", add_special_tokens=False, return_tensors="pt")
                    logits = model(**enc).logits[:, 0]
                    for i, v in zip(idx, logits.tolist()):
                        scores[i] = v
            return scores

    else:
        from qwen25_rl.actors.reward_model import RewardModelGroup, RMSample
        from qwen25_rl.config.schema import RayConfig
        from qwen25_rl.ray_utils import init_ray

        workers = int(mode[len("group") :])
        init_ray(RayConfig(num_cpus=THREADS, include_dashboard=False, object_store_memory_mb=256), log_to_driver=False)
        group = RewardModelGroup(
            art["rm"],
            name="bench/rm",
            num_workers=workers,
            num_cpus=THREADS / workers,
            micro_batch_size=micro,
            template="plain",
            torch_threads=THREADS // workers,
        )
        startup = time.perf_counter() - t0
        rm_samples = [RMSample(x["id"], x["prompt"], x["response"]) for x in samples]

        def score() -> list[float]:
            got = group.score(rm_samples)
            return [got.by_id[x["id"]][0][0] for x in samples]

    scores: list[float] = []
    for _ in range(calls):
        w, t = time.time(), time.perf_counter()
        scores = score()
        times.append(time.perf_counter() - t)
        windows.append((w, time.time()))
    return {"call_s": times, "step_windows": windows, "startup_s": startup, "scores": scores, "threads": torch.get_num_threads()}


def score_setting(args: argparse.Namespace) -> dict:
    from transformers import AutoTokenizer

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    policy = build_model_dir(workdir, "small-20m")
    rm = build_rm_folder(workdir, policy, "small-20m", 512)
    tok = AutoTokenizer.from_pretrained(rm)
    samples = score_samples(tok, args.score_samples, args.score_fill)
    path = workdir / f"score-samples-{len(samples)}.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in samples))
    lengths = [len(tok.encode(x["prompt"] + x["response"] + tok.eos_token, add_special_tokens=False)) for x in samples]
    art = {"rm": rm, "samples": str(path)}
    results: dict[str, list[dict]] = {m: [] for m in args.score_modes}
    discarded = {m: 0 for m in args.score_modes}

    def run(mode: str) -> dict:
        cmd = [sys.executable, __file__, "_score", mode, str(args.score_calls), str(args.score_micro), json.dumps(art)]
        proc, mem, wall, watch = watched(cmd)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
        if line is None:
            raise RuntimeError(f"score {mode} failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
        return add_foreign(json.loads(line[len("BENCH_RESULT ") :]), watch) | {"memory": mem, "wall_s": wall}

    for r in range(args.score_repeats):
        for mode in args.score_modes:
            results[mode].append(retried(lambda mode=mode: run(mode), args, f"[score] run {r + 1} {mode} (calls)", discarded, mode))
    return {"setting": "score", "lengths": lengths, "results": results, "discarded": discarded, "n": matmul_params(policy) - 4096 * 512}


# ---------------------------------------------------------------------------------------------
# report


def report_training(res: dict, args: argparse.Namespace, rate: float) -> dict:
    setting, s = res["setting"], SETTINGS[res["setting"]]
    systems = list(res["results"])
    warmup, steps = res["warmup"], res["steps"]
    summary = {x: summarise(runs, warmup, args.clean, s["pairs"], res["n"], rate) for x, runs in res["results"].items()}
    st = res["art"]["stats"]
    print(f"\n### ({setting}) preset `{s['preset']}`, {s['pairs']} pairs per step, max length {s['max_length']}\n")
    print(
        f"Model: preset `{s['preset']}` ({res['n'] / 1e6:.1f}M matmul parameters in the backbone, one-output score head), "
        f"{s['pairs']} pairs per step in one micro-batch, {steps} steps per run ({steps * s['pairs']} pairs, one epoch), "
        f"{warmup} warm-up steps left out, prompt {st['mean_prompt_tokens']:.1f} / chosen {st['mean_chosen_tokens']:.1f} / "
        f"rejected {st['mean_rejected_tokens']:.1f} tokens on average (longest row {st['max_total_tokens']}), lr {s['lr']}, "
        f"fp32, {THREADS} threads, {args.repeats} alternating runs per system.\n"
    )
    ratios = {}
    for name, what in (("all", "all measured steps"), ("clean", f"steps during which other processes used <= {args.clean:g} cores")):
        print(f"Medians over {what}:\n")
        print("| system | s/step | steps | pairs/s | tokens/s | compute efficiency | vs TRL (pairs/s) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        base = summary.get("trl", {}).get(name)
        for system in systems:
            x = summary[system][name]
            if x is None:
                print(f"| {label(system)} | no such step | | | | | |")
                continue
            ratio = x["pairs_per_s"] / base["pairs_per_s"] if base else None
            if ratio is not None:
                ratios[f"{system}/trl {name}"] = ratio
            print(
                f"| {label(system)} | {x['median_step_s']:.3f} | {x['steps_measured']} | {x['pairs_per_s']:.3g} | {x['tokens_per_s']:.0f} "
                f"| {x['efficiency']:.1%} | {f'{ratio:.2f}x' if ratio is not None else '-'} |"
            )
        print()
    for system in systems:
        x, a = summary[system], summary[system]["all"]
        pad = f", padding {x['padding_fraction']:.1%} of the padded batch" if "padding_fraction" in x else ""
        period = f", step-to-step period {x['period_s']:.3f} s" if x["period_s"] else ""
        if "phases" in x:
            pad += ", median phases (s): " + ", ".join(f"{k} {v:.4f}" for k, v in x["phases"].items())
        print(
            f"{system}: step range {a['step_range_s'][0]:.3f}-{a['step_range_s'][1]:.3f} s{period}{pad}, "
            f"run walls {x['wall_s']} s, other processes {x['other_cores']} cores per run, runs discarded as busy "
            f"{res['discarded'][system]}, peak RSS of the run's tree "
            f"{x['tree_rss_peak_mib']:.0f} MiB  "
        )
    trl_runs = res["results"].get("trl")
    if trl_runs:
        print(f"TRL optimizer: {trl_runs[0].get('optimizer')}  ")
        first = trl_runs[0]["loss"]
        gaps = {x: max(abs(a - b) for a, b in zip(first, runs[0]["loss"])) for x, runs in res["results"].items() if x != "trl"}
        print("Largest per-step loss difference from TRL (first runs, every step): " + json.dumps({k: f"{v:.1e}" for k, v in gaps.items()}))
        ratios["loss_gap"] = gaps
    return {"summary": summary, "ratios": ratios}


def report_score(res: dict, args: argparse.Namespace, rate: float) -> dict:
    lengths = res["lengths"]
    n_samples = len(lengths)
    base_scores = res["results"]["plain"][0]["scores"] if "plain" in res["results"] else None
    print(
        f"\n### Scoring: 20M RM (`small-20m` backbone, one output), {n_samples} samples of {statistics.mean(lengths):.0f} tokens on "
        f"average ({min(lengths)}-{max(lengths)}), micro-batches of {args.score_micro}, right padding, fp32, {THREADS} cores\n"
    )
    print(
        "| variant | s per call (median) | calls measured | samples/s | vs plain | compute efficiency | start-up s | max abs score diff vs plain |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    out = {}
    tokens = sum(lengths)
    names = {
        "plain": "transformers loop, input order (1 process, 2 threads)",
        "plain-sorted": "transformers loop, length-sorted (1 process, 2 threads)",
        "group1": "RewardModelGroup, 1 worker x 2 threads",
        "group2": "RewardModelGroup, 2 workers x 1 thread",
    }
    for mode, runs in res["results"].items():
        calls = [c for r in runs for c in r["call_s"][1:]] or [c for r in runs for c in r["call_s"]]
        med = statistics.median(calls)
        gap = max(abs(a - b) for r in runs for a, b in zip(r["scores"], base_scores)) if base_scores else float("nan")
        out[mode] = {
            "median_call_s": med,
            "samples_per_s": n_samples / med,
            "startup_s": statistics.median(r["startup_s"] for r in runs),
            "max_score_diff": gap,
            "other_cores": [round(r["memory"]["foreign_cores"], 2) for r in runs],
            "efficiency": 2 * res["n"] * tokens / (med * rate),
        }
    for mode, x in out.items():
        vs = x["samples_per_s"] / out["plain"]["samples_per_s"] if "plain" in out else float("nan")
        x["vs_plain"] = vs
        print(
            f"| {names[mode]} | {x['median_call_s']:.2f} | {len([c for r in res['results'][mode] for c in r['call_s'][1:]])} "
            f"| {x['samples_per_s']:.1f} | {vs:.2f}x | {x['efficiency']:.1%} | {x['startup_s']:.1f} | {x['max_score_diff']:.1e} |"
        )
    print()
    print("Other processes (cores, per run): " + json.dumps({m: x["other_cores"] for m, x in out.items()}))
    bad = {m: x["max_score_diff"] for m, x in out.items() if not x["max_score_diff"] <= 1e-4}
    print(f"Scores agree with the plain loop to 1e-4: {'yes' if not bad else 'NO ' + json.dumps(bad)}")
    return out


def ceiling(args: argparse.Namespace) -> float:
    """The fp32 matmul rate, after waiting (`--quiet-wait`) for an idle machine."""
    if args.quiet_wait:
        wait_quiet(args.quiet_wait)
    return matmul_gflops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", choices=["a", "b", "score"], default=["a", "b", "score"])
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs per system (training) / per variant (scoring)")
    ap.add_argument("--steps-a", type=int, default=None)
    ap.add_argument("--steps-b", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None, help="steps of each run left out (default 2)")
    ap.add_argument("--systems", nargs="+", choices=SYSTEMS, default=DEFAULT_SYSTEMS)
    ap.add_argument(
        "--strategy", nargs="+", default=["deepspeed-zero0"], choices=STRATEGIES, help="our trainer.strategy / zero_stage (one system each)"
    )
    ap.add_argument("--score-modes", nargs="+", choices=SCORE_MODES, default=SCORE_MODES)
    ap.add_argument("--score-samples", type=int, default=128)
    ap.add_argument("--score-fill", type=int, default=272, help="tokens a scored sample fills (mean ~0.94 of it)")
    ap.add_argument("--score-micro", type=int, default=16)
    ap.add_argument("--score-calls", type=int, default=3, help=".score() calls per process; the first is a warm-up")
    ap.add_argument("--score-repeats", type=int, default=1, help="processes per scoring variant (alternating)")
    ap.add_argument("--quick", action="store_true", help="smoke run: few steps, 1 repeat, 16 scored samples")
    ap.add_argument("--workdir", default="/tmp/qwen25-bench-rm")
    ap.add_argument("--quiet-wait", type=float, default=0, help="before each run, wait up to this many s for an idle machine")
    ap.add_argument("--busy-retry", type=float, default=0.0, help="repeat a run during which others used more cores than this (0: never)")
    ap.add_argument("--max-retries", type=int, default=2, help="repeats of one run at most (the last one is kept)")
    ap.add_argument("--clean", type=float, default=0.15, help="'clean' medians: steps during which others used at most this many cores")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.score_repeats, args.score_samples, args.score_calls = 1, 1, 16, 2
    t_start = time.time()
    load = [os.getloadavg()[0]]
    # the ceiling, measured (after waiting for an idle machine, if asked) before and after
    gflops = ceiling(args)
    train: list[dict] = []
    for setting in [x for x in args.settings if x in SETTINGS]:
        s = SETTINGS[setting] | (QUICK[setting] if args.quick else {})
        steps = getattr(args, f"steps_{setting}") or s["steps"]
        warmup = args.warmup if args.warmup is not None else s["warmup"]
        if steps <= warmup:
            raise SystemExit(f"setting {setting}: steps ({steps}) must exceed the warm-up ({warmup})")
        train.append(train_setting(setting, args, steps, warmup))
        load.append(os.getloadavg()[0])
    score = score_setting(args) if "score" in args.settings else None
    load.append(os.getloadavg()[0])
    gflops_end = ceiling(args)
    rate = (gflops + gflops_end) / 2 * 1e9

    cmd = "bench/rm_vs_trl.py " + " ".join(sys.argv[1:])
    print(f"\n## Reward-model training and scoring vs TRL — {time.strftime('%Y-%m-%d %H:%M', time.gmtime(t_start))} UTC\n")
    print(f"Command: `.venv/bin/python {cmd.strip()}` ({(time.time() - t_start) / 60:.1f} min)  ")
    print(
        f"fp32 matmul rate measured in this run: {gflops:.0f} GFLOP/s before, {gflops_end:.0f} GFLOP/s after; "
        f"load average {min(load):.1f}-{max(load):.1f}."
    )
    summary: dict = {"gflops": [gflops, gflops_end], "load": load, "strategies": args.strategy}
    for res in train:
        summary[res["setting"]] = report_training(res, args, rate)
    if score:
        summary["score"] = report_score(score, args, rate)
    print("\nBENCH_SUMMARY " + json.dumps(summary))
    raw = Path(args.workdir) / f"raw-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(t_start))}.json"
    raw.write_text(json.dumps({"summary": summary, "train": train, "score": score}))
    print(f"raw results: {raw}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("_trl", "_torch", "_torch-fused", "_torch-ray", "_torch-raytrain"):
        _, which, setting, steps, art_json = sys.argv
        fn = {
            "_trl": run_trl,
            "_torch": run_torch,
            "_torch-fused": lambda a, s, n: run_torch(a, s, n, fused=True),
            "_torch-ray": run_torch_ray,
            "_torch-raytrain": run_torch_raytrain,
        }[which]
        print("BENCH_RESULT " + json.dumps(fn(json.loads(art_json), setting, int(steps))), flush=True)
    elif len(sys.argv) > 1 and sys.argv[1] == "_score":
        _, _, mode, calls, micro, art_json = sys.argv
        print("BENCH_RESULT " + json.dumps(run_score(json.loads(art_json), mode, int(calls), int(micro))), flush=True)
    else:
        main()

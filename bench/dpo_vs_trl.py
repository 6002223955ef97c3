"""DPO step time: qwen25-rl `dpo` (Ray: DeepSpeed policy worker, reference worker) against TRL's
`DPOTrainer` (float32, no gradient checkpointing), on the same model, pairs, batch, beta and lr,
and the time of one rejection-sampling round of our stage, split by phase.

Systems (each run in its own fresh process; runs alternate: trl, trl-precompute, ours-stored,
ours-online, trl, ...):

    trl             TRL DPOTrainer, its default reference handling: a second (reference) model
                    whose forward runs inside every training step
    trl-precompute  TRL DPOTrainer with precompute_ref_log_probs=True: one reference pass over
                    the whole data set (with the policy's initial weights) before training
    ours-stored     `qwen25-rl dpo` with algorithm.reference_mode=stored (our default): the
                    reference workers score every pair once before the first step
    ours-online     `qwen25-rl dpo` with algorithm.reference_mode=online: a reference forward
                    in every step

Both read the same pair file (text; the prompt's tokens, then the response's and the EOS token:
TRL's non-conversational format, ours with data.apply_chat_template false), in the same order
(both shuffle with seed 0) from the same initial weights, so their per-step losses agree to
~1e-6 (printed). The file holds exactly steps x pairs-per-step pairs, so every system trains one
epoch and a pre-computed reference pass covers exactly the pairs the run trains on. Everything
a step computes is in one micro-batch unless `--micro` splits it (both systems alike). A
system's step time is the median over all runs' steps after `--warmup`:

    TRL   on_step_begin -> on_step_end of a TrainerCallback (forward(s), backward, clipping,
          optimizer step; its collator and logging fall outside)
    ours  time/step_s of metrics.jsonl (the driver's step: building the pair batch, the
          reference call in online mode, the policy worker's train_dpo call; logging outside)

"incl. ref" figures add the pre-computed reference pass amortised over the run's steps (TRL:
the wall time of `DPOTrainer._precompute_ref_logps`; ours: time/round_setup_s, i.e. the reference
workers' pass plus writing the round's pair file). Compute efficiency, as in
bench/grpo_vs_trl.py: model FLOPs / (seconds x the fp32 matmul rate measured before and after
in the same invocation), with model FLOPs of a step = 6 N T (policy forward + backward) +
2 N T (reference forward), T = the step's non-padding tokens (the prompt once per side plus
both responses), N = parameters in matmuls; every system is charged the same FLOPs and its
time including the reference work. Peak memory: every process of a run's process tree (for
ours the CLI driver, Ray's daemons and the worker actors) is polled every 0.25 s for VmHWM and
VmRSS in /proc/<pid>/status; reported are the VmHWM of TRL's process, of our policy and
reference workers, and the largest sum of VmRSS over the whole tree.

The machine may be shared, and two-thread OpenMP loops slow down several-fold when another
process takes one of two cores. So each run waits (`--quiet-wait`) for an idle machine, the
watcher records which cores processes outside the run's tree kept busy during every step, and
medians are given both over all steps and over the steps during which others used at most
`--clean` cores (`--busy-retry` repeats a whole run that was too busy).

`--setting round`: our stage in sample mode, one round of 64 prompts x K = 8 from the synthetic
arithmetic prompts with a graded reward (fraction of the letter e; a random model gets every
math answer wrong, so the math reward would form no pairs) and pairing best_vs_worst, with the
phase times of metrics.jsonl (time/sample_s, reward_s, pairing_s, reference_s, round_setup_s,
the round's training steps), once with the default reference handling (sampler log-probs) and
once with algorithm.reference_from_sampler false (the reference workers score every pair).

    .venv/bin/python bench/dpo_vs_trl.py --setting a [--runs 3 --steps 40 --warmup 5]
    .venv/bin/python bench/dpo_vs_trl.py --setting b [--runs 1 --steps 3 --warmup 1] [--micro 8]
    .venv/bin/python bench/dpo_vs_trl.py --setting round [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.grpo_vs_trl import REWARD_SRC, matmul_gflops, matmul_params  # noqa: E402

SETTINGS = {
    # tiny model: framework overhead dominates
    "a": {"preset": "tiny", "pairs": 8, "max_length": 64, "beta": 0.1, "lr": 1e-5, "runs": 3, "steps": 40, "warmup": 5},
    # the ~20M-parameter shape of the GRPO benchmark: compute dominates
    "b": {"preset": "small-20m", "pairs": 32, "max_length": 512, "beta": 0.1, "lr": 1e-5, "runs": 1, "steps": 3, "warmup": 1},
    # one rejection-sampling round of our stage (tiny model, 64 prompts x K = 8)
    "round": {"preset": "tiny", "prompts": 64, "samples": 8, "pairs": 8, "new_tokens": 64, "runs": 2},
}
SYSTEMS = ["trl", "trl-precompute", "ours-stored", "ours-online"]
LABELS = {
    "trl": "TRL {v} DPOTrainer, reference model in the loop (default)",
    "trl-precompute": "TRL {v} DPOTrainer, precompute_ref_log_probs",
    "ours-stored": "qwen25-rl dpo, reference_mode stored (default)",
    "ours-online": "qwen25-rl dpo, reference_mode online",
}
TEXT_WORDS = (
    "alpha beta river stone count list write numbers quickly now seven blue the water garden apple window yellow "
    "answer first second three four five six eight nine ten add take away share each total left more less "
    "people books boxes cats trees birds bags cups hand day week year small large green red house road"
).split()


# ---------------------------------------------------------------------------------------------
# inputs


def build_model_dir(workdir: Path, preset: str) -> str:
    from qwen25_rl.models import build_model, save_pretrained
    from qwen25_rl.models.tokenizer import build_tokenizer, builtin_corpus

    model_dir = workdir / f"model-{preset}"
    if not (model_dir / "config.json").is_file():
        tok = build_tokenizer(builtin_corpus(), vocab_size=4096)
        save_pretrained(build_model(preset, tokenizer=tok, seed=0), tok, model_dir)
    return str(model_dir)


def make_pairs(tok, n: int, max_length: int, seed: int = 0) -> tuple[list[dict], dict]:
    """`n` deterministic text pairs whose token lengths fill `max_length`: a prompt of ~1/4 of it
    ("Question: ...\\nAnswer:"), two different responses of 85-100 % of the rest each. Both
    systems see the same tokens: the prompt's text tokens, then the response's text tokens and
    the EOS token (ours: data.apply_chat_template false; TRL: its non-conversational format,
    which appends the EOS token)."""
    rng = random.Random(seed)
    eos = tok.eos_token_id

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False))

    def words(target: int, head: str = "", tail: str = "") -> str:
        text = head
        while True:
            cand = text + " " + rng.choice(TEXT_WORDS)
            if count(cand + tail) > target:
                return text + tail
            text = cand

    rows, lengths = [], {"prompt": [], "chosen": [], "rejected": []}
    for _ in range(n):
        prompt = words(round(max_length * rng.uniform(0.22, 0.28)), "Question:", "\nAnswer:")
        p = count(prompt)
        budget = max_length - p - 1  # the EOS token ends each response
        while True:
            chosen = words(max(2, round(budget * rng.uniform(0.85, 1.0))))
            rejected = words(max(2, round(budget * rng.uniform(0.85, 1.0))))
            if chosen != rejected:
                break
        c, r = count(chosen) + 1, count(rejected) + 1
        for text, k in ((chosen, c), (rejected, r)):
            # TRL tokenizes prompt + response (+ EOS) as one text: it must split where ours does
            # and fit in max_length (no truncation on either side).
            joint = tok.encode(prompt + text + tok.eos_token, add_special_tokens=False)
            assert joint[:p] == tok.encode(prompt, add_special_tokens=False) and len(joint) == p + k <= max_length, (prompt, text)
            assert joint[-1] == eos
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        for key, v in (("prompt", p), ("chosen", c), ("rejected", r)):
            lengths[key].append(v)
    stats = {f"mean_{k}_tokens": statistics.mean(v) for k, v in lengths.items()}
    # Tokens a step's forward passes read per pair: the prompt once per side + both responses.
    stats["tokens_per_pair"] = statistics.mean(2 * p + c + r for p, c, r in zip(*lengths.values()))
    stats["max_total_tokens"] = max(p + max(c, r) for p, c, r in zip(*lengths.values()))
    return rows, stats


def prepare(workdir: Path, setting: str, steps: int) -> dict:
    from transformers import AutoTokenizer

    s = SETTINGS[setting]
    workdir.mkdir(parents=True, exist_ok=True)
    art = {"model": build_model_dir(workdir, s["preset"])}
    reward = workdir / "bench_reward.py"
    reward.write_text(REWARD_SRC)
    art["reward"] = str(reward)
    if setting == "round":
        from qwen25_rl.data.synthetic import write_synthetic_dataset

        data = workdir / "synthetic"
        write_synthetic_dataset(data)
        art["prompts"] = str(data / "arithmetic_train.jsonl")
        return art
    tok = AutoTokenizer.from_pretrained(art["model"])
    rows, stats = make_pairs(tok, steps * s["pairs"], s["max_length"])
    pairs = workdir / f"pairs-{setting}-{len(rows)}.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return art | {"pairs": str(pairs), "stats": stats}


# ---------------------------------------------------------------------------------------------
# TRL (runs in its own process: `dpo_vs_trl.py _trl SETTING STEPS PRECOMPUTE MICRO ART`)


def run_trl(art: dict, setting: str, steps: int, precompute: bool, micro: int | None = None) -> dict:
    import resource

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    s = SETTINGS[setting]
    rows = [json.loads(x) for x in Path(art["pairs"]).read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(art["model"])
    model = AutoModelForCausalLM.from_pretrained(art["model"], dtype=torch.float32, attn_implementation="sdpa")
    out = tempfile.mkdtemp(prefix="trl-dpo-bench-")
    args = DPOConfig(
        output_dir=out,
        # micro-batches of `micro` pairs, accumulated to one optimizer step of s["pairs"] pairs
        per_device_train_batch_size=micro or s["pairs"],
        gradient_accumulation_steps=s["pairs"] // (micro or s["pairs"]),
        max_length=s["max_length"],
        beta=s["beta"],
        loss_type=["sigmoid"],
        learning_rate=s["lr"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_steps=steps,
        precompute_ref_log_probs=precompute,
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
    precompute_s: list[float] = []
    precompute_window: list[float] = []
    original = DPOTrainer._precompute_ref_logps

    def timed_precompute(self, *a, **k):
        t, w = time.perf_counter(), time.time()
        result = original(self, *a, **k)
        precompute_s.append(time.perf_counter() - t)
        precompute_window[:] = [w, time.time()]
        return result

    DPOTrainer._precompute_ref_logps = timed_precompute
    times: list[float] = []
    ref_times: list[float] = []
    starts: list[float] = []
    windows: list[tuple[float, float]] = []
    clock = {"ref": 0.0, "t": 0.0, "wall": 0.0}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            clock["ref"] = 0.0
            clock["wall"] = time.time()
            starts.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - starts[-1])
            windows.append((clock["wall"], time.time()))
            ref_times.append(clock["ref"])

    t_init = time.perf_counter()
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok, callbacks=[StepTimer()])
    init_s = time.perf_counter() - t_init
    if trainer.ref_model is not None:  # the reference forward inside each step, timed by hooks

        def pre(*_):
            clock["t"] = time.perf_counter()

        def post(*_):
            clock["ref"] += time.perf_counter() - clock["t"]

        trainer.ref_model.register_forward_pre_hook(pre)
        trainer.ref_model.register_forward_hook(post)
    result = trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    shutil.rmtree(out, ignore_errors=True)
    return {
        "step_s": times,
        "period_s": [b - a for a, b in zip(starts, starts[1:])],
        "reference_in_step_s": ref_times if trainer.ref_model is not None else [],
        "precompute_s": sum(precompute_s),
        "step_windows": windows,
        "reference_window": precompute_window or None,
        "init_s": init_s,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "loss": [h["loss"] for h in logs],
        "threads": torch.get_num_threads(),
        "self_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# ---------------------------------------------------------------------------------------------
# ours: the CLI


def ours_pairs_command(art: dict, setting: str, mode: str, out: str, micro: int | None = None) -> list[str]:
    s = SETTINGS[setting]
    overrides = {
        "model.path": art["model"],
        "data.mode": "pairs",
        "data.train_files": f"[{art['pairs']}]",
        "data.eval_files": "[]",
        "data.prompt_key": "prompt",
        "data.apply_chat_template": False,
        "data.max_length": s["max_length"],
        "data.max_prompt_length": s["max_length"],
        "algorithm.rounds": 1,
        "algorithm.epochs_per_round": 1,
        "algorithm.pairs_per_step": s["pairs"],
        "algorithm.beta": s["beta"],
        "algorithm.loss_type": "sigmoid",
        "algorithm.reference_mode": mode,
        "policy.strategy": "deepspeed",
        "policy.zero_stage": 2,
        "optimizer.lr": s["lr"],
        "optimizer.weight_decay": 0.0,
        "optimizer.grad_clip": 1.0,
        "scheduler.name": "constant",
        "scheduler.warmup_steps": 0,
        "policy.micro_batch_size": micro or s["pairs"],
        "policy.num_cpus_per_worker": 2,
        "policy.torch_threads": 2,
        "reference.torch_threads": 2,
        "reference.micro_batch_size": micro or s["pairs"],
    }
    return _cli(overrides, out)


def ours_round_command(art: dict, out: str, from_sampler: bool = True) -> list[str]:
    s = SETTINGS["round"]
    reward = "[{type: custom, name: letter_e, params: {path: '" + art["reward"] + ":letter_e', isolation: thread}}]"
    overrides = {
        "model.path": art["model"],
        "data.mode": "sample",
        "data.train_files": f"[{art['prompts']}]",
        "data.eval_files": "[]",
        "reward.functions": reward,
        "reward.pool.num_workers": 1,
        "algorithm.rounds": 1,
        "algorithm.prompts_per_round": s["prompts"],
        "algorithm.pairs_per_step": s["pairs"],
        "algorithm.pairing.rule": "best_vs_worst",
        "algorithm.pairing.pairs_per_prompt": 1,
        "algorithm.reference_from_sampler": from_sampler,
        "rollout.samples_per_prompt": s["samples"],
        "rollout.max_new_tokens": s["new_tokens"],
        "rollout.torch_threads": 2,
        "policy.micro_batch_size": s["pairs"],
        "policy.torch_threads": 2,
        "reference.torch_threads": 2,
    }
    return _cli(overrides, out)


def _cli(overrides: dict, out: str) -> list[str]:
    # Pinned so that edits of configs/tiny/dpo.yaml do not change what is measured: plain
    # sigmoid DPO against the initial model, as TRL's, in float32 without recomputation.
    common = {
        "algorithm.rpo_alpha": 0.0,
        "algorithm.label_smoothing": 0.0,
        "algorithm.length_normalize": False,
        "algorithm.reference": "initial",
        "model.gradient_checkpointing": False,
        "policy.bf16": False,
        "eval.at_start": False,
        "eval.every_n_steps": "null",
        "checkpoint.every_n_steps": "null",
        "checkpoint.save_final": False,
        "logging.output_dir": out,
        "logging.run_name": "bench",
        "logging.tensorboard": False,
        "logging.console": False,
        "ray.include_dashboard": False,
    }
    config = str(REPO / "configs" / "tiny" / "dpo.yaml")
    return [sys.executable, "-m", "qwen25_rl", "dpo", "--config", config] + [f"{k}={v}" for k, v in (overrides | common).items()]


def ours_result(out: str, mode: str) -> dict:
    from qwen25_rl.runs import read_metrics

    rows = read_metrics(Path(out) / "bench" / "metrics.jsonl")
    if not rows:
        raise RuntimeError(f"no metrics rows in {out}/bench/metrics.jsonl")
    first = rows[0]
    # A row is written right after its step: the step ran in [time - step_s, time]; the round's
    # set-up (reference pass) just before the first step.
    setup_end = first["time"] - first["time/step_s"]
    return {
        "step_windows": [(r["time"] - r["time/step_s"], r["time"]) for r in rows],
        "reference_window": (setup_end - first.get("time/round_setup_s", 0.0), setup_end) if mode == "stored" else None,
        "step_s": [r["time/step_s"] for r in rows],
        "train_s": [r["time/train_s"] for r in rows],
        "period_s": [b["time"] - a["time"] for a, b in zip(rows, rows[1:])],
        "reference_in_step_s": [r.get("time/reference_s", 0.0) for r in rows] if mode == "online" else [],
        "reference_pass_s": first.get("time/reference_s", 0.0) if mode == "stored" else 0.0,
        "round_setup_s": first.get("time/round_setup_s", 0.0),
        "tokens": [r["dpo/tokens"] for r in rows],
        "pairs": [r["dpo/pairs"] for r in rows],
        "loss": [r["dpo/loss"] for r in rows],
    }


# ---------------------------------------------------------------------------------------------
# process tree memory


class TreeWatch:
    """Polls a process and all its descendants: VmHWM per process, the largest VmRSS total."""

    def __init__(self, pid: int, interval: float = 0.25):
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.hwm: dict[int, tuple[str, int]] = {}
        self.total_rss_peak = 0
        self.cpu: dict[int, float] = {}  # CPU seconds of each process of the tree, last seen
        self.me = psutil.Process()  # this bench process (the poller) counts as ours too
        self.me0 = sum(self.me.cpu_times()[:2])
        self.t0 = time.time()
        self.busy0 = _busy_seconds()
        # (wall time, machine busy CPU s, this tree's CPU s) at every poll: which cores other
        # processes took during any interval of the run (see foreign_cores)
        self.timeline: list[tuple[float, float, float]] = [(self.t0, self.busy0, 0.0)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        import psutil

        try:
            procs = [self.root] + self.root.children(recursive=True)
        except psutil.Error:
            return
        total = 0
        for p in procs:
            try:
                status = Path(f"/proc/{p.pid}/status").read_text()
                cmd = " ".join(p.cmdline())[:80]
            except (OSError, psutil.Error):
                continue
            try:
                t = p.cpu_times()
                self.cpu[p.pid] = t.user + t.system
            except psutil.Error:
                pass
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            hwm = int(fields.get("VmHWM", "0 kB").split()[0]) * 1024
            total += int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
            name = "driver" if p.pid == self.root.pid else cmd
            old = self.hwm.get(p.pid, (name, 0))
            # keep the most telling name a Ray worker had (ray::IDLE becomes ray::PolicyWorker...)
            self.hwm[p.pid] = (name if "Worker" in name or "Worker" not in old[0] else old[0], max(old[1], hwm))
        self.total_rss_peak = max(self.total_rss_peak, total)
        own = sum(self.cpu.values()) + sum(self.me.cpu_times()[:2]) - self.me0
        self.timeline.append((time.time(), _busy_seconds(), own))

    def foreign_cores(self, start: float, end: float) -> float:
        """Cores that processes outside this tree kept busy between two wall times (measured
        over the polls that enclose the interval)."""
        tl = self.timeline
        a = max((x for x in tl if x[0] <= start), key=lambda x: x[0], default=tl[0])
        b = min((x for x in tl if x[0] >= end), key=lambda x: x[0], default=tl[-1])
        if b[0] <= a[0]:
            return float("nan")
        return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / (b[0] - a[0]))

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self.sample()
        wall = max(time.time() - self.t0, 1e-9)
        # Cores other processes kept busy meanwhile (the machine is shared): busy CPU time of the
        # whole machine minus this tree's own CPU time, per second of the run.
        foreign = self.foreign_cores(self.t0, time.time())
        mib = 1024 * 1024

        def peak(word: str) -> float:
            vals = [v for name, v in self.hwm.values() if word in name]
            return max(vals) / mib if vals else 0.0

        return {
            "driver_hwm_mib": self.hwm.get(self.root.pid, ("", 0))[1] / mib,
            "policy_hwm_mib": peak("PolicyWorker"),
            "reference_hwm_mib": peak("ReferenceWorker"),
            "tree_rss_peak_mib": self.total_rss_peak / mib,
            "foreign_cores": foreign,
            "own_cores": self.timeline[-1][2] / wall,
            "processes": {str(pid): [name, round(v / mib)] for pid, (name, v) in sorted(self.hwm.items(), key=lambda x: -x[1][1])[:8]},
        }


def _busy_seconds() -> float:
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


def wait_quiet(max_wait: float, threshold: float = 0.2) -> float:
    """Wait (at most `max_wait` s) until other processes use less than `threshold` cores over 3 s:
    the machine is shared, and two-thread OpenMP loops slow down several-fold when a third
    runnable thread takes one of the two cores. Returns the cores in use at the last look."""
    import psutil

    deadline = time.time() + max_wait
    while True:
        used = psutil.cpu_percent(interval=3) / 100 * psutil.cpu_count()
        if used < threshold or time.time() > deadline:
            return used
        time.sleep(2)


def watched(cmd: list[str], timeout: float = 7200) -> tuple[subprocess.CompletedProcess, dict, float, TreeWatch]:
    env = os.environ | {"TOKENIZERS_PARALLELISM": "false", "RAY_ADDRESS": "", "TQDM_DISABLE": "1"}
    t = time.time()
    with tempfile.TemporaryFile("w+") as so, tempfile.TemporaryFile("w+") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, text=True, env=env, cwd=REPO)
        watch = TreeWatch(proc.pid)
        try:
            rc = proc.wait(timeout=timeout)
        finally:
            mem = watch.stop()
        so.seek(0)
        se.seek(0)
        done = subprocess.CompletedProcess(cmd, rc, so.read(), se.read())
    return done, mem, time.time() - t, watch


def add_foreign(res: dict, watch: TreeWatch) -> dict:
    """Per step (and for the reference pass) the cores other processes took meanwhile."""
    res["step_foreign"] = [watch.foreign_cores(a, b) for a, b in res.pop("step_windows")]
    window = res.pop("reference_window", None)
    res["reference_foreign"] = watch.foreign_cores(*window) if window else None
    return res


def measured_run(system: str, art: dict, args: argparse.Namespace, discarded: dict[str, int], label: str) -> dict:
    """One run of `system`, after waiting for a quiet machine; repeated (at most
    `--max-retries` times) when other processes kept more than `--busy-retry` cores busy."""
    for attempt in range(args.max_retries + 1):
        quiet = wait_quiet(args.quiet_wait) if args.quiet_wait else None
        res = run_system(system, art, args.setting, args.steps, getattr(args, "micro", None))
        res["cores_busy_before"] = quiet
        mem = res["memory"]
        if "step_s" in res:
            extra = f", precompute {res['precompute_s']:.2f} s" if res.get("precompute_s") else ""
            extra += (
                f", reference pass {res['reference_pass_s']:.2f} s (setup {res['round_setup_s']:.2f})"
                if res.get("reference_pass_s")
                else ""
            )
            what = f"steps {[round(x, 3) for x in res['step_s']]}{extra}"
        else:
            what = json.dumps({k: v for k, v in res.items() if k not in ("memory", "wall_s")})
        print(
            f"{label}: {what}, peak MiB {json.dumps({k: round(v) for k, v in mem.items() if k.endswith('mib')})}, "
            f"other processes {mem['foreign_cores']:.2f} cores ({res['wall_s']:.0f} s with start-up)",
            flush=True,
        )
        if not args.busy_retry or mem["foreign_cores"] <= args.busy_retry or attempt == args.max_retries:
            res["discarded_before"] = attempt
            return res
        discarded[system] += 1
        print(f"{label}: discarded (other processes used {mem['foreign_cores']:.2f} cores > {args.busy_retry}), repeating", flush=True)
    raise AssertionError


def run_system(system: str, art: dict, setting: str, steps: int, micro: int | None = None) -> dict:
    if system.startswith("trl"):
        cmd = [
            sys.executable,
            __file__,
            "_trl",
            setting,
            str(steps),
            str(int(system == "trl-precompute")),
            str(micro or 0),
            json.dumps(art),
        ]
        proc, mem, wall, watch = watched(cmd)
        for line in proc.stdout.splitlines():
            if line.startswith("BENCH_RESULT "):
                return add_foreign(json.loads(line[len("BENCH_RESULT ") :]), watch) | {"memory": mem, "wall_s": wall}
        raise RuntimeError(f"{system} run failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    mode = system.split("-", 1)[1]
    out = tempfile.mkdtemp(prefix=f"ours-dpo-bench-{mode}-")
    if setting == "round":
        cmd = ours_round_command(art, out, from_sampler=system == "ours-stored")
    else:
        cmd = ours_pairs_command(art, setting, mode, out, micro)
    proc, mem, wall, watch = watched(cmd)
    if proc.returncode != 0:
        raise RuntimeError(f"{system} run failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    res = round_result(out) if setting == "round" else ours_result(out, mode)
    shutil.rmtree(out, ignore_errors=True)
    return add_foreign(res, watch) | {"memory": mem, "wall_s": wall}


# ---------------------------------------------------------------------------------------------
# rejection-sampling round


ROUND_PHASES = ("time/sample_s", "time/reward_s", "time/pairing_s", "time/reference_s", "time/round_setup_s")


def round_result(out: str) -> dict:
    from qwen25_rl.runs import read_metrics

    rows = read_metrics(Path(out) / "bench" / "metrics.jsonl")
    first = rows[0]
    res = {k: first.get(k, 0.0) for k in ROUND_PHASES}
    setup_end = first["time"] - first["time/step_s"]
    res["step_windows"] = [(setup_end - first.get("time/round_setup_s", 0.0), rows[-1]["time"])]  # the whole round
    res["train_s"] = sum(r["time/train_s"] for r in rows)
    res["steps_s"] = sum(r["time/step_s"] for r in rows)
    res["sync_s"] = sum(r.get("time/sync_s", 0.0) for r in rows)
    res["steps"] = len(rows)
    res["total_s"] = first.get("time/round_setup_s", 0.0) + res["steps_s"]
    for k in ("round/pairs", "round/prompts", "round/groups_paired", "reference/from_sampler", "reference/sampler_gap_abs_max"):
        res[k] = first.get(k)
    res["round/response_length_mean"] = first.get("round/response_length/mean")
    return res


def main_round(args: argparse.Namespace) -> None:
    """Our stage in sample mode, one round; alternately with the default reference handling (the
    sampler's log-probs, checked against the reference workers on a few pairs) and with
    algorithm.reference_from_sampler false (the reference workers score every pair)."""
    s = SETTINGS["round"]
    art = prepare(Path(args.workdir), "round", 0)
    variants = {"ours-stored": "reference from the sampler (default)", "ours-refpass": "reference_from_sampler false"}
    results: dict[str, list[dict]] = {v: [] for v in variants}
    args.steps = 0
    discarded = {v: 0 for v in variants}
    for r in range(args.runs):
        for v in variants:
            results[v].append(measured_run(v, art, args, discarded, f"run {r + 1} {v}"))
    keys = [*ROUND_PHASES, "train_s", "sync_s", "steps_s", "total_s"]
    med = {v: {k: statistics.median(x[k] for x in runs) for k in keys} for v, runs in results.items()}
    print("\nBENCH_SUMMARY " + json.dumps({"setting": "round", "median": med, "discarded": discarded, "runs": results}))
    print(f"\n## DPO rejection-sampling round, tiny model — {time.strftime('%Y-%m-%d %H:%M')} UTC\n")
    print(
        f"Command: `.venv/bin/python bench/dpo_vs_trl.py --setting round --runs {args.runs} --quiet-wait {args.quiet_wait:g} "
        f"--busy-retry {args.busy_retry:g}`  "
    )
    first = results["ours-stored"]
    print(
        f"{s['prompts']} prompts x K = {s['samples']}, up to {s['new_tokens']} new tokens (mean response "
        f"{statistics.mean(x['round/response_length_mean'] or 0 for x in first):.1f}), reward letter_e, pairing best_vs_worst, "
        f"{s['pairs']} pairs per step; pairs formed per run: {[x['round/pairs'] for v in results.values() for x in v]}.\n"
    )
    print(
        "| variant | run | sample | reward | pairing | reference | round set-up (sampling to pair file) | train, all steps "
        "| steps | round total | other processes (cores) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for v, runs in results.items():
        for i, x in enumerate([*runs, med[v]]):
            label = "median" if i == len(runs) else str(i + 1)
            other = f"{x['step_foreign'][0]:.2f}" if "step_foreign" in x else ""
            steps = x.get("steps", "")
            print(
                f"| {variants[v]} | {label} | {x['time/sample_s']:.2f} | {x['time/reward_s']:.2f} | {x['time/pairing_s']:.3f} "
                f"| {x['time/reference_s']:.2f} | {x['time/round_setup_s']:.2f} | {x['train_s']:.2f} | {steps} | {x['total_s']:.2f} | {other} |"
            )


# ---------------------------------------------------------------------------------------------


def summarise(system: str, runs: list[dict], args: argparse.Namespace, s: dict, n: int, rate: float, tokens_per_pair: float) -> dict:
    """Medians over all runs' steps after warm-up ("all"), and over those of them during which
    other processes kept at most `--clean` cores busy ("clean")."""
    w = args.warmup

    def pick(key: str, clean: bool) -> list[float]:
        return [v for res in runs for v, f in zip(res[key][w:], res["step_foreign"][w:]) if not clean or (f == f and f <= args.clean)]

    pre_all = [res.get("precompute_s", 0.0) if system.startswith("trl") else res["round_setup_s"] for res in runs]
    pre_clean = [v for v, res in zip(pre_all, runs) if res["reference_foreign"] is not None and res["reference_foreign"] <= args.clean]
    has_pass = system in ("trl-precompute", "ours-stored")
    flops = 8 * n * tokens_per_pair * s["pairs"]  # 6NT policy + 2NT reference, per step
    x: dict = {
        "wall_s": [round(res["wall_s"]) for res in runs],
        "other_cores": [round(res["memory"]["foreign_cores"], 2) for res in runs],
        "memory": {
            k: max(res["memory"][k] for res in runs) for k in ("driver_hwm_mib", "policy_hwm_mib", "reference_hwm_mib", "tree_rss_peak_mib")
        },
        "period_s": statistics.median(x for res in runs for x in res["period_s"][w:]),
    }
    for name, clean in (("all", False), ("clean", True)):
        steps = pick("step_s", clean)
        if not steps:
            x[name] = None
            continue
        step = statistics.median(steps)
        pre = statistics.median(pre_clean if clean and pre_clean else pre_all) if has_pass else 0.0
        with_ref = step + pre / args.steps
        in_step = pick("reference_in_step_s", clean)
        x[name] = {
            "median_step_s": step,
            "steps_measured": len(steps),
            "step_range_s": [min(steps), max(steps)],
            "pairs_per_s": s["pairs"] / step,
            "reference_pass_s": pre,
            "reference_pass_clean": bool(pre_clean) if has_pass else None,
            "pairs_per_s_with_ref": s["pairs"] / with_ref,
            "efficiency": flops / (with_ref * rate),
            "reference_in_step_s": statistics.median(in_step) if in_step else 0.0,
        }
        if system.startswith("ours"):
            x[name]["median_train_s"] = statistics.median(pick("train_s", clean))
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", choices=sorted(SETTINGS), default="a")
    ap.add_argument("--runs", type=int, default=None, help="alternating runs per system (default: per setting)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per run; the data set holds steps x pairs-per-step pairs")
    ap.add_argument("--warmup", type=int, default=None, help="steps of each run left out of the median")
    ap.add_argument("--systems", nargs="+", choices=SYSTEMS, default=SYSTEMS)
    ap.add_argument(
        "--micro",
        type=int,
        default=None,
        help="pairs per micro-batch, both systems (ours: policy/reference.micro_batch_size; TRL: per-device batch with "
        "gradient accumulation to the step's pairs, and its precompute batch); default: all the step's pairs in one",
    )
    ap.add_argument("--workdir", default="/tmp/qwen25-bench-dpo")
    ap.add_argument(
        "--quiet-wait", type=float, default=300, help="before each run, wait up to this many s for an idle machine (0: no wait)"
    )
    ap.add_argument(
        "--busy-retry", type=float, default=0.0, help="repeat a run during which other processes used more cores than this (0: never)"
    )
    ap.add_argument("--max-retries", type=int, default=2, help="repeats of one run at most (the last one is kept)")
    ap.add_argument(
        "--clean", type=float, default=0.15, help="'clean' medians: steps during which other processes used at most this many cores"
    )
    args = ap.parse_args()
    s = SETTINGS[args.setting]
    args.runs = args.runs if args.runs is not None else s["runs"]
    if args.setting == "round":
        main_round(args)
        return
    args.steps = args.steps if args.steps is not None else s["steps"]
    args.warmup = args.warmup if args.warmup is not None else s["warmup"]
    if args.steps <= args.warmup:
        raise SystemExit("--steps must exceed --warmup")
    if args.micro is not None and (args.micro < 1 or s["pairs"] % args.micro):
        raise SystemExit(f"--micro must divide the {s['pairs']} pairs of a step")
    art = prepare(Path(args.workdir), args.setting, args.steps)
    gflops = matmul_gflops()
    n = matmul_params(art["model"])
    results: dict[str, list[dict]] = {x: [] for x in args.systems}
    load = [os.getloadavg()[0]]
    discarded: dict[str, int] = {x: 0 for x in args.systems}
    for r in range(args.runs):
        for system in args.systems:
            results[system].append(measured_run(system, art, args, discarded, f"run {r + 1} {system}"))
            load.append(os.getloadavg()[0])
    gflops_end = matmul_gflops()
    rate = (gflops + gflops_end) / 2 * 1e9
    tpp = art["stats"]["tokens_per_pair"]
    summary = {x: summarise(x, runs, args, s, n, rate, tpp) for x, runs in results.items()}
    print(
        "\nBENCH_SUMMARY "
        + json.dumps(
            {
                "setting": args.setting,
                "gflops": [gflops, gflops_end],
                "matmul_params": n,
                "pairs": art["stats"],
                "load": load,
                "discarded": discarded,
                "summary": summary,
                "runs": results,
            }
        )
    )
    import trl

    st = art["stats"]
    print(f"\n## DPO step time vs TRL, setting ({args.setting}) — {time.strftime('%Y-%m-%d %H:%M')} UTC\n")
    print(
        f"Command: `.venv/bin/python bench/dpo_vs_trl.py --setting {args.setting} --runs {args.runs} --steps {args.steps} "
        f"--warmup {args.warmup} --systems {' '.join(args.systems)} --quiet-wait {args.quiet_wait:g} --busy-retry {args.busy_retry:g} "
        f"--clean {args.clean:g}{f' --micro {args.micro}' if args.micro else ''}`  "
    )
    print(
        f"Model: preset `{s['preset']}` ({n / 1e6:.1f}M matmul parameters), {s['pairs']} pairs per step, max length {s['max_length']}, "
        f"{args.steps * s['pairs']} pairs (one epoch), prompt {st['mean_prompt_tokens']:.1f} / chosen {st['mean_chosen_tokens']:.1f} / "
        f"rejected {st['mean_rejected_tokens']:.1f} tokens on average (longest pair {st['max_total_tokens']}), beta {s['beta']}, "
        f"sigmoid loss, lr {s['lr']}, float32, micro-batches of {args.micro or s['pairs']} pairs.  "
    )
    print(
        f"fp32 matmul rate measured in this run: {gflops:.0f} GFLOP/s before, {gflops_end:.0f} GFLOP/s after; "
        f"load average {min(load):.1f}-{max(load):.1f}.\n"
    )
    for name, what in (("clean", f"steps during which other processes used <= {args.clean:g} cores"), ("all", "all steps")):
        print(f"\nMedians over {what} (after {args.warmup} warm-up steps per run):\n")
        print(
            "| system | s/step (train step) | steps | pairs/s | reference pass s (per step) | pairs/s incl. reference "
            "| compute efficiency | peak MiB: trainer / reference worker / whole tree |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for system in args.systems:
            x, m = summary[system][name], summary[system]["memory"]
            if x is None:
                print(f"| {LABELS[system].format(v=trl.__version__)} | no such step | | | | | | |")
                continue
            trainer_mem = m["policy_hwm_mib"] if system.startswith("ours") else m["driver_hwm_mib"]
            ref_mem = f"{m['reference_hwm_mib']:.0f}" if system.startswith("ours") else "(same process)"
            pre = (
                f"{x['reference_pass_s']:.2f} ({x['reference_pass_s'] / args.steps:.3f})"
                + ("" if x["reference_pass_clean"] or name == "all" else ", busy")
                if x["reference_pass_s"]
                else f"in the step ({x['reference_in_step_s']:.3f})"
            )
            print(
                f"| {LABELS[system].format(v=trl.__version__)} | {x['median_step_s']:.3f} | {x['steps_measured']} | {x['pairs_per_s']:.3g} "
                f"| {pre} | {x['pairs_per_s_with_ref']:.3g} | {x['efficiency']:.1%} "
                f"| {trainer_mem:.0f} / {ref_mem} / {m['tree_rss_peak_mib']:.0f} |"
            )
        base = summary.get("trl", {}).get(name)
        if base:
            print()
            for system in [x for x in args.systems if x.startswith("ours") and summary[x][name]]:
                x = summary[system][name]
                print(
                    f"{system} / TRL default: **{x['pairs_per_s_with_ref'] / base['pairs_per_s']:.2f}x** pairs/s including the "
                    f"reference work ({x['pairs_per_s'] / base['pairs_per_s']:.2f}x train step only)  "
                )
    print()
    for system in args.systems:
        x, c = summary[system], summary[system]["all"]
        more = f", train_dpo call {c['median_train_s']:.3f} s" if "median_train_s" in c else ""
        print(
            f"{system}: step range {c['step_range_s'][0]:.3f}-{c['step_range_s'][1]:.3f} s, step-to-step period {x['period_s']:.3f} s{more}, "
            f"run walls {x['wall_s']} s, other processes {x['other_cores']} cores per run, runs discarded as busy {discarded[system]}  "
        )
    # Same pairs, same order (both shuffle with seed 0), same initial weights: the per-step losses
    # of the first run of every system must agree (each system trains the same problem).
    first = results[args.systems[0]][0]["loss"]
    gaps = {x: max(abs(a - b) for a, b in zip(first, results[x][0]["loss"])) for x in args.systems[1:]}
    print(
        f"Largest per-step loss difference from {args.systems[0]} (first runs, every step): "
        + json.dumps({k: f"{v:.1e}" for k, v in gaps.items()})
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_trl":
        _, _, setting, steps, precompute, micro, art_json = sys.argv
        result = run_trl(json.loads(art_json), setting, int(steps), precompute == "1", int(micro) or None)
        print("BENCH_RESULT " + json.dumps(result), flush=True)
    else:
        main()

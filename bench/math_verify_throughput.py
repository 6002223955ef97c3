"""Math verification throughput: reward.math vs math-verify called directly, same inputs, same run.

    .venv/bin/python bench/math_verify_throughput.py [--repeats 3] [--workers 2]

Inputs (real data from QWEN25_RL_DATA, default ../shared/data):

- gsm8k: each GSM8K test problem's reference solution (ends in "#### N") against its own gold
  and against the next problem's gold: 2 x 1319 pairs, numeric answers.
- math500: each MATH-500 reference solution (answer in \\boxed{}) against its own gold and
  against the next problem's gold: 2 x 500 pairs (own: mostly decided as exact text; other:
  numeric path or sympy).
- math500-symbolic: the worst case, every MATH-500 boxed answer through the sympy stage
  (in one process: `reward.math.symbolic_verdict` vs math-verify's parse + verify).

"ours" is MathVerifierPool(num_workers) (fast paths in this process, sympy in worker
processes, the production path); "math-verify" is `verify(parse(gold), parse(response))`
per pair in one process, its default usage. Every timing runs in a fresh process (cold sympy
and gold caches for both; one warm-up pair outside the timing), so neither method inherits
the other's warm caches; "cold" is that first pass. "warm" is a second pass over the same
pairs in the same processes: sympy's caches warm for both, and our gold caches hold every
gold (a long-lived reward worker's steady state; in GRPO a gold repeats for each sample of
its group). Each figure is the best of --repeats; the ratio compares the best figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qwen25_rl.paths import eval_data_file  # noqa: E402


def load_pairs() -> dict[str, list[tuple[str, str, bool | None]]]:
    """name -> [(response, gold, expected verdict or None when unknown)]."""
    with open(eval_data_file("gsm8k_test.jsonl")) as f:
        gsm = [json.loads(line) for line in f]
    with open(eval_data_file("math500_test.jsonl")) as f:
        m500 = [json.loads(line) for line in f]
    gsm_gold = [r["answer"].rsplit("####", 1)[1].strip() for r in gsm]
    pairs = {"gsm8k": [], "math500": []}
    for i, r in enumerate(gsm):
        other = gsm_gold[(i + 1) % len(gsm)]
        pairs["gsm8k"].append((r["answer"], gsm_gold[i], True))
        pairs["gsm8k"].append((r["answer"], other, True if other == gsm_gold[i] else None))
    for i, r in enumerate(m500):
        other = m500[(i + 1) % len(m500)]["answer"]
        pairs["math500"].append((r["solution"], r["answer"], True))
        pairs["math500"].append((r["solution"], other, True if other == r["answer"] else None))
    return pairs


def _cpu_s(pids: list[int]) -> float:
    """On-CPU seconds of these processes so far (/proc/PID/schedstat, nanoseconds)."""
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/schedstat") as f:
            total += int(f.read().split()[0]) / 1e9
    return total


def run_ours(pairs, workers: int) -> dict:
    """The batch twice through one pool: cold and warm wall seconds, and CPU seconds of this
    process plus the workers (load-independent, unlike wall time on a shared machine)."""
    from qwen25_rl.reward.math import MathVerifierPool

    with MathVerifierPool(num_workers=workers, timeout_s=10.0) as pool:
        # Start the worker processes outside the timing (a long-lived pool pays this once).
        pool.score_batch(["\\boxed{\\sqrt{8}}"] * workers, ["2\\sqrt{2}"] * workers)
        pool.counts.clear()
        procs = [os.getpid()] + pool.process_ids()[1:]  # the zygote only forks: not counted
        out = {}
        for phase in ("cold", "warm"):
            cpu, started = _cpu_s(procs), time.perf_counter()
            scores = pool.score_batch([p[0] for p in pairs], [p[1] for p in pairs])
            out[phase], out[f"{phase}_cpu"] = time.perf_counter() - started, _cpu_s(procs) - cpu
            if phase == "cold":
                out["verdicts"] = [s.correct for s in scores]
                out["counts"] = {k: v for k, v in pool.counts.items() if k.startswith(("path_", "status_"))}
        assert pool.counts["workers_replaced"] == 0, "a worker was replaced: CPU accounting incomplete"
    return out


def run_math_verify(pairs) -> dict:
    """The pairs twice in this process: cold and warm wall seconds and CPU seconds."""
    from math_verify import parse, verify

    out = {}
    for phase in ("cold", "warm"):
        cpu, started = _cpu_s([os.getpid()]), time.perf_counter()
        verdicts = [bool(verify(parse(f"${gold}$"), parse(response))) for response, gold, _ in pairs]
        out[phase], out[f"{phase}_cpu"] = time.perf_counter() - started, _cpu_s([os.getpid()]) - cpu
        out.setdefault("verdicts", verdicts)
    return out


def symbolic_inputs() -> list[tuple[str, str]]:
    from qwen25_rl.reward.math_extract import last_boxed
    from qwen25_rl.reward.math_normalize import normalize_answer

    with open(eval_data_file("math500_test.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [(normalize_answer(last_boxed(r["solution"])), normalize_answer(r["answer"]), r["solution"], r["answer"]) for r in rows]


def run_symbolic_ours(items) -> dict:
    from qwen25_rl.reward.math import MathStatus, symbolic_verdict

    cpu, started = _cpu_s([os.getpid()]), time.perf_counter()
    verdicts = [symbolic_verdict(pred, gold, 10.0)[0] is MathStatus.CORRECT for pred, gold, _, _ in items]
    return {"cold": time.perf_counter() - started, "cold_cpu": _cpu_s([os.getpid()]) - cpu, "verdicts": verdicts}


def run_symbolic_mv(items) -> dict:
    from math_verify import parse, verify

    cpu, started = _cpu_s([os.getpid()]), time.perf_counter()
    verdicts = [bool(verify(parse(f"${gold}$"), parse(solution))) for _, _, solution, gold in items]
    return {"cold": time.perf_counter() - started, "cold_cpu": _cpu_s([os.getpid()]) - cpu, "verdicts": verdicts}


def agreement(verdicts: list[bool], pairs) -> str:
    known = [(v, p[2]) for v, p in zip(verdicts, pairs) if p[2] is not None]
    return f"{sum(v == e for v, e in known)}/{len(known)}"


def measure_once(method: str, inputs: str, workers: int) -> dict:
    """One timing in this (fresh) process: both methods start equally cold."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    from math_verify import parse, verify

    verify(parse("$1$"), parse("$1$"))  # first-call setup outside the timing, both methods
    if inputs == "math500-symbolic":
        items = symbolic_inputs()
        out = run_symbolic_ours(items) if method == "ours" else run_symbolic_mv(items)
        out["labels"] = [True] * len(items)
        return out
    items = load_pairs()[inputs]
    out = run_ours(items, workers) if method == "ours" else run_math_verify(items)
    out["labels"] = [p[2] for p in items]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--measure", nargs=2, metavar=("METHOD", "INPUTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure_once(*args.measure, args.workers)))
        return

    load_before = os.getloadavg()[0]
    results = []
    for inputs in ("gsm8k", "math500", "math500-symbolic"):
        runs: dict[str, list[dict]] = {"ours": [], "math-verify": []}
        for _ in range(args.repeats):
            for method in runs:
                # A fresh process per timing: no method inherits the other's warm sympy caches.
                out = subprocess.run(
                    [sys.executable, __file__, "--measure", method, inputs, "--workers", str(args.workers)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                runs[method].append(json.loads(out.stdout.strip().splitlines()[-1]))
        ours, mv = runs["ours"], runs["math-verify"]
        n = len(ours[0]["verdicts"])

        def best(rs: list[dict], key: str) -> float | None:
            vals = [r[key] for r in rs if key in r]
            return min(vals) if vals else None

        labels = ours[0]["labels"]
        known = [i for i, label in enumerate(labels) if label is not None]
        r = {"inputs": inputs + (" (1 process)" if inputs == "math500-symbolic" else ""), "pairs": n}
        for phase in ("cold", "warm"):
            o, m = best(ours, phase), best(mv, phase)
            if o is None:
                continue
            r[f"{phase}_ours_per_s"], r[f"{phase}_math_verify_per_s"], r[f"{phase}_ratio"] = n / o, n / m, m / o
            oc, mc = best(ours, f"{phase}_cpu"), best(mv, f"{phase}_cpu")
            r[f"{phase}_ours_cpu_ms"], r[f"{phase}_math_verify_cpu_ms"] = 1000 * oc / n, 1000 * mc / n
        r["ours_agree_with_known_labels"] = f"{sum(ours[0]['verdicts'][i] == labels[i] for i in known)}/{len(known)}"
        r["math_verify_agree_with_known_labels"] = f"{sum(mv[0]['verdicts'][i] == labels[i] for i in known)}/{len(known)}"
        r["verdicts_differ"] = sum(a != b for a, b in zip(ours[0]["verdicts"], mv[0]["verdicts"]))
        r["ours_paths"] = ours[0].get("counts", {})
        results.append(r)
        print(json.dumps(r), flush=True)

    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"workers={args.workers}, best of {args.repeats}, load average before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| inputs | pass | ours (/s) | math-verify (/s) | ratio | ours CPU ms/pair | math-verify CPU ms/pair | agree with known labels: ours / math-verify |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        for phase in ("cold", "warm"):
            if f"{phase}_ratio" not in r:
                continue
            print(
                f"| {r['inputs']} ({r['pairs']}) | {phase} | {r[f'{phase}_ours_per_s']:,.0f} | {r[f'{phase}_math_verify_per_s']:,.0f} | "
                f"{r[f'{phase}_ratio']:.1f}x | {r[f'{phase}_ours_cpu_ms']:.2f} | {r[f'{phase}_math_verify_cpu_ms']:.2f} | "
                f"{r['ours_agree_with_known_labels']} / {r['math_verify_agree_with_known_labels']} |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

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
processes, the production path) with cold caches each repeat; "math-verify" is
`verify(parse(gold), parse(response))` per pair in this one process, its default usage.
Each figure is the best of --repeats; the ratio compares the best figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
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


def run_ours(pairs, workers: int) -> tuple[float, list[bool], dict]:
    import reward.math as rm
    from reward.math import MathVerifierPool

    rm._cached_gold_forms.cache_clear()  # cold gold cache each repeat: same footing as math-verify
    with MathVerifierPool(num_workers=workers, timeout_s=10.0) as pool:
        # Start the worker processes outside the timing (a long-lived pool pays this once).
        pool.score_batch(["\\boxed{\\sqrt{8}}"] * workers, ["2\\sqrt{2}"] * workers)
        pool.counts.clear()
        started = time.perf_counter()
        scores = pool.score_batch([p[0] for p in pairs], [p[1] for p in pairs])
        elapsed = time.perf_counter() - started
        counts = {k: v for k, v in pool.counts.items() if k.startswith(("path_", "status_"))}
    return elapsed, [s.correct for s in scores], counts


def run_math_verify(pairs) -> tuple[float, list[bool]]:
    from math_verify import parse, verify

    started = time.perf_counter()
    verdicts = [bool(verify(parse(f"${gold}$"), parse(response))) for response, gold, _ in pairs]
    return time.perf_counter() - started, verdicts


def symbolic_inputs() -> list[tuple[str, str]]:
    from reward.math_extract import last_boxed
    from reward.math_normalize import normalize_answer

    with open(eval_data_file("math500_test.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [(normalize_answer(last_boxed(r["solution"])), normalize_answer(r["answer"]), r["solution"], r["answer"]) for r in rows]


def run_symbolic_ours(items) -> tuple[float, list[bool]]:
    from reward.math import MathStatus, symbolic_verdict
    from reward.math_sympy import parse_gold

    parse_gold.cache_clear()
    started = time.perf_counter()
    verdicts = [symbolic_verdict(pred, gold, 10.0)[0] is MathStatus.CORRECT for pred, gold, _, _ in items]
    return time.perf_counter() - started, verdicts


def run_symbolic_mv(items) -> tuple[float, list[bool]]:
    from math_verify import parse, verify

    started = time.perf_counter()
    verdicts = [bool(verify(parse(f"${gold}$"), parse(solution))) for _, _, solution, gold in items]
    return time.perf_counter() - started, verdicts


def agreement(verdicts: list[bool], pairs) -> str:
    known = [(v, p[2]) for v, p in zip(verdicts, pairs) if p[2] is not None]
    return f"{sum(v == e for v, e in known)}/{len(known)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    pairs = load_pairs()
    results = []
    for name, items in pairs.items():
        best_ours = best_mv = float("inf")
        for _ in range(args.repeats):
            t_ours, v_ours, counts = run_ours(items, args.workers)
            t_mv, v_mv = run_math_verify(items)
            best_ours, best_mv = min(best_ours, t_ours), min(best_mv, t_mv)
        results.append(
            {
                "inputs": name,
                "pairs": len(items),
                "ours_per_s": len(items) / best_ours,
                "math_verify_per_s": len(items) / best_mv,
                "ratio": best_mv / best_ours,
                "ours_agree_with_known_labels": agreement(v_ours, items),
                "math_verify_agree_with_known_labels": agreement(v_mv, items),
                "verdicts_differ": sum(a != b for a, b in zip(v_ours, v_mv)),
                "ours_paths": counts,
            }
        )
        print(json.dumps(results[-1]), flush=True)

    items = symbolic_inputs()
    best_ours = best_mv = float("inf")
    for _ in range(args.repeats):
        t_ours, v_ours = run_symbolic_ours(items)
        t_mv, v_mv = run_symbolic_mv(items)
        best_ours, best_mv = min(best_ours, t_ours), min(best_mv, t_mv)
    results.append(
        {
            "inputs": "math500-symbolic (1 process)",
            "pairs": len(items),
            "ours_per_s": len(items) / best_ours,
            "math_verify_per_s": len(items) / best_mv,
            "ratio": best_mv / best_ours,
            "ours_agree_with_known_labels": f"{sum(v_ours)}/{len(items)}",
            "math_verify_agree_with_known_labels": f"{sum(v_mv)}/{len(items)}",
            "verdicts_differ": sum(a != b for a, b in zip(v_ours, v_mv)),
        }
    )
    print(json.dumps(results[-1]), flush=True)

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"workers={args.workers}, best of {args.repeats}\n")  # fmt: skip
    print("| inputs | pairs | ours (verifications/s) | math-verify direct (/s) | ratio | agree with known labels: ours / math-verify |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        print(
            f"| {r['inputs']} | {r['pairs']} | {r['ours_per_s']:,.0f} | {r['math_verify_per_s']:,.0f} | "
            f"{r['ratio']:.1f}x | {r['ours_agree_with_known_labels']} / {r['math_verify_agree_with_known_labels']} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

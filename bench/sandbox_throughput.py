"""HumanEval in the code sandbox with full isolation: executions per second.

    .venv/bin/python bench/sandbox_throughput.py [--slots 8] [--repeats 3] [--bare]

Issue 4 target: the 164 HumanEval canonical solutions, each graded by `reward.code.grade_humaneval`
(its own uid, bwrap namespaces, rlimits, seccomp and, where the host allows, a cgroup; the tests in
the grader process, the solution in a forked one, the verdict over the private channel) at 30 or
more executions per second on 2 cores.

One execution = one problem: sandbox start, program load, `check(candidate)`, verdict, cleanup.
The run fails unless every layer is active and every solution scores 1.0. Executions are
submitted from a thread pool as wide as the sandbox's slots. The figure is the best of
--repeats full passes over the 164 problems (other processes on the machine disturb single
runs); the median is printed too. --bare also measures `run("pass")` (start-up cost alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qwen25_rl.paths import eval_data_file  # noqa: E402
from qwen25_rl.reward.code import grade_humaneval  # noqa: E402
from qwen25_rl.sandboxes import Sandbox, SandboxConfig  # noqa: E402

REQUIRED = {"uid", "namespaces", "rlimits", "seccomp"}


def one_pass(sb: Sandbox, problems: list[dict]) -> tuple[float, list]:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(sb.slots) as ex:
        scores = list(ex.map(lambda p: grade_humaneval(p, p["canonical_solution"], sandbox=sb), problems))
    return time.perf_counter() - t0, scores


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slots", type=int, default=0, help="concurrent executions (0: the sandbox default)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bare", action="store_true", help="also time run('pass') executions")
    args = ap.parse_args()

    with open(eval_data_file("humaneval.jsonl")) as f:
        problems = [json.loads(line) for line in f]
    sb = Sandbox(SandboxConfig(slots=args.slots))
    layers = set(sb.isolation)
    if not REQUIRED <= layers:
        print(f"missing isolation layers: {sorted(REQUIRED - layers)}", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    # warm-up: page cache, first uid leases, cgroups created
    one_pass(sb, problems[:16])
    rates = []
    for _ in range(args.repeats):
        seconds, scores = one_pass(sb, problems)
        bad = [p["task_id"] for p, s in zip(problems, scores) if s.score != 1.0]
        if bad:
            print(f"canonical solutions that did not score 1.0: {bad}", file=sys.stderr)
            return 1
        rates.append(len(problems) / seconds)
    out = {
        "benchmark": "humaneval_sandbox_throughput",
        "executions_per_s_best": round(max(rates), 1),
        "executions_per_s_median": round(statistics.median(rates), 1),
        "passes": [round(r, 1) for r in rates],
        "problems": len(problems),
        "slots": sb.slots,
        "layers": sorted(layers),
        "python_in_sandbox": sb.describe()["python"],
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "machine": platform.machine(),
    }
    if args.bare:
        n = 164
        t0 = time.perf_counter()
        with ThreadPoolExecutor(sb.slots) as ex:
            results = list(ex.map(lambda _: sb.run("pass"), range(n)))
        assert all(r.ok for r in results)
        out["bare_runs_per_s"] = round(n / (time.perf_counter() - t0), 1)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

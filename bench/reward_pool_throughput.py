"""Reward scoring throughput: in one process vs the Ray RewardPool vs a Ray Serve endpoint.

Inputs (real data, `qwen25_rl.paths.eval_data_dir()`): every GSM8K test row with its
reference solution as the response (ends in `#### N`, decided by the fast numeric path) and N
as the gold answer; or (--dataset math500) every MATH-500 row with its solution (answer in
\\boxed{}, many decided by sympy in worker processes). Scored with math (weight 1) + format
(0.1) + length (DAPO shaping, chars). The same batch goes through

  inline   RewardScorer in this process (what one reward worker does)
  pool-1   RewardPool, 1 worker actor (1 CPU)
  pool-2   RewardPool, 2 worker actors (1 CPU each)
  serve    the same reward config on Ray Serve, called through the `reward_model` client
           (HTTP JSON, 256 samples per request, 2 requests in flight)

Each mode: one warm-up pass, then `--repeats` timed passes; the best is reported (the machine
is shared; the best is the least disturbed). Every mode's rewards are checked equal to inline.

    .venv/bin/python bench/reward_pool_throughput.py [--dataset gsm8k|math500] [--limit N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import socket
import time


def load_samples(dataset: str, limit: int | None):
    from qwen25_rl.paths import eval_data_file
    from qwen25_rl.reward.types import RewardSample

    name = {"gsm8k": "gsm8k_test.jsonl", "math500": "math500_test.jsonl"}[dataset]
    rows = [json.loads(line) for line in eval_data_file(name).read_text().splitlines() if line.strip()]
    if limit:
        rows = rows[:limit]
    out = []
    for i, r in enumerate(rows):
        if dataset == "gsm8k":
            response, prompt = r["answer"], r["question"]
            gold = r["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        else:
            response, prompt, gold = r["solution"], r["problem"], r["answer"]
        out.append(RewardSample(response=response, prompt=prompt, answer=gold, data_source=dataset, group_id=i // 8, sample_id=i))
    return out


CONFIG = {
    "functions": [
        {"type": "math", "weight": 1.0, "timeout_s": 5},
        {"type": "format", "weight": 0.1},
        {"type": "length", "weight": 1.0, "params": {"max_length": 2000, "buffer": 500, "unit": "chars"}},
    ],
}


def best_rate(fn, n: int, repeats: int) -> tuple[float, list]:
    fn()  # warm-up: worker processes, caches, connections
    best, result = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return n / best, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", choices=["gsm8k", "math500"], default="gsm8k")
    ap.add_argument("--limit", type=int, default=None, help="first N rows (default: all)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import ray

    from qwen25_rl.reward.config import RewardConfig
    from qwen25_rl.reward.pool import RewardPool
    from qwen25_rl.reward.rm_client import HTTPRewardFunction, RewardModelParams
    from qwen25_rl.reward.scorer import RewardScorer
    from qwen25_rl.reward.serve import deploy
    from qwen25_rl.reward.serve_config import ServeConfig

    samples = load_samples(args.dataset, args.limit)
    n = len(samples)
    cfg = RewardConfig.model_validate(CONFIG)
    rates: dict[str, float] = {}

    with RewardScorer(cfg) as scorer:
        rates["inline"], inline = best_rate(lambda: scorer.score(samples), n, args.repeats)
    want = [r.reward for r in inline]
    verified = sum(r.breakdown.get("math") == 1.0 for r in inline)

    ray.init(address="local", num_cpus=3, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False)
    try:
        for workers in (1, 2):
            c = RewardConfig.model_validate({**CONFIG, "pool": {"num_workers": workers, "num_cpus_per_worker": 1}})
            with RewardPool(c, name_prefix=f"bench/reward{workers}") as pool:
                rates[f"pool-{workers}"], got = best_rate(lambda: pool.score(samples), n, args.repeats)
            assert [r.reward for r in got] == want, f"pool-{workers} disagrees with inline"

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = deploy(
            ServeConfig(port=port, app_name="bench", route_prefix="/bench", num_cpus_per_replica=1, max_batch_size=256), reward_cfg=cfg
        )
        client = HTTPRewardFunction(RewardModelParams(url=url, batch_size=256, concurrency=2))
        rates["serve"], got = best_rate(lambda: client.score_batch(samples, 5.0), n, args.repeats)
        client.close()
        assert [o.value for o in got] == want, "served rewards disagree with inline"
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()

    print(f"{n} {args.dataset} samples (reference solution vs gold, {verified} verified), math + format + length, best of {args.repeats}:")
    print("| mode | samples/s | vs inline |")
    print("| --- | ---: | ---: |")
    for mode, rate in rates.items():
        print(f"| {mode} | {rate:,.0f} | {rate / rates['inline']:.2f}x |")
    print(json.dumps({"dataset": args.dataset, "samples": n, "verified": verified, "rates": rates}))


if __name__ == "__main__":
    main()

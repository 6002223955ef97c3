"""Peak memory and time of token log-probs from hidden states: chunked path vs naive lm_head.

Issue 3 target, at B=4, T=1024, hidden 896, V=151,936, float32, CPU, forward + backward:
the chunked hidden-state path (`token_log_probs_from_hidden`) needs at least 4x less peak memory
than the naive `logits = lm_head(hidden); log_softmax(logits).gather(labels)` at no more than
1.2x its time.

What one run measures (each variant in a FRESH subprocess, one at a time, never in parallel):
  setup      hidden [B*T, H] and weight [V, H] (requires_grad), labels, and a random upstream
             gradient u [B, T] standing in for the policy loss (loss = sum(u * log_probs)),
  baseline   resident set size (RSS) after setup, with the kernel's peak-RSS mark reset
             (/proc/self/clear_refs = 5) so setup temporaries do not count,
  measured   forward + loss + backward (gradients of hidden and weight),
  peak       VmHWM (peak RSS) afterwards; "peak extra" = peak - baseline.
The variants must agree (loss and gradient norms to 1e-4 relative) or the run fails.

Also measured: `fused` (`fused_loss_from_hidden`, the path of `policy_loss_from_hidden`: the
loss is known up front, so each chunk's gradient is formed during forward and its logits are
never recomputed; rows of T tokens per chunk, as many as fit in --chunk-size tokens), and the
language-model pair (`--variants lm`): naive `F.cross_entropy` on materialised logits vs the
fused `lm_loss_from_hidden`.

Usage:
  .venv/bin/python bench/logprob_memory.py                      # issue pair, 1 repeat
  .venv/bin/python bench/logprob_memory.py --repeats 3 --variants all
  .venv/bin/python bench/logprob_memory.py --tokens 256 --vocab 32000   # quick, small
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("naive", "chunked", "fused", "naive_ce", "fused_lm")
PAIRS = {"chunked": "naive", "fused": "naive", "fused_lm": "naive_ce"}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _mem_available_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def run_child(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from qwen25_rl.algorithms import fused_loss_from_hidden, lm_loss_from_hidden, token_log_probs_from_hidden

    torch.set_num_threads(args.threads)
    n, h, v = args.batch * args.tokens, args.hidden, args.vocab
    g = torch.Generator().manual_seed(0)
    # filled in place: no full-size temporaries during setup
    hidden = torch.empty(n, h).normal_(0, 1.0, generator=g).requires_grad_(True)
    weight = torch.empty(v, h).normal_(0, 0.02, generator=g).requires_grad_(True)
    labels = torch.randint(0, v, (n,), generator=g)
    upstream = torch.randn(n, generator=g)

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark to the current RSS
    baseline = _status_kib("VmRSS")

    def cpu_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    c0 = cpu_seconds()
    t0 = time.perf_counter()
    if args.variant == "naive":
        logits = F.linear(hidden, weight)
        log_probs = torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        loss = (log_probs * upstream).sum()
    elif args.variant == "chunked":
        log_probs = token_log_probs_from_hidden(hidden, weight, labels, chunk_size=args.chunk_size)
        loss = (log_probs * upstream).sum()
    elif args.variant == "fused":
        rows = max(1, args.chunk_size // args.tokens)
        u = upstream.view(args.batch, args.tokens)
        loss = fused_loss_from_hidden(
            hidden.view(args.batch, args.tokens, h),
            weight,
            labels.view(args.batch, args.tokens),
            lambda r, log_probs, entropy: (log_probs * u[r]).sum(),
            rows_per_chunk=rows,
        ).loss
    elif args.variant == "naive_ce":
        loss = F.cross_entropy(F.linear(hidden, weight), labels)
    elif args.variant == "fused_lm":
        loss = lm_loss_from_hidden(hidden, weight, labels, chunk_size=args.chunk_size)
    else:
        raise ValueError(args.variant)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    c2 = cpu_seconds()

    peak = _status_kib("VmHWM")
    return {
        "variant": args.variant,
        "forward_s": t1 - t0,
        "backward_s": t2 - t1,
        "total_s": t2 - t0,
        "cpu_s": c2 - c0,  # process CPU time: less disturbed than wall time by other processes
        "baseline_gib": baseline / 2**20,
        "peak_extra_gib": (peak - baseline) / 2**20,
        "loss": loss.item(),
        "grad_hidden_norm": hidden.grad.norm().item(),
        "grad_weight_norm": weight.grad.norm().item(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--variants", nargs="+", default=["naive", "chunked"], help=f"from {VARIANTS}; 'lm' = naive_ce fused_lm; 'all' = every variant"
    )
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=896)
    p.add_argument("--vocab", type=int, default=151_936)
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument(
        "--min-free-gib",
        type=float,
        default=None,
        help="refuse to start below this much available memory (default: 4x the logits size + 2)",
    )
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per variant run")
    p.add_argument("--json", type=Path, help="also write all results here")
    p.add_argument("--variant", help=argparse.SUPPRESS)  # child mode
    args = p.parse_args()

    if args.variant:
        print(json.dumps(run_child(args)))
        return 0

    variants: list[str] = []
    for name in args.variants:
        variants += {"lm": ["naive_ce", "fused_lm"], "all": list(VARIANTS)}.get(name, [name])
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; known: {VARIANTS}")

    logits_gib = args.batch * args.tokens * args.vocab * 4 / 2**30
    need = args.min_free_gib if args.min_free_gib is not None else 4 * logits_gib + 2
    available = _mem_available_gib()
    if available < need:
        print(
            f"refusing to run: {available:.1f} GiB available, the naive path needs about {need:.1f} GiB "
            f"(full logits are {logits_gib:.2f} GiB); lower --tokens/--vocab or free memory",
            file=sys.stderr,
        )
        return 2
    print(
        f"B={args.batch} T={args.tokens} H={args.hidden} V={args.vocab} float32, threads={args.threads}, "
        f"chunk={args.chunk_size}; full logits {logits_gib:.2f} GiB; {available:.1f} GiB available",
        flush=True,
    )

    results: dict[str, list[dict]] = {v: [] for v in variants}
    for repeat in range(args.repeats):
        for variant in variants:  # strictly one at a time: the naive path alone needs ~4x the logits
            cmd = [
                sys.executable,
                __file__,
                "--variant",
                variant,
                "--batch",
                str(args.batch),
                "--tokens",
                str(args.tokens),
                "--hidden",
                str(args.hidden),
                "--vocab",
                str(args.vocab),
                "--chunk-size",
                str(args.chunk_size),
                "--threads",
                str(args.threads),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                raise SystemExit(f"variant {variant} failed with exit code {proc.returncode}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            results[variant].append(row)
            print(
                f"  run {repeat + 1} {variant:9s} total {row['total_s']:7.2f} s "
                f"(fwd {row['forward_s']:6.2f}, bwd {row['backward_s']:6.2f}, cpu {row['cpu_s']:7.2f})  "
                f"peak extra {row['peak_extra_gib']:6.2f} GiB",
                flush=True,
            )

    for fast, slow in PAIRS.items():
        if fast in results and slow in results:
            a, b = results[fast][0], results[slow][0]
            for key in ("loss", "grad_hidden_norm", "grad_weight_norm"):
                if abs(a[key] - b[key]) > 1e-4 * max(abs(b[key]), 1e-12):
                    raise SystemExit(f"{fast} and {slow} disagree on {key}: {a[key]} vs {b[key]}")

    print("\n| variant | best total s | fwd s | bwd s | CPU s of that run | peak extra GiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    best = {}
    for variant, rows in results.items():
        r = min(rows, key=lambda row: row["total_s"])
        best[variant] = {"total_s": r["total_s"], "peak_extra_gib": min(x["peak_extra_gib"] for x in rows)}
        best[variant]["cpu_s"] = r["cpu_s"]
        print(
            f"| {variant} | {r['total_s']:.2f} | {r['forward_s']:.2f} | {r['backward_s']:.2f} | "
            f"{r['cpu_s']:.2f} | {best[variant]['peak_extra_gib']:.2f} |"
        )
    for fast, slow in PAIRS.items():
        if fast in best and slow in best:
            mem = best[slow]["peak_extra_gib"] / best[fast]["peak_extra_gib"]
            tim = best[fast]["total_s"] / best[slow]["total_s"]
            cpu = best[fast]["cpu_s"] / best[slow]["cpu_s"]
            print(f"\n{fast} vs {slow}: {mem:.2f}x lower peak memory, {tim:.2f}x the wall time, {cpu:.2f}x the CPU time")
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: v for k, v in vars(args).items() if k != "json"}, "results": results}, indent=2, default=str)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

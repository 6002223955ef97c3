"""GPU check of the training path: the fused policy loss against the naive path and Liger
Kernel, and a policy update step of a Qwen2.5-0.5B-shaped model under DeepSpeed ZeRO-2 and
ZeRO-3 with its MFU. One script, standard output plus a JSON result (--out).

Part `loss` (forward + backward of the same PPO-clip token-mean loss, no KL, gradients of the
hidden states and of the output projection):
  ours    qwen25_rl.algorithms.fused.policy_loss_from_hidden, one sequence per chunk (what the
          policy worker uses at 2,048 tokens), no [tokens, vocab] logits kept for backward,
  naive   logits = hidden @ W^T, log_softmax, gather, then the same policy_loss,
  liger   liger_kernel.chunked_loss.LigerFusedLinearGRPOLoss (beta 0, loss_type "dapo" = token
          mean, the same clip range, one row per chunk; torch.compile'd on CUDA as by default).
  Shape on CUDA: hidden 896, vocabulary 151,936 (Qwen2.5-0.5B), 8 x 2,048 tokens, bf16 inputs;
  on CPU a small shape in fp32. Peak memory = torch.cuda.max_memory_allocated above what the
  inputs hold (CUDA only); time = median of --repeats after a warm-up. The three must agree
  (loss and gradients, to bf16 tolerance on CUDA) or the script exits non-zero.
Part `update` (qwen25_rl.actors.policy.PolicyWorker.train, the worker the RL stages use, in
  this process on one rank): random weights of the `qwen2.5-0.5b` preset (tied head, as the
  release), bf16 under DeepSpeed ZeRO-2 and then ZeRO-3, one optimizer step per call over
  --update-samples sequences of --update-prompt + --update-response tokens in micro-batches of
  --update-micro. tokens/s counts every token of the sequences; model FLOPs per step are
  6 x (body matmul parameters) x tokens + the attention term (qwen25_rl.pretrain.flops) + 6 x
  (vocab x hidden) x response tokens only (the fused head scores response tokens only). MFU is
  against the dense bf16 matmul rate measured in this run (not the data-sheet peak).

Usage:
  .venv/bin/python bench/gpu_check.py --device cpu --out /tmp/gpu_check.json    # small, here
  python bench/gpu_check.py --out $OUT/gpu_check.json                            # CUDA
On a GPU machine without this project's dependencies (PyTorch + transformers only), the
wheels of deepspeed's and the config's pure-Python needs travel with the tree; see
BENCHMARKS.md ("GPU check") for the command.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.grpo_vs_trl import matmul_gflops  # noqa: E402

LOSS_SHAPES = {
    "cuda": {"batch": 8, "tokens": 2048, "hidden": 896, "vocab": 151_936, "dtype": "bfloat16"},
    "cpu": {"batch": 2, "tokens": 64, "hidden": 64, "vocab": 4096, "dtype": "float32"},
}
UPDATE_SHAPES = {
    "cuda": {"preset": "qwen2.5-0.5b", "samples": 16, "micro": 4, "prompt": 512, "response": 1536, "bf16": True, "steps": 3},
    "cpu": {"preset": "tiny", "samples": 4, "micro": 2, "prompt": 16, "response": 48, "bf16": False, "steps": 1},
}
CLIP = 0.2


# -- part 1: fused loss vs naive vs Liger ----------------------------------------------------


def loss_inputs(shape: dict, device: str, seed: int = 0) -> dict:
    import torch

    g = torch.Generator(device="cpu").manual_seed(seed)
    dt = getattr(torch, shape["dtype"])
    b, t, h, v = shape["batch"], shape["tokens"], shape["hidden"], shape["vocab"]
    hidden = torch.randn(b, t, h, generator=g).to(device, dt)
    weight = (torch.randn(v, h, generator=g) / math.sqrt(h)).to(device, dt)
    labels = torch.randint(0, v, (b, t), generator=g).to(device)
    mask = torch.ones(b, t)
    mask[-1, t // 2 :] = 0  # one shorter response
    with torch.no_grad():  # old log-probs near the current ones, so some ratios clip
        lp = torch.cat([_naive_log_probs(hidden[i : i + 1], weight, labels[i : i + 1]) for i in range(b)])
        old = (lp + 0.2 * torch.randn(b, t, generator=g).to(device)).float()
    return {
        "hidden": hidden,
        "weight": weight,
        "labels": labels,
        "mask": mask.to(device),
        "old": old,
        "advantages": torch.randn(b, generator=g).to(device),
    }


def _naive_log_probs(hidden, weight, labels):
    import torch

    logits = (hidden @ weight.T).float()
    return torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def run_ours(x: dict, hidden, weight):
    from qwen25_rl.algorithms.fused import policy_loss_from_hidden

    out = policy_loss_from_hidden(
        hidden, weight, x["labels"], x["old"], x["advantages"], x["mask"], rows_per_chunk=1, clip_low=CLIP, clip_high=CLIP
    )
    return out.loss


def run_naive(x: dict, hidden, weight):
    from qwen25_rl.algorithms.policy_loss import policy_loss

    lp = _naive_log_probs(hidden, weight, x["labels"])
    return policy_loss(lp, x["old"], x["advantages"], x["mask"], clip_low=CLIP, clip_high=CLIP).loss


def make_liger(device: str):
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

    loss = LigerFusedLinearGRPOLoss(
        beta=0.0,
        use_ref_model=False,
        loss_type="dapo",
        epsilon_low=CLIP,
        epsilon_high=CLIP,
        chunk_size=1,
        compiled=device == "cuda",  # Liger's default on GPU; inductor on CPU only adds compile time
    )

    def run(x: dict, hidden, weight):
        out = loss(hidden, weight, x["labels"], x["mask"], x["advantages"], old_per_token_logps=x["old"])
        return out[0] if isinstance(out, tuple) else out

    return run


def measure_loss(name: str, fn, x: dict, device: str, repeats: int) -> dict:
    import torch

    def once():
        hidden = x["hidden"].detach().requires_grad_(True)
        weight = x["weight"].detach().requires_grad_(True)
        loss = fn(x, hidden, weight)
        loss.backward()
        return loss.detach().float(), hidden.grad, weight.grad

    once()  # warm-up (Liger compiles here)
    times, peak = [], None
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        loss, g_hidden, g_weight = once()
        if device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
        times.append(time.perf_counter() - start)
    return {
        "name": name,
        "seconds": statistics.median(times),
        "peak_extra_bytes": peak,
        "loss": float(loss),
        "grads": (g_hidden.float().cpu(), g_weight.float().cpu()),
    }


def loss_part(device: str, repeats: int, shape: dict) -> dict:
    import torch

    x = loss_inputs(shape, device)
    runs = {"ours": run_ours, "naive": run_naive}
    skipped = {}
    try:
        runs["liger"] = make_liger(device)
    except ImportError as exc:
        skipped["liger"] = f"liger-kernel not importable: {exc}"
    results = {name: measure_loss(name, fn, x, device, repeats) for name, fn in runs.items()}
    # Agreement with the naive path (bf16 inputs: relative to each gradient's scale).
    tol = 2e-2 if shape["dtype"] == "bfloat16" else 1e-4
    naive = results["naive"]
    problems = []
    for name, r in results.items():
        r["loss_abs_diff_vs_naive"] = abs(r["loss"] - naive["loss"])
        diffs = []
        for got, ref in zip(r["grads"], naive["grads"]):
            diffs.append(float((got - ref).abs().max() / ref.abs().max().clamp(min=1e-30)))
        r["grad_rel_diff_vs_naive"] = max(diffs)
        if r["loss_abs_diff_vs_naive"] > tol * max(1.0, abs(naive["loss"])) or r["grad_rel_diff_vs_naive"] > tol:
            problems.append(f"{name} disagrees with naive: loss diff {r['loss_abs_diff_vs_naive']:.3g}, grad diff {max(diffs):.3g}")
    for r in results.values():
        del r["grads"]
    out = {"shape": shape, "device": device, "results": results, "skipped": skipped, "problems": problems}
    if "liger" in results and device == "cuda":
        ours, liger = results["ours"], results["liger"]
        out["targets"] = {
            "ours_peak_at_most_liger": ours["peak_extra_bytes"] <= liger["peak_extra_bytes"],
            "ours_time_within_1_2x_liger": ours["seconds"] <= 1.2 * liger["seconds"],
        }
    del x
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


# -- part 2: a policy update step under ZeRO-2 / ZeRO-3 --------------------------------------


def update_flops(config, samples: int, prompt: int, response: int) -> float:
    """Model FLOPs of one update step over `samples` sequences (see the module doc)."""
    from qwen25_rl.pretrain.flops import matmul_params

    seq = prompt + response
    head = config.vocab_size * config.hidden_size
    body = matmul_params(config) - head
    per_token_body = 6.0 * body + 12.0 * config.num_hidden_layers * config.hidden_size * seq
    return samples * (seq * per_token_body + response * 6.0 * head)


def update_batch(samples: int, prompt: int, response: int, vocab: int, seed: int = 0):
    import torch

    from qwen25_rl.batch import TensorBatch

    g = torch.Generator().manual_seed(seed)
    return TensorBatch(
        {
            "prompt_ids": torch.randint(0, vocab, (samples, prompt), generator=g),
            "prompt_mask": torch.ones(samples, prompt, dtype=torch.long),
            "response_ids": torch.randint(0, vocab, (samples, response), generator=g),
            "response_mask": torch.ones(samples, response, dtype=torch.long),
            "advantages": torch.randn(samples, generator=g),
        }
    )


def update_part(device: str, shape: dict, stages: list[int], matmul_tflops: float) -> dict:
    import torch

    from qwen25_rl.actors.base import free_port
    from qwen25_rl.actors.policy import LossSettings, PolicyWorker, TrainSettings
    from qwen25_rl.models import build_model, save_pretrained

    os.environ["DS_ACCELERATOR"] = "cuda" if device == "cuda" else "cpu"
    if device == "cuda":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")  # the worker's test for a GPU (Ray sets it for actors)
    model = build_model(shape["preset"], seed=0, attn_implementation="sdpa")
    config = model.config
    n_params = sum(p.numel() for p in model.parameters())
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, None, Path(tmp) / "model")
        del model
        port = free_port()
        batch = update_batch(shape["samples"], shape["prompt"], shape["response"], config.vocab_size)
        flops = update_flops(config, shape["samples"], shape["prompt"], shape["response"])
        tokens = shape["samples"] * (shape["prompt"] + shape["response"])
        for stage in stages:
            settings = TrainSettings(
                strategy="deepspeed", zero_stage=stage, micro_batch_size=shape["micro"], lr=1e-6, bf16=shape["bf16"], chunk_size=2048
            )
            worker = PolicyWorker(str(Path(tmp) / "model"), settings, torch_threads=None)
            worker.init_distributed("127.0.0.1", port, 0, 1, "nccl" if device == "cuda" else "gloo")
            worker.init_model()
            loss = LossSettings(loss_type="ppo", loss_agg_mode="token-mean")
            worker.train(batch, loss, lr=1e-6)  # warm-up: allocator, kernels, DeepSpeed buffers
            times = []
            for _ in range(shape["steps"]):
                if device == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                metrics = worker.train(batch, loss, lr=1e-6)
                if device == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            results[f"zero{stage}"] = {
                "seconds_per_step": seconds,
                "tokens_per_step": tokens,
                "tokens_per_s": tokens / seconds,
                "model_tflops_per_s": flops / seconds / 1e12,
                "mfu_vs_measured_matmul": flops / seconds / 1e12 / matmul_tflops,
                "peak_memory_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
                "grad_norm": metrics["policy/grad_norm"],
                "loss_finite": math.isfinite(metrics["policy/loss"]),
            }
            del worker  # engines hold the model; free it before the next stage's
            if device == "cuda":
                torch.cuda.empty_cache()
    return {
        "shape": shape,
        "parameters": n_params,
        "model_flops_per_step": flops,
        "results": results,
        "problems": [
            f"{k}: non-finite loss or grad norm" for k, r in results.items() if not (r["loss_finite"] and math.isfinite(r["grad_norm"]))
        ],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    ap.add_argument("--parts", default="loss,update", help="comma list of: loss, update")
    ap.add_argument("--zero-stages", default="2,3")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="JSON result file")
    args = ap.parse_args(argv)

    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    torch.manual_seed(0)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    dtype = "bfloat16" if device == "cuda" else "float32"
    rate = matmul_gflops(seconds=2.0, n=8192 if device == "cuda" else 1024, device=device, dtype=dtype) / 1e3
    result: dict = {"device": name, "torch": torch.__version__, "matmul_tflops": rate, "matmul_dtype": dtype}
    print(f"device {name}; dense {dtype} matmul measured at {rate:.2f} TFLOP/s", flush=True)
    if "loss" in parts:
        r = loss_part(device, args.repeats, LOSS_SHAPES[device])
        result["loss"] = r
        s = r["shape"]
        print(f"\nfused loss, {s['batch']} x {s['tokens']} tokens, hidden {s['hidden']}, vocab {s['vocab']}, {s['dtype']}:")
        for n, x in r["results"].items():
            mem = f"{x['peak_extra_bytes'] / 2**30:7.2f} GiB" if x["peak_extra_bytes"] is not None else "    n/a"
            print(
                f"  {n:6s} {x['seconds'] * 1e3:9.1f} ms  peak {mem}  loss {x['loss']:.6f}  grad diff vs naive {x['grad_rel_diff_vs_naive']:.2e}"
            )
        for n, why in r["skipped"].items():
            print(f"  {n:6s} skipped: {why}")
        for k, ok in r.get("targets", {}).items():
            print(f"  target {k}: {'met' if ok else 'MISSED'}")
    if "update" in parts:
        stages = [int(s) for s in args.zero_stages.split(",")]
        r = update_part(device, UPDATE_SHAPES[device], stages, rate)
        result["update"] = r
        s = r["shape"]
        print(
            f"\npolicy update, {s['preset']} ({r['parameters'] / 1e6:.0f}M parameters), {s['samples']} x ({s['prompt']} + "
            f"{s['response']}) tokens per step, micro-batch {s['micro']}, {'bf16' if s['bf16'] else 'fp32'}:"
        )
        for n, x in r["results"].items():
            mem = f", peak {x['peak_memory_bytes'] / 2**30:.1f} GiB" if x["peak_memory_bytes"] is not None else ""
            print(
                f"  {n}: {x['seconds_per_step']:.3f} s/step, {x['tokens_per_s']:,.0f} tokens/s, "
                f"{x['model_tflops_per_s']:.2f} TFLOP/s = MFU {x['mfu_vs_measured_matmul']:.1%} of the measured matmul rate{mem}"
            )
    problems = result.get("loss", {}).get("problems", []) + result.get("update", {}).get("problems", [])
    result["problems"] = problems
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    for p in problems:
        print(f"PROBLEM: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

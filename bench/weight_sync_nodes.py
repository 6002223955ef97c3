"""Weight sync between nodes: GB/s from a policy-side actor on node A to a rollout-side receiver
on node B of a simulated Ray cluster, through the registered transports of
`qwen25_rl.actors.weight_sync` (on CPU: `object_store` and `broadcast` over gloo), against the
same figure with both actors on one node.

The cluster is `ray.cluster_utils.Cluster`: two nodes, each with its own raylet and object
store, both on this machine. Objects move between the two stores as between machines (Ray's
object manager, over TCP on loopback), and the broadcast goes over a gloo TCP connection, so the
"network" is this machine's loopback and memory bandwidth: a lower bound on the framework's
overhead, not a measurement of a real network.

What one sync is: exactly what GRPO times as `time/sync_s` (`transport.sync(policy, rollout,
version)`): the policy side's weights (HF names; a tied output head is listed under its own name
as well, as vLLM needs it) put into the object store as one array per tensor, the tied head once
(`object_store`, PackedWeights), or broadcast in buckets of `bucket_mb`, the tied head twice
(`broadcast`); the receiver is the real
`RolloutWorker` code with its engine replaced by a plain copy of every tensor into its own
parameters (what the `hf` engine does; vLLM's reload repacks on top of that, not measured here).
The policy side is the real `WeightSource` mixin over randomly initialised tensors of the
preset's shape (no optimizer, no DeepSpeed: the transport is what is measured).

    .venv/bin/python bench/weight_sync_nodes.py                   # small-20m fp32 + qwen2.5-0.5b bf16, 5 repeats
    .venv/bin/python bench/weight_sync_nodes.py --quick           # smoke test: tiny model, 2 repeats
    .venv/bin/python bench/weight_sync_nodes.py --cases small-20m:bfloat16 --repeats 7 --out /tmp/ws.json

GB/s = 10^9 bytes of packed weights per second of the sync call (median over the repeats,
after one unmeasured warm-up sync per placement and transport). The machine's fp32 matmul
rate is measured in the same invocation (bench/grpo_vs_trl.py's `matmul_gflops`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bench.grpo_vs_trl import matmul_gflops  # noqa: E402
from qwen25_rl.actors.base import DistributedWorker  # noqa: E402
from qwen25_rl.actors.rollout import RolloutWorker  # noqa: E402
from qwen25_rl.actors.weight_sync import WeightSource, get_weight_sync  # noqa: E402

LABEL = "bench-node"
DEFAULT_CASES = "small-20m:float32,qwen2.5-0.5b:bfloat16"
QUICK_CASES = "tiny:float32"


def preset_shapes(preset: str) -> tuple[list[tuple[str, tuple[int, ...]]], dict[str, str]]:
    """(name, shape) of every weight a rollout engine receives (qwen25_rl.models.factory.named_weights)
    and {alias: name} for a tied output head, from a model built on the meta device."""
    from transformers import Qwen2ForCausalLM

    from qwen25_rl.models.factory import named_weights, qwen2_config

    with torch.device("meta"):
        model = Qwen2ForCausalLM(qwen2_config(preset))
    first: dict[int, str] = {}
    shapes, aliases = [], {}
    for name, t in named_weights(model):
        if id(t) in first:
            aliases[name] = first[id(t)]
        else:
            first[id(t)] = name
        shapes.append((name, tuple(t.shape)))
    return shapes, aliases


class BenchPolicy(DistributedWorker, WeightSource):
    """Policy side: random weights of a preset's shape behind the real `WeightSource` methods
    (`export_weights_ref` for the object store, `weight_layout` / `broadcast_weights` for the
    broadcast)."""

    def __init__(self, shapes: list[tuple[str, tuple[int, ...]]], aliases: dict[str, str], dtype: str, seed: int = 0):
        super().__init__(torch_threads=1)
        g = torch.Generator().manual_seed(seed)
        dt = getattr(torch, dtype)
        tensors: dict[str, torch.Tensor] = {}
        for name, shape in shapes:
            if name not in aliases:
                tensors[name] = (torch.randn(shape, generator=g) * 0.02).to(dt)
        self.named = [(name, tensors[aliases.get(name, name)]) for name, _ in shapes]
        self.last_export_s = 0.0

    def sync_weights(self):
        return self.named

    def export_weights_ref(self):
        start = time.perf_counter()
        out = super().export_weights_ref()
        self.last_export_s = time.perf_counter() - start
        return out

    def export_seconds(self) -> float:
        return self.last_export_s

    def info(self) -> dict:
        """Parameters, and the bytes one sync moves: the object store sends a tied head once
        (PackedWeights), the broadcast under both names."""
        from qwen25_rl.actors.weight_sync import PackedWeights

        unique = {id(t): t for _, t in self.named}.values()
        return {
            "parameters": sum(t.numel() for t in unique),
            "bytes": {
                "object_store": PackedWeights.pack(self.named).nbytes,
                "broadcast": sum(t.numel() * t.element_size() for _, t in self.named),
            },
        }

    def checksum(self) -> float:
        return float(sum(t.double().sum() for _, t in self.named))


class CopyEngine:
    """Stands in for the rollout engine: copies every received tensor into its own parameters
    (the `hf` engine's `load_weights`), and times that."""

    def __init__(self, shapes: list[tuple[str, tuple[int, ...]]], dtype: str):
        self.params = {name: torch.zeros(shape, dtype=getattr(torch, dtype)) for name, shape in shapes}
        self.last_load_s = 0.0

    def load_weights(self, weights) -> None:
        start = time.perf_counter()
        for name, t in weights:
            self.params[name].copy_(t)
        self.last_load_s = time.perf_counter() - start


class BenchRollout(RolloutWorker):
    """Rollout side: the real `RolloutWorker.update_weights` / `join_weight_group` /
    `receive_weights`, with `CopyEngine` instead of vLLM."""

    def __init__(self, shapes: list[tuple[str, tuple[int, ...]]], dtype: str):
        DistributedWorker.__init__(self, torch_threads=1)
        self.engine_name = "copy"
        self.engine = CopyEngine(shapes, dtype)
        self.pad_id = 0
        self.version = 0
        self._receiver = None

    def load_seconds(self) -> float:
        return self.engine.last_load_s

    def checksum(self) -> float:
        return float(sum(t.double().sum() for t in self.engine.params.values()))


def measure(policy, rollout, transport_name: str, repeats: int, bucket_mb: float) -> dict:
    """One warm-up sync, then `repeats` timed ones; checks the receiver holds the sender's weights."""
    kwargs = {"bucket_mb": bucket_mb} if transport_name == "broadcast" else {}
    transport = get_weight_sync(transport_name, **kwargs)
    transport.setup(policy, rollout)
    rows = []
    for i in range(repeats + 1):
        seconds = transport.sync(policy, rollout, i + 1)
        export_s = policy.run_rank0("export_seconds") if transport_name == "object_store" else None
        load_s = rollout.run_rank0("load_seconds")
        if i:  # the first one warms connections and allocations
            rows.append({"sync_s": seconds, "export_s": export_s, "load_s": load_s})
    sent, received = policy.run_rank0("checksum"), rollout.run_rank0("checksum")
    if abs(sent - received) > 1e-6 * max(1.0, abs(sent)):
        raise RuntimeError(f"{transport_name}: the receiver's weights differ from the sender's ({received} vs {sent})")
    if rollout.run_rank0("get_version") != repeats + 1:
        raise RuntimeError(f"{transport_name}: the receiver did not adopt the last policy version")
    return {
        "sync_s": [r["sync_s"] for r in rows],
        "median_s": statistics.median(r["sync_s"] for r in rows),
        "export_median_s": statistics.median(r["export_s"] for r in rows) if transport_name == "object_store" else None,
        "load_median_s": statistics.median(r["load_s"] for r in rows),
    }


def run_case(preset: str, dtype: str, transports: list[str], repeats: int, bucket_mb: float) -> list[dict]:
    from qwen25_rl.actors.worker_group import WorkerGroup

    results = []
    shapes, aliases = preset_shapes(preset)  # here, so the actors need not import transformers
    policy = WorkerGroup(
        BenchPolicy,
        1,
        name=f"bench/policy-{preset}",
        num_cpus=1,
        distributed=False,
        node_labels={LABEL: "a"},
        init_kwargs={"shapes": shapes, "aliases": aliases, "dtype": dtype},
        placement_timeout_s=300,
    )
    try:
        info = policy.run_rank0("info")
        for placement, node in (("cross-node", "b"), ("same-node", "a")):
            rollout = WorkerGroup(
                BenchRollout,
                1,
                name=f"bench/rollout-{preset}-{node}",
                num_cpus=1,
                distributed=False,
                node_labels={LABEL: node},
                init_kwargs={"shapes": shapes, "dtype": dtype},
                placement_timeout_s=300,
            )
            try:
                same = rollout.node_ids[0] == policy.node_ids[0]
                if same != (placement == "same-node"):
                    raise RuntimeError(f"{placement}: actors on nodes {policy.node_ids} and {rollout.node_ids}")
                for name in transports:
                    r = measure(policy, rollout, name, repeats, bucket_mb)
                    nbytes = info["bytes"][name]
                    row = {
                        "model": preset,
                        "dtype": dtype,
                        "parameters": info["parameters"],
                        "bytes_per_sync": nbytes,
                        "transport": name,
                        "placement": placement,
                        **r,
                        "gb_per_s": nbytes / r["median_s"] / 1e9,
                    }
                    results.append(row)
                    print(
                        f"{preset} {dtype} {name:>12} {placement:>10}: {nbytes / 1e6:8.1f} MB, "
                        f"median {r['median_s'] * 1e3:8.1f} ms -> {row['gb_per_s']:.2f} GB/s "
                        f"(runs {', '.join(f'{s * 1e3:.0f}' for s in r['sync_s'])} ms; receiver copy {r['load_median_s'] * 1e3:.0f} ms"
                        + (f", pack + put {r['export_median_s'] * 1e3:.0f} ms" if r["export_median_s"] is not None else "")
                        + ")",
                        flush=True,
                    )
            finally:
                rollout.shutdown()
    finally:
        policy.shutdown()
    return results


def payload_bytes(preset: str, dtype: str) -> int:
    shapes, _ = preset_shapes(preset)
    return sum(int(torch.Size(s).numel()) for _, s in shapes) * torch.empty(0, dtype=getattr(torch, dtype)).element_size()


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model (parameters) | dtype | MB per sync | transport | placement | median sync | GB/s | receiver copy | pack + put |",
        "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        export = f"{r['export_median_s'] * 1e3:.0f} ms" if r["export_median_s"] is not None else "—"
        lines.append(
            f"| {r['model']} ({r['parameters'] / 1e6:.1f}M) | {r['dtype']} | {r['bytes_per_sync'] / 1e6:.1f} | {r['transport']} | "
            f"{r['placement']} | {r['median_s'] * 1e3:.0f} ms | {r['gb_per_s']:.2f} | {r['load_median_s'] * 1e3:.0f} ms | {export} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=None, help=f"preset:dtype,... (default {DEFAULT_CASES}; --quick: {QUICK_CASES})")
    ap.add_argument("--transports", default="object_store,broadcast")
    ap.add_argument("--repeats", type=int, default=None, help="timed syncs per placement and transport (default 5; --quick: 2)")
    ap.add_argument("--bucket-mb", type=float, default=64.0, help="broadcast bucket size (weight_sync.bucket_mb)")
    ap.add_argument("--quick", action="store_true", help="smoke test: the tiny model, 2 repeats")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    cases = [c.split(":") for c in (args.cases or (QUICK_CASES if args.quick else DEFAULT_CASES)).split(",")]
    repeats = args.repeats or (2 if args.quick else 5)
    transports = args.transports.split(",")

    # SIGTERM (a test's timeout) still shuts the simulated nodes down (the `finally` below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = datetime.now(timezone.utc)
    gflops = matmul_gflops(seconds=0.5 if args.quick else 3.0)
    print(f"fp32 matmul: {gflops:.1f} GFLOP/s", flush=True)

    import ray
    from ray.cluster_utils import Cluster

    # Each store holds one packed copy per sync (the sender's put, the receiver's pull) and may
    # still hold the previous one while it is released.
    largest = max(payload_bytes(p, d) for p, d in cases)
    store = max(150 * 2**20, int(2.5 * largest))
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    node = {"num_cpus": 2, "object_store_memory": store}
    t = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False, "labels": {LABEL: "a"}})
    rows: list[dict] = []
    try:
        cluster.add_node(**node, labels={LABEL: "b"})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        print(f"cluster: 2 nodes, {store / 2**30:.1f} GiB object store each, up in {time.perf_counter() - t:.1f} s", flush=True)
        for preset, dtype in cases:
            rows += run_case(preset, dtype, transports, repeats, args.bucket_mb)
    finally:
        ray.shutdown()
        cluster.shutdown()
    gflops_end = matmul_gflops(seconds=0.5 if args.quick else 3.0)
    result = {
        "date_utc": started.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(["bench/weight_sync_nodes.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"{os.cpu_count()} cores ({platform.machine()})",
        "matmul_gflops_fp32": gflops,
        "matmul_gflops_fp32_end": gflops_end,
        "load_average": os.getloadavg(),
        "repeats": repeats,
        "results": rows,
    }
    print(markdown(rows))
    print(f"fp32 matmul {gflops:.1f} GFLOP/s at the start, {gflops_end:.1f} at the end; load average {os.getloadavg()[0]:.1f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()

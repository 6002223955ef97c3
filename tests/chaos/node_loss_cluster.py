"""A simulated multi-node Ray cluster around one command, that loses a node at a chosen point.

Like tests/integration/multinode/simulated_cluster.py (one raylet and object store per node, all
on this machine, the command run with RAY_ADDRESS at the head), plus: once every `--when` glob
matches a file (e.g. the fault seam's `fired-*` marker and `checkpoints/step_2/COMPLETE`), it
reads `--placement` (a run's placement.json), finds the node of rank `--rank` of group `--group`
and removes that node from the cluster (`Cluster.remove_node(node, allow_graceful=False)`: its
raylet, object store and worker processes are SIGKILLed, as when a machine is lost). The node
must not be the head (the driver's node).

`--report` receives {"node_id", "labels", "removed_at" (time.time()), "remove_s", "first": {"rc",
"ended_at"}, "actors": [...]} where
"actors" lists, after the commands ended, every actor named `--group`-`--rank` the cluster knew
(node id, state): where replacements ran. Exits with the command's exit status.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import time

NODE_ENV = {"DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false"}
OBJECT_STORE_MB = 150


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", required=True, help="JSON list of node settings; the first is the head")
    parser.add_argument("--info", required=True, help="where to write the cluster's address and node labels (JSON)")
    parser.add_argument("--when", action="append", required=True, help="glob; the node goes once all of them match")
    parser.add_argument("--placement", required=True, help="the run's placement.json")
    parser.add_argument("--group", required=True, help="worker group whose rank's node is removed (grpo/rollout)")
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--report", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    import ray
    from ray.cluster_utils import Cluster

    os.environ.update(NODE_ENV)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    nodes = json.loads(args.nodes)
    common = {"object_store_memory": OBJECT_STORE_MB * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={**common, "include_dashboard": False, **nodes[0]})
    proc = None
    report: dict = {}
    try:
        for node in nodes[1:]:
            cluster.add_node(**common, **node)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        labels = {n["NodeID"]: n.get("Labels", {}) for n in ray.nodes() if n["Alive"]}
        ray.shutdown()
        with open(args.info, "w") as f:
            json.dump({"address": cluster.address, "nodes": labels}, f)
        env = {**os.environ, "RAY_ADDRESS": cluster.address}
        proc = subprocess.Popen(command, env=env)
        while proc.poll() is None:
            if not report and all(glob.glob(w) for w in args.when):
                report = remove(cluster, args, labels)
                with open(args.report, "w") as f:
                    json.dump(report, f)
            time.sleep(0.05)
        rc = proc.returncode
        if report:
            report["first"] = {"rc": rc, "ended_at": time.time()}
            report["actors"] = actors_named(cluster.address, f"{args.group}-{args.rank}")
            with open(args.report, "w") as f:
                json.dump(report, f)
        return rc
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        cluster.shutdown()


def remove(cluster, args, labels: dict) -> dict:
    with open(args.placement) as f:
        node_id = json.load(f)[args.group][args.rank]
    [node] = [n for n in cluster.worker_nodes if n.node_id == node_id] or [None]
    if node is None:
        raise SystemExit(f"node_loss_cluster: {args.group} rank {args.rank} runs on {node_id}, not a removable (non-head) node")
    start = time.time()
    cluster.remove_node(node, allow_graceful=False)
    print(f"node_loss_cluster: removed node {node_id} ({labels.get(node_id)}) hosting {args.group} rank {args.rank}", flush=True)
    return {"node_id": node_id, "labels": labels.get(node_id, {}), "removed_at": start, "remove_s": time.time() - start}


def actors_named(address: str, name: str) -> list[dict]:
    """Every actor called `name` the cluster's GCS knows (dead ones included): node and state."""
    import ray

    try:
        ray.init(address=address, log_to_driver=False)
        return [
            {"node_id": a["Address"]["NodeID"], "state": a["State"]} for a in ray._private.state.actors().values() if a.get("Name") == name
        ]
    except Exception as e:  # only for the report
        return [{"error": repr(e)}]
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())

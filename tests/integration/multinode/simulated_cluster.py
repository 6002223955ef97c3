"""A simulated multi-node Ray cluster around one command.

`ray.cluster_utils.Cluster` starts one raylet and one object store per node, all on this
machine (so the nodes share its filesystem and cores, but objects move between their stores as
between machines). The command runs with RAY_ADDRESS pointing at the head node, and the cluster
is shut down when the command ends, also when this process is terminated.

    python simulated_cluster.py --nodes '[{"num_cpus": 2, "labels": {"role": "rollout"}}, ...]' \\
        --info nodes.json -- python -m qwen25_rl grpo --config ...

The first node is the head. `--info` receives {"address": ..., "nodes": {node id: labels}}
before the command starts. Exits with the command's exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys

# Every node's workers inherit these (the nodes are started from this process).
NODE_ENV = {"DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false"}
OBJECT_STORE_MB = 150


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", required=True, help="JSON list of node settings (num_cpus, labels, ...); the first is the head")
    parser.add_argument("--info", required=True, help="where to write the cluster's address and node labels (JSON)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    import ray
    from ray.cluster_utils import Cluster

    os.environ.update(NODE_ENV)
    # SIGTERM (a test's timeout) ends the command and still shuts the nodes down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    nodes = json.loads(args.nodes)
    common = {"object_store_memory": OBJECT_STORE_MB * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={**common, "include_dashboard": False, **nodes[0]})
    proc = None
    try:
        for node in nodes[1:]:
            cluster.add_node(**common, **node)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        info = {"address": cluster.address, "nodes": {n["NodeID"]: n.get("Labels", {}) for n in ray.nodes() if n["Alive"]}}
        ray.shutdown()
        with open(args.info, "w") as f:
            json.dump(info, f)
        proc = subprocess.Popen(command, env={**os.environ, "RAY_ADDRESS": cluster.address})
        return proc.wait()
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())

"""`qwen25-rl grpo` on a simulated three-node Ray cluster (tests/integration/multinode/
simulated_cluster.py): the worker groups are spread over the nodes by their placement groups,
the run completes, weights reach the rollout worker on another node every step, and the
checkpoint (written by policy ranks on two nodes) and final model land in the run folder.

The simulated nodes share this machine's filesystem; on real machines the run folder's storage
root must be a filesystem all nodes share (README, "On a cluster").

Also, fast, on the session's one-node Ray: a group's `node_labels` select its nodes, and labels
no node carries fail at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from bounds import SYNC_LOGPROB_TOL

from qwen25_rl.paths import REPO_ROOT
from qwen25_rl.runs import read_metrics

HERE = os.path.dirname(__file__)
CONFIG = str(REPO_ROOT / "configs" / "tiny" / "grpo.yaml")
# The head node (where the driver attaches) hosts the rollout worker and the reward pool; two
# more nodes of 2 CPUs each are for the policy: PACK would put both ranks on one of them,
# SPREAD puts them on different nodes.
NODES = [
    {"num_cpus": 2, "labels": {"role": "rollout"}},
    {"num_cpus": 2, "labels": {"role": "train"}},
    {"num_cpus": 2, "labels": {"role": "train"}},
]


def run_on_cluster(command: list[str], info_path, timeout: float) -> subprocess.CompletedProcess:
    args = [sys.executable, os.path.join(HERE, "simulated_cluster.py"), "--nodes", json.dumps(NODES), "--info", str(info_path), "--"]
    proc = subprocess.Popen(
        args + command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the helper stops the command and shuts the nodes down
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(f"timed out after {timeout:.0f} s:\n{out[-2000:]}\n{err[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_grpo_spreads_worker_groups_over_nodes_and_checkpoints(tiny_model_dir, digit_task, tmp_path, grpo_overrides):
    overrides = grpo_overrides(
        tiny_model_dir,
        digit_task,
        tmp_path,
        "multinode",
        **{
            "rollout.engine": "hf",
            "policy.strategy": "deepspeed",
            "policy.zero_stage": 2,
            "policy.num_workers": 2,
            "policy.node_labels": "{role: train}",
            "rollout.node_labels": "{role: rollout}",
            "ray.placement_strategy": "SPREAD",
            "algorithm.total_steps": 3,
            "algorithm.prompts_per_step": 4,
            "rollout.samples_per_prompt": 4,
            "checkpoint.every_n_steps": 2,
        },
    )
    start = time.time()
    proc = run_on_cluster([sys.executable, "-m", "qwen25_rl", "grpo", "--config", CONFIG, *overrides], tmp_path / "nodes.json", 300)
    elapsed = time.time() - start
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    labels = json.loads((tmp_path / "nodes.json").read_text())["nodes"]
    assert len(labels) == 3

    # Where each rank ran, as the actors themselves reported it (ray.get_runtime_context()).
    run = tmp_path / "multinode"
    placement = json.loads((run / "placement.json").read_text())
    policy, rollout = placement["grpo/policy"], placement["grpo/rollout"]
    assert len(policy) == 2 and len(set(policy)) == 2, placement  # SPREAD: one rank per node
    assert all(labels[n]["role"] == "train" for n in policy), (placement, labels)
    assert [labels[n]["role"] for n in rollout] == ["rollout"], (placement, labels)
    assert len({n for ids in placement.values() for n in ids}) == 3
    assert "workers on 3 nodes" in proc.stdout + proc.stderr

    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["policy_version"] for r in rows] == [1, 2, 3]
    # The rollout worker on the head node sampled with exactly the weights the policy ranks on
    # the other nodes held: the object-store sync crossed nodes intact every step.
    assert max(r["logprob_gap/sampler_trainer_abs_max"] for r in rows) < SYNC_LOGPROB_TOL

    # Both policy ranks (on two nodes) wrote their part of the step-2 checkpoint; rank 0 the model.
    ckpt = run / "checkpoints" / "step_2"
    assert (ckpt / "COMPLETE").exists()
    assert (ckpt / "policy" / "rng_rank0.pt").is_file() and (ckpt / "policy" / "rng_rank1.pt").is_file()
    assert (ckpt / "policy" / "model" / "model.safetensors").is_file()
    shards = ckpt / "policy" / "deepspeed" / "state"
    assert (shards / "zero_pp_rank_0_mp_rank_00_optim_states.pt").is_file()  # ZeRO-2: each rank's optimizer shard
    assert (shards / "zero_pp_rank_1_mp_rank_00_optim_states.pt").is_file()
    assert (run / "final" / "model.safetensors").is_file() and (run / "final" / "config.json").is_file()
    print(f"grpo on 3 simulated nodes: {elapsed:.0f} s (cluster start included)")


# -- node labels on the session's one-node Ray (fast) -------------------------------------------


class _Idle:
    def __init__(self):
        pass


def test_a_group_goes_to_the_nodes_carrying_its_labels(local_ray):
    from qwen25_rl.actors.worker_group import WorkerGroup

    node = local_ray.get_runtime_context().get_node_id()
    # Every Ray node carries its id as the label ray.io/node-id.
    group = WorkerGroup(_Idle, 2, name="test/labelled", num_cpus=0.25, distributed=False, node_labels={"ray.io/node-id": node})
    try:
        assert group.node_ids == [node, node]
    finally:
        group.shutdown()


def test_labels_no_node_carries_fail_at_once_naming_them(local_ray):
    from qwen25_rl.actors.worker_group import PlacementError, WorkerGroup

    start = time.time()
    with pytest.raises(PlacementError, match=r"test/nowhere: asks for nodes labelled \{role: rollout\}, but no node"):
        WorkerGroup(_Idle, 1, name="test/nowhere", num_cpus=0.25, distributed=False, node_labels={"role": "rollout"})
    assert time.time() - start < 10

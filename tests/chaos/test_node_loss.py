"""GRPO losing a node of its Ray cluster mid-run (a simulated cluster,
tests/chaos/node_loss_cluster.py): the run recovers on the nodes that are left.

Four simulated nodes: the head (the driver and the reward pool), and `train` (policy) and
`rollout` nodes, with a spare node of the role whose node is lost (same label, free CPUs). The
loss is placed deterministically: the worker's 3rd call of the method (step 3, after checkpoint
`step_2` is complete) hangs through the workers' fault seam, and once it does, the helper SIGKILLs
every process of the node hosting that worker (`Cluster.remove_node(..., allow_graceful=False)`).

The node of a policy rank: the driver sees the rank die (`WorkerDied`, naming worker and node),
the stage's bounded restart loop shuts every group down and builds them again; the policy's new
placement group goes to the spare `train` node (the train nodes have 1 CPU, the bundle's size,
and the GCS cannot release the old bundle on the lost node: "Failed to remove 1 bundle(s) ...
because the max retry count is reached"), and the run resumes from `step_2` and completes, each
step logged once, `workers/restarts` counting the rebuild.

The node of the rollout worker: the driver sees the rollout actor die at once and
`RLCluster.collect` starts its replacement in the same placement-group bundle. The GCS still
counts the lost node alive until it misses its health checks (~15 s with Ray's defaults), so the
bundle, and a first replacement with it, may still be on the lost node; that replacement dies
unstarted when the node is declared dead, Ray moves the bundle to the spare `rollout` node, and
`WorkerGroup.restart` starts the replacement again there (an error in its own constructor would
not be retried). It loads the trainer's weights and regenerates only its slice of step 3: the
policy keeps its state (no rebuild, no checkpoint reload), and the run completes, each step logged
once, `rollout/restarts` counting the replacement."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from bounds import SLACK_S
from processes import assert_run_gone

from qwen25_rl.paths import REPO_ROOT
from qwen25_rl.runs import read_metrics

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

HERE = os.path.dirname(__file__)
CONFIG = str(REPO_ROOT / "configs" / "tiny" / "grpo.yaml")
FAST = {
    "rollout.engine": "hf",
    "policy.strategy": "ddp",
    "algorithm.prompts_per_step": 4,
    "rollout.samples_per_prompt": 4,
    "algorithm.total_steps": 4,
    "checkpoint.every_n_steps": 2,
    "policy.node_labels": "{role: train}",
    "rollout.node_labels": "{role: rollout}",
}
WALL_S = 240  # the helper's hard limit (the cluster's start, the run, the node loss)
# From the node loss to the replaced rollout worker's step done: Ray's node-death detection
# (health checks: 5 missed at 3 s, ~15 s), then the replacement's start, weight reload and its
# slice generated again, on a loaded 2-core machine.
RECOVERY_BOUND_S = 15 + 25 + SLACK_S


_STARTED = [0.0]


@pytest.fixture(autouse=True)
def _test_started():
    _STARTED[0] = time.time()


def assert_nothing_left(state) -> None:
    """No process of the run is left (tests/processes.py: every Ray process of the run carries the
    fault seam's state path; no child of this process started during the test)."""
    assert_run_gone(state, _STARTED[0])


def run_losing_a_node(tmp_path, overrides: list[str], nodes: list[dict], fault: str, group: str) -> tuple[str, dict, dict, float]:
    """The GRPO command on a simulated cluster of `nodes` that loses the node of `group`'s rank 0
    once the fault seam `fault` fired and checkpoint step_2 is complete. Returns the output, the helper's report, the node labels and
    the seconds it all took."""
    run, state = tmp_path / "nodeloss", tmp_path / "fault"
    report = tmp_path / "removed.json"
    helper = [sys.executable, os.path.join(HERE, "node_loss_cluster.py"), "--nodes", json.dumps(nodes)]
    helper += ["--info", str(tmp_path / "nodes.json"), "--when", str(state / "fired-*")]
    helper += ["--when", str(run / "checkpoints" / "step_2" / "COMPLETE"), "--placement", str(run / "placement.json")]
    helper += ["--group", group, "--report", str(report), "--"]
    env = {k: v for k, v in os.environ.items() if k not in ("QWEN25_RL_FAULT_INJECT", "RAY_ADDRESS")}
    env["QWEN25_RL_FAULT_INJECT"] = f"{fault}:{state}"
    start = time.monotonic()
    proc = subprocess.Popen(
        helper + [sys.executable, "-m", "qwen25_rl", "grpo", "--config", CONFIG, *overrides],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        text, _ = proc.communicate(timeout=WALL_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the helper stops the run and shuts the nodes down
        try:
            text, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            text, _ = proc.communicate()
        pytest.fail(f"timed out after {WALL_S} s:\n{text[-6000:]}")
    seconds = time.monotonic() - start
    (tmp_path / "output.txt").write_text(text)
    assert proc.returncode == 0, text[-6000:]  # the run's exit status
    labels = json.loads((tmp_path / "nodes.json").read_text())["nodes"]
    return text, json.loads(report.read_text()), labels, seconds


def check_completed_once(run) -> list[dict]:
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # each step logged once
    assert [r["policy_version"] for r in rows] == [1, 2, 3, 4]
    for r in rows:  # every step: its 4 prompts, each one group, once
        assert r["groups/generated"] == 4 and r["groups/kept"] == 4, r
        assert r["prompts/position"] == 4 * r["step"]
    assert (run / "checkpoints" / "step_4" / "COMPLETE").exists() and (run / "final" / "config.json").is_file()
    return rows


def test_losing_a_policy_ranks_node_restarts_the_workers_on_the_spare_node_and_the_run_completes(
    tiny_model_dir, digit_task, tmp_path, grpo_overrides
):
    nodes = [
        {"num_cpus": 2, "labels": {"role": "head"}},
        # 1 CPU each: the policy's one bundle fills a train node.
        {"num_cpus": 1, "labels": {"role": "train"}},
        {"num_cpus": 1, "labels": {"role": "train"}},
        {"num_cpus": 2, "labels": {"role": "rollout"}},
    ]
    overrides = grpo_overrides(tiny_model_dir, digit_task, tmp_path, "nodeloss", **FAST)
    text, removed, labels, seconds = run_losing_a_node(tmp_path, overrides, nodes, "policy:train:hang:3", "grpo/policy")
    lost = removed["node_id"]
    assert labels[lost]["role"] == "train", removed
    assert removed["first"]["rc"] == 0  # recovered within the run
    assert f"PolicyWorker rank 0 (grpo/policy-0, node {lost[:12]}" in text and "died in train() during training" in text, text[-6000:]
    assert "restarting the workers (1/2) and resuming from" in text and "step_2" in text, text[-6000:]
    [spare] = [n for n, lab in labels.items() if lab.get("role") == "train" and n != lost]
    placement = json.loads((tmp_path / "nodeloss" / "placement.json").read_text())  # the rebuilt workers'
    assert placement["grpo/policy"] == [spare], (placement, labels)
    assert sorted(a["node_id"] for a in removed["actors"]) == sorted([lost, spare]), removed

    rows = check_completed_once(tmp_path / "nodeloss")
    assert [r["workers/restarts"] for r in rows] == [0, 0, 1, 1]
    assert [r["rollout/restarts"] for r in rows] == [0, 0, 0, 0]
    recovery = rows[2]["time"] - removed["removed_at"]  # the loss -> step 3 done on the rebuilt workers
    print(
        f"\npolicy rank's node lost at step 3: workers rebuilt on the spare node, step 3 done {recovery:.1f} s after the loss; "
        f"run ended {removed['first']['ended_at'] - removed['removed_at']:.1f} s after it; whole test {seconds:.1f} s"
    )
    assert_nothing_left(tmp_path / "fault")


def test_losing_the_rollout_workers_node_replaces_it_on_the_spare_node_and_the_run_completes(
    tiny_model_dir, digit_task, tmp_path, grpo_overrides
):
    nodes = [
        {"num_cpus": 2, "labels": {"role": "head"}},
        {"num_cpus": 2, "labels": {"role": "train"}},
        {"num_cpus": 2, "labels": {"role": "rollout"}},
        {"num_cpus": 2, "labels": {"role": "rollout"}},  # the spare
    ]
    overrides = grpo_overrides(tiny_model_dir, digit_task, tmp_path, "nodeloss", **FAST)
    # Step 3's generation hangs: the node goes then.
    text, removed, labels, seconds = run_losing_a_node(tmp_path, overrides, nodes, "rollout:generate:hang:3", "grpo/rollout")
    lost = removed["node_id"]
    assert labels[lost]["role"] == "rollout", removed
    assert removed["first"]["rc"] == 0, text[-6000:]  # recovered within the run

    # The rollout worker was replaced (only it: the policy kept its state), on the spare node.
    assert f"RolloutWorker rank 0 (grpo/rollout-0, node {lost[:12]}" in text and "died during generation at step 3" in text, text[-6000:]
    assert "restarting it (1/3)" in text, text[-6000:]
    [spare] = [n for n, lab in labels.items() if lab.get("role") == "rollout" and n != lost]
    placement = json.loads((tmp_path / "nodeloss" / "placement.json").read_text())  # rewritten after the replacement
    assert placement["grpo/rollout"] == [spare], (placement, labels)
    where = [a["node_id"] for a in removed["actors"]]
    assert where.count(spare) == 1 and set(where) <= {lost, spare}, (removed, labels)

    rows = check_completed_once(tmp_path / "nodeloss")
    assert [r["rollout/restarts"] for r in rows] == [0, 0, 1, 1]
    assert [r["workers/restarts"] for r in rows] == [0, 0, 0, 0]
    recovery = rows[2]["time"] - removed["removed_at"]  # the loss -> step 3 done with the replacement's samples
    assert recovery < RECOVERY_BOUND_S, recovery
    first_died = text.count("died before it ran")
    print(
        f"\nrollout worker's node lost at step 3: replaced on the spare node ({where.count(lost) - 1} replacement(s) lost with "
        f"the node first, {first_died} reported), step 3 done {recovery:.1f} s after the loss; "
        f"run ended {removed['first']['ended_at'] - removed['removed_at']:.1f} s after it; whole test {seconds:.1f} s"
    )
    assert_nothing_left(tmp_path / "fault")

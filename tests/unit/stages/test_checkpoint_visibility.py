"""RLCluster.save / save_model: files the policy ranks wrote on nodes whose filesystem the driver
does not share are missing here; the run stops with the storage requirement instead of
publishing an empty checkpoint."""

from __future__ import annotations

import pytest

from qwen25_rl.errors import UserValueError
from qwen25_rl.stages.grpo_cluster import RLCluster


class FakePolicy:
    """Two ranks on two nodes; `writes` says which files reach the driver's filesystem."""

    num_workers = 2
    node_ids = ["node-a", "node-b"]

    def __init__(self, writes: list[str]):
        self.writes = writes

    def run(self, method, folder, *_, **__):
        from pathlib import Path

        for rel in self.writes:
            (Path(folder) / rel).parent.mkdir(parents=True, exist_ok=True)
            (Path(folder) / rel).write_text("x")


def cluster_with(writes: list[str]) -> RLCluster:
    from qwen25_rl.config.schema import FaultToleranceConfig

    cluster = RLCluster.__new__(RLCluster)  # the checks only need the policy group and deadlines
    cluster.policy = FakePolicy(writes)
    cluster.ft = FaultToleranceConfig()
    return cluster


def test_checkpoint_written_by_every_rank_passes(tmp_path):
    cluster_with(["rng_rank0.pt", "rng_rank1.pt", "model/config.json"]).save(str(tmp_path), "tok")


def test_a_rank_whose_files_the_driver_cannot_see_stops_the_run(tmp_path):
    # rank 1 (node-b) wrote to its own disk
    with pytest.raises(UserValueError, match=r"rng_rank1\.pt .*node-a', 'node-b'.*logging\.storage_path .* every node shares"):
        cluster_with(["rng_rank0.pt", "model/config.json"]).save(str(tmp_path), "tok")


def test_final_model_written_on_another_node_stops_the_run(tmp_path):
    with pytest.raises(UserValueError, match=r"config\.json"):
        cluster_with([]).save_model(str(tmp_path), "tok")
    cluster_with(["config.json"]).save_model(str(tmp_path), "tok")

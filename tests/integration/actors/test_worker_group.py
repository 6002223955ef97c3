"""WorkerGroup: placement, named actors, torch.distributed among ranks, sharded calls, clear
placement errors."""

from __future__ import annotations

import os
import time

import pytest
import ray
import torch
from bounds import SLACK_S

from qwen25_rl.actors.base import DistributedWorker
from qwen25_rl.actors.deadlines import WorkerDied
from qwen25_rl.actors.worker_group import PlacementError, WorkerGroup, reserve_bundles
from qwen25_rl.batch import TensorBatch


class SumWorker(DistributedWorker):
    def __init__(self, offset: int = 0):
        super().__init__()
        self.offset = offset

    def all_reduce_rank(self) -> float:
        import torch.distributed as dist

        t = torch.tensor([float(self.rank + self.offset)])
        dist.all_reduce(t)
        return t.item()

    def shard_ids(self, batch: TensorBatch) -> list[int]:
        return batch["x"].tolist()

    def actor_name(self) -> str:
        return ray.get_runtime_context().get_actor_name()


@pytest.fixture(scope="module")
def ray_cluster(local_ray):
    """The session's local Ray (tests/conftest.py)."""
    return local_ray


def test_ranks_form_one_process_group(ray_cluster):
    group = WorkerGroup(SumWorker, 3, name="test/sum", num_cpus=0.5, init_kwargs={"offset": 1})
    try:
        # (0+1) + (1+1) + (2+1) on every rank
        assert group.run("all_reduce_rank") == [6.0, 6.0, 6.0]
        assert group.run("actor_name") == ["test/sum-0", "test/sum-1", "test/sum-2"]
    finally:
        group.shutdown()


def test_batch_is_sharded_by_rank_in_order(ray_cluster):
    group = WorkerGroup(SumWorker, 2, name="test/shard", num_cpus=0.5, distributed=False)
    try:
        batch = TensorBatch({"x": torch.arange(5)})
        assert group.run_sharded("shard_ids", batch) == [[0, 1, 2], [3, 4]]
    finally:
        group.shutdown()


def test_more_workers_than_cluster_fails_at_once_with_numbers(ray_cluster):
    start = time.time()
    with pytest.raises(PlacementError, match=r"needs \{CPU: 10\} in 10 bundles, but the whole cluster has \{CPU: 4"):
        WorkerGroup(SumWorker, 10, name="test/toomany", num_cpus=1.0)
    assert time.time() - start < SLACK_S  # at once, not after the 60 s placement timeout


def test_busy_cluster_times_out_instead_of_hanging(ray_cluster):
    held = reserve_bundles([{"CPU": 3.0}], strategy="PACK", timeout_s=10, name="test/holder")
    try:
        with pytest.raises(PlacementError, match="could not place 2 bundles .* within 2s"):
            WorkerGroup(SumWorker, 2, name="test/starved", num_cpus=1.0, placement_timeout_s=2)
    finally:
        ray.util.remove_placement_group(held)
    # The failed group released what it had reserved: the cluster is whole again.
    deadline = time.time() + 10
    while ray.available_resources().get("CPU", 0) < 4 and time.time() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 4


def _cpus_back(total: float, timeout_s: float = 10.0) -> float:
    deadline = time.time() + timeout_s
    while ray.available_resources().get("CPU", 0) < total and time.time() < deadline:
        time.sleep(0.1)
    return ray.available_resources().get("CPU", 0)


def _name_free(name: str, timeout_s: float = 10.0) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            ray.get_actor(name)
        except ValueError:
            return True
        time.sleep(0.1)
    return False


def test_shutdown_releases_resources_and_names(ray_cluster):
    total = ray.cluster_resources()["CPU"]
    group = WorkerGroup(SumWorker, 2, name="test/release", num_cpus=1.0, distributed=False)
    assert ray.available_resources().get("CPU", 0) <= total - 2  # the placement group holds 2
    assert ray.get_actor("test/release-0") is not None
    group.shutdown()
    assert _cpus_back(total) == total
    assert _name_free("test/release-0") and _name_free("test/release-1")
    again = WorkerGroup(SumWorker, 2, name="test/release", num_cpus=1.0, distributed=False)
    again.shutdown()
    assert _cpus_back(total) == total


class FailsToStartOnceMarked(DistributedWorker):
    """Starts normally until `marker` exists; from then on its constructor raises."""

    def __init__(self, marker: str):
        super().__init__()
        if os.path.exists(marker):
            raise RuntimeError(f"cannot start: {marker} exists")


def test_restart_replaces_a_dead_rank_under_its_name_and_records_where_it_runs(ray_cluster):
    group = WorkerGroup(SumWorker, 1, name="test/restart", num_cpus=0.5, distributed=False)
    try:
        old_pid = group.pids[0]
        ray.kill(group.workers[0])
        group.restart(0)
        assert group.restarts == 1
        assert group.pids[0] not in (None, old_pid)
        assert group.node_ids[0] == ray.get_runtime_context().get_node_id()
        assert ray.get(group.workers[0].actor_name.remote()) == "test/restart-0"
    finally:
        group.shutdown()


def test_a_replacement_whose_constructor_raises_is_not_retried(ray_cluster, tmp_path):
    marker = tmp_path / "broken"
    group = WorkerGroup(
        FailsToStartOnceMarked, 1, name="test/badinit", num_cpus=0.5, distributed=False, init_kwargs={"marker": str(marker)}
    )
    try:
        marker.touch()
        start = time.monotonic()
        with pytest.raises(WorkerDied, match=r"FailsToStartOnceMarked rank 0 \(test/badinit-0.*died in __init__\(\) during start-up"):
            group.restart(0)
        # At once, not after start_timeout_s (600 s) of retries.
        assert time.monotonic() - start < 10 + SLACK_S
        assert group.restarts == 0
    finally:
        group.shutdown()

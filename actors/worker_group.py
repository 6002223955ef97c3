"""`WorkerGroup`: N Ray actors of one worker class in a placement group, one torch.distributed
group among them, and calls fanned out to every rank (optionally with the batch sharded by
data-parallel rank).

Placement is checked before anything starts: asking for more than the cluster can ever hold
fails at once with the numbers, and a placement that does not become ready within the
timeout (resources held by others) fails with the numbers too, instead of hanging.

Across nodes: `strategy` is Ray's placement strategy for the group's bundles (SPREAD puts its
ranks on different nodes where it can), and `node_labels` restricts every bundle to nodes that
carry those Ray node labels (`ray start --labels='{"role": "rollout"}'`), so a config can put
groups on nodes of their own. Every group records the node each rank runs on (`node_ids`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from qwen25_rl.actors.base import FAULT_ENV
from qwen25_rl.actors.deadlines import ActorInfo, Call, WorkerDied, wait_calls
from qwen25_rl.batch import TensorBatch
from qwen25_rl.errors import UserValueError


class PlacementError(UserValueError):
    """The cluster cannot place a worker group (a configuration to change, hence ValueError:
    the CLI reports it as a message, not a traceback)."""


def _fmt(res: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(res.items()) if k in ("CPU", "GPU", "memory") or v) + "}"


def _labels(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(labels.items())) + "}"


def reserve_bundles(
    bundles: list[dict[str, float]], *, strategy: str, timeout_s: float, name: str, node_labels: dict[str, str] | None = None
) -> PlacementGroup:
    """Create a placement group and wait for it, failing clearly instead of hanging.
    `node_labels`: every bundle goes on a node carrying all these labels."""
    if node_labels:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if not any(all(n.get("Labels", {}).get(k) == v for k, v in node_labels.items()) for n in nodes):
            raise PlacementError(
                f"{name}: asks for nodes labelled {_labels(node_labels)}, but no node of the cluster carries them "
                f"(nodes get labels from `ray start --labels`)"
            )
    need: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            need[k] = need.get(k, 0.0) + v
    total = ray.cluster_resources()
    short = {k: v for k, v in need.items() if v > total.get(k, 0.0) + 1e-9}
    if short:
        raise PlacementError(
            f"{name}: needs {_fmt(need)} in {len(bundles)} bundles, but the whole cluster has {_fmt(total)}; "
            f"lower the worker count or per-worker resources, or add nodes"
        )
    selector = [dict(node_labels) for _ in bundles] if node_labels else None
    pg = placement_group(bundles, strategy=strategy, name=name, bundle_label_selector=selector)
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        available = ray.available_resources()
        remove_placement_group(pg)
        where = f" on nodes labelled {_labels(node_labels)}" if node_labels else ""
        raise PlacementError(
            f"{name}: could not place {len(bundles)} bundles {bundles[0]} ({strategy}){where} within {timeout_s:g}s; "
            f"cluster has {_fmt(total)}, currently free {_fmt(available)} (other actors hold the rest)"
        )
    return pg


def _where(actor) -> tuple[str, int]:
    """Run inside an actor (`__ray_call__`): the id of the node it runs on and its process id."""
    return ray.get_runtime_context().get_node_id(), os.getpid()


@dataclass
class WorkerGroup:
    """Ranks 0..N-1 of one worker class.

    `placement_group`/`bundle_indices` let several groups share bundles (colocation: e.g. a
    policy and a reference worker on the same device, each asking for a fraction of it).
    `node_labels` (only for a group that makes its own placement group): Ray node labels every
    rank's node must carry. After start, `node_ids[rank]` is the node the rank runs on.
    """

    worker_cls: type
    num_workers: int
    name: str
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    strategy: str = "PACK"
    placement_timeout_s: float = 60.0
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)
    distributed: bool = True
    backend: str | None = None
    placement_group: PlacementGroup | None = None
    bundle_indices: list[int] | None = None
    node_labels: dict[str, str] = field(default_factory=dict)
    # How long a new actor may take to be placed and constructed (its __init__; the model loads
    # come later, in calls with their own deadlines).
    start_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError(f"{self.name}: num_workers must be at least 1, got {self.num_workers}")
        self._owns_pg = self.placement_group is None
        if self._owns_pg:
            bundle = {"CPU": self.num_cpus} | ({"GPU": self.num_gpus} if self.num_gpus else {})
            self.placement_group = reserve_bundles(
                [dict(bundle) for _ in range(self.num_workers)],
                strategy=self.strategy,
                timeout_s=self.placement_timeout_s,
                name=self.name,
                node_labels=self.node_labels,
            )
        self._indices = self.bundle_indices or list(range(self.num_workers))
        self._remote_cls = ray.remote(self.worker_cls)
        self.workers = [self._spawn(rank) for rank in range(self.num_workers)]
        self.node_ids: list[str] = ["?"] * self.num_workers  # known once each rank has started
        self.pids: list[int | None] = [None] * self.num_workers
        self.restarts = 0
        try:
            self._wait_started(range(self.num_workers), self.start_timeout_s)
            if self.distributed:
                self._init_distributed()
        except BaseException:
            self.shutdown()
            raise

    def _spawn(self, rank: int):
        env = dict(self.env_vars)
        if os.environ.get(FAULT_ENV):  # the chaos tests' seam reaches workers of any cluster
            env[FAULT_ENV] = os.environ[FAULT_ENV]
        return self._remote_cls.options(
            name=f"{self.name}-{rank}",
            num_cpus=self.num_cpus,
            num_gpus=self.num_gpus,
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.placement_group, placement_group_bundle_index=self._indices[rank]),
            runtime_env={"env_vars": env} if env else None,
        ).remote(**self.init_kwargs)

    def info(self, rank: int) -> ActorInfo:
        """Who rank `rank` is (class, rank, Ray name, node, pid): for error messages."""
        return ActorInfo(
            self.worker_cls.__name__,
            rank,
            f"{self.name}-{rank}",
            self.node_ids[rank],
            self.pids[rank],
        )

    def _wait_started(self, ranks, timeout_s: float) -> None:
        """Wait until `ranks` are constructed (by `timeout_s`: WorkerHung past it, WorkerDied when
        one dies) and record where each runs, asked of the actors themselves (placement.json):
        one call each, answered once the constructor has run."""
        ranks = list(ranks)
        calls = [Call(self.workers[r].__ray_call__.remote(_where), self.info(r), "__init__") for r in ranks]
        for r, (node, pid) in zip(ranks, wait_calls(calls, timeout_s, what="start-up")):
            self.node_ids[r], self.pids[r] = node, pid

    def restart(self, rank: int) -> None:
        """Replace rank `rank` (dead or not) with a new actor in the same bundle of the placement
        group. Only for groups without a torch.distributed group of their own (rollout,
        reference): a new rank cannot join a running collective.

        A replacement that dies before it runs, not by an error of its own (its node died), is
        started again, by `start_timeout_s`: when a node is lost the GCS keeps counting it alive
        until it misses its health checks (~15 s with Ray's defaults), so the bundle, and a first
        replacement with it, may still be on the lost node; once the node is declared dead Ray
        moves the bundle to a live node with room, where the next replacement starts. An error
        in the replacement's own constructor is raised at once (WorkerDied)."""
        if self.distributed and self.num_workers > 1:
            raise RuntimeError(f"{self.name}: a rank of a distributed group cannot be restarted alone; restart the group")
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            self._respawn(rank, deadline)
            try:
                self._wait_started([rank], max(deadline - time.monotonic(), 1.0))
                break
            except WorkerDied as e:
                cause = e.__cause__
                if getattr(cause, "actor_init_failed", False) or time.monotonic() >= deadline:
                    raise
                print(
                    f"qwen25-rl: warning: the replacement of {self.info(rank).describe()} died before it ran ({e}); starting it again",
                    flush=True,
                )
                time.sleep(1.0)
        if self.distributed:
            self._init_distributed()
        self.restarts += 1

    def _respawn(self, rank: int, deadline: float) -> None:
        try:
            ray.kill(self.workers[rank])
        except Exception:  # already gone
            pass
        self.node_ids[rank], self.pids[rank] = "?", None
        # A killed named actor frees its name asynchronously: retry the spawn for a while.
        while True:
            try:
                self.workers[rank] = self._spawn(rank)
                return
            except ValueError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _init_distributed(self) -> None:
        backend = self.backend or ("nccl" if self.num_gpus else "gloo")
        addr, port = ray.get(self.workers[0].node_address.remote())
        ray.get([w.init_distributed.remote(addr, port, rank, self.num_workers, backend) for rank, w in enumerate(self.workers)])

    # ---------------------------------------------------------------------------------------

    def run(self, method: str, *args: Any, timeout_s: float | None = None, what: str = "", **kwargs: Any) -> list[Any]:
        """Call `method(*args, **kwargs)` on every rank; results in rank order. `timeout_s`: the
        deadline (WorkerHung past it, WorkerDied when a rank dies: qwen25_rl.actors.deadlines)."""
        return self.wait(self.run_async(method, *args, **kwargs), method, timeout_s, what=what)

    def wait(self, refs: list[ray.ObjectRef], method: str, timeout_s: float | None, *, what: str = "") -> list[Any]:
        """Results of one call per rank (`refs` in rank order), by the deadline."""
        return wait_calls([Call(r, self.info(rank), method) for rank, r in enumerate(refs)], timeout_s, what=what)

    def run_async(self, method: str, *args: Any, **kwargs: Any) -> list[ray.ObjectRef]:
        return [getattr(w, method).remote(*args, **kwargs) for w in self.workers]

    def run_sharded(self, method: str, batch: TensorBatch, *, timeout_s: float | None = None, what: str = "", **kwargs: Any) -> list[Any]:
        """Call `method(shard, **kwargs)` with rank r getting the r-th contiguous shard."""
        return self.wait(self.run_sharded_async(method, batch, **kwargs), method, timeout_s, what=what)

    def run_sharded_async(self, method: str, batch: TensorBatch, **kwargs: Any) -> list[ray.ObjectRef]:
        shards = batch.chunk(self.num_workers)
        return [getattr(w, method).remote(s, **kwargs) for w, s in zip(self.workers, shards)]

    def run_rank0(self, method: str, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> Any:
        ref = getattr(self.workers[0], method).remote(*args, **kwargs)
        return wait_calls([Call(ref, self.info(0), method)], timeout_s)[0]

    def shutdown(self) -> None:
        """Kill the actors and release the placement group (when this group made it)."""
        for w in getattr(self, "workers", []):
            try:
                ray.kill(w)
            except Exception:  # already dead: nothing to release
                pass
        self.workers = []
        if self._owns_pg and self.placement_group is not None:
            try:
                remove_placement_group(self.placement_group)
            except Exception:
                pass
            self.placement_group = None

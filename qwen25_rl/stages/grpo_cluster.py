"""The workers of an RL run and what the GRPO and DPO controllers ask of them.

`RLCluster` builds the policy, reference (GRPO: only when a KL term needs it; DPO: always) and
rollout worker groups from a stage config (GRPO's or DPO's: they share these sections), wires
the weight-sync transport, and offers the controller a few verbs: generate, score, train,
sync, save, load. Each verb fans out to the right group; the controller never touches an
actor directly.

Several nodes: each group is one placement group with `ray.placement_strategy` (SPREAD: its
ranks on different nodes) and, where the config names them, its own node labels
(`policy.node_labels`, `reference.node_labels`, `rollout.node_labels`); `placement()` says
where every rank runs. Checkpoint files are written by the policy ranks themselves, on their
own nodes, into the run folder under the storage root: with ranks on several machines that
root (`logging.storage_path`) must be a filesystem all of them share (`save` checks that the
driver sees every rank's files).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import ray

from qwen25_rl.actors.deadlines import Call, WorkerDied, wait_calls
from qwen25_rl.actors.policy import DPOSettings, LossSettings, PolicyWorker, ReferenceWorker, TrainSettings
from qwen25_rl.actors.reward_model import RewardModelGroup
from qwen25_rl.actors.rollout import RolloutWorker, SamplingSettings
from qwen25_rl.actors.weight_sync import get_weight_sync
from qwen25_rl.actors.worker_group import WorkerGroup
from qwen25_rl.batch import TensorBatch
from qwen25_rl.errors import UserValueError
from qwen25_rl.stages.grpo_config import GRPOConfig

T = TypeVar("T")


@dataclass
class PendingRollout:
    """Generation in flight on the rollout workers (one-step-off-policy overlaps it with training).
    Slice i (`prompt_slices[i]` of `prompts`) runs on rollout rank `ranks[i]`."""

    refs: list[ray.ObjectRef]
    prompt_slices: list[tuple[int, int]]
    started: float
    ranks: list[int] = field(default_factory=list)
    prompts: list[list[int]] = field(default_factory=list)
    settings: SamplingSettings | None = None
    what: str = "generation"  # for messages: "generation at step 3"
    group: Any = None  # the rollout WorkerGroup


class RolloutRestartsExhausted(WorkerDied):
    """A rollout worker died once more than `fault_tolerance.max_rollout_restarts` allows."""


class RestartBudget:
    """The stages' bounded restart loop (`fault_tolerance.max_worker_restarts`): after a worker
    of the cluster died, `next_checkpoint` says where the rebuilt cluster resumes (the run's
    newest checkpoint that verifies, else where this run started), or raises past the bound.
    The resumed loop re-logs the steps after that checkpoint once (StepLogger truncates the
    metrics rows past it, as on a manual resume)."""

    def __init__(self, stage: str, max_restarts: int):
        self.stage, self.max, self.count = stage, max_restarts, 0
        self.rollout_restarts = 0  # carried over to the rebuilt cluster: one bound per run

    def next_checkpoint(self, died: WorkerDied, run, started_from: Path | None) -> Path | None:
        if isinstance(died, RolloutRestartsExhausted):
            raise died
        if getattr(died.__cause__, "actor_init_failed", False):
            raise died  # its constructor raised: a new one would raise the same
        if self.count >= self.max:
            raise WorkerDied(
                f"{died}; the {self.stage} run's workers were already restarted {self.count} times "
                f"(fault_tolerance.max_worker_restarts: {self.max}); stopping",
                died.actor,
                died.method,
            ) from died
        self.count += 1
        ckpt = run.latest_checkpoint() or started_from
        print(
            f"qwen25-rl: warning: {died}; restarting the workers ({self.count}/{self.max}) and resuming from {ckpt or 'the start'}",
            flush=True,
        )
        return ckpt


def run_with_restarts(
    stage: str,
    cfg,
    run,
    ckpt: Path | None,
    build: Callable[[], RLCluster],
    train: Callable[[RLCluster, Path | None, RestartBudget], T],
) -> T:
    """An RL stage's run with its bounded restart loop: `train(cluster, ckpt, restarts)` on a
    cluster from `build()`, from checkpoint `ckpt` (None: the start). When a worker dies, while
    the cluster is built or later (a policy or reference rank, a rollout worker past its own
    recovery, a reward-model worker), every group is shut down and built again, and `train`
    resumes from the run's newest checkpoint that verifies (`RestartBudget`); past
    `fault_tolerance.max_worker_restarts` the WorkerDied goes to the user. A hang (WorkerHung)
    is not retried: it stops the run with the stuck worker's stack."""
    restarts = RestartBudget(stage, cfg.fault_tolerance.max_worker_restarts)
    while True:
        cluster = None
        try:
            cluster = build()
            cluster.rollout_restarts = restarts.rollout_restarts
            return train(cluster, ckpt, restarts)
        except WorkerDied as e:
            if cluster is not None:
                restarts.rollout_restarts = cluster.rollout_restarts
            ckpt = restarts.next_checkpoint(e, run, ckpt)
        finally:
            if cluster is not None:
                cluster.shutdown()


class RLCluster:
    def __init__(
        self, cfg: GRPOConfig, model_path: str, *, name: str = "grpo", with_reference: bool | None = None, with_rollout: bool = True
    ):
        self.cfg = cfg
        self.model_path = model_path
        # None: a reference only where GRPO's KL term needs one.
        self.with_reference = cfg.algorithm.kl_coef > 0 if with_reference is None else with_reference
        # Offline DPO on a pair file without evaluation generates nothing: no rollout engine.
        self.with_rollout = with_rollout
        self.ft = cfg.fault_tolerance  # restart bounds and the deadline of every remote call
        self.rollout_restarts = 0  # rollout workers replaced in this cluster's life
        self.version = 0  # the policy version the rollout workers hold (last sync)
        self.groups: list[WorkerGroup] = []
        try:
            self._build(name)
        except BaseException:
            self.shutdown()
            raise

    def _build(self, name: str) -> None:
        cfg = self.cfg
        p = cfg.policy
        settings = TrainSettings(
            strategy=p.strategy,
            zero_stage=p.zero_stage,
            micro_batch_size=p.micro_batch_size,
            lr=cfg.optimizer.lr,
            betas=tuple(cfg.optimizer.betas),
            eps=cfg.optimizer.eps,
            weight_decay=cfg.optimizer.weight_decay,
            grad_clip=cfg.optimizer.grad_clip,
            bf16=p.bf16,
            gradient_checkpointing=cfg.model.gradient_checkpointing,
            chunk_size=p.chunk_size,
            seed=cfg.seed,
            merge=merge_settings(cfg.optimizer),
        )
        common = placement_settings(cfg)
        self.policy = self._add(
            WorkerGroup(
                PolicyWorker,
                p.num_workers,
                name=f"{name}/policy",
                num_cpus=p.num_cpus_per_worker,
                num_gpus=p.num_gpus_per_worker,
                init_kwargs={"model_path": self.model_path, "settings": settings, "torch_threads": p.torch_threads},
                env_vars={"DS_ACCELERATOR": "cuda" if p.num_gpus_per_worker else "cpu"},
                node_labels=dict(p.node_labels),
                **common,
            )
        )
        self.reference = None
        if self.with_reference:
            r = cfg.reference
            self.reference = self._add(
                WorkerGroup(
                    ReferenceWorker,
                    r.num_workers,
                    name=f"{name}/reference",
                    num_cpus=r.num_cpus_per_worker,
                    num_gpus=r.num_gpus_per_worker,
                    distributed=False,
                    init_kwargs={"model_path": self.model_path, "torch_threads": r.torch_threads},
                    node_labels=dict(r.node_labels),
                    **common,
                )
            )
        # Learned reward models (GRPO's `reward_models`): a worker group each.
        self.reward_models: dict[str, Any] = {}
        for m in getattr(cfg, "reward_models", []):
            self.reward_models[m.name] = self._add(reward_model_group(m, name, common, self.ft))
        self.rollout = None
        if not self.with_rollout:
            self.num_parameters = self._wait_init()
            return
        self.rollout = self._add(rollout_group(cfg, self.model_path, name, common))
        self.num_parameters = self._wait_init()
        ws = cfg.weight_sync
        self.sync = get_weight_sync(ws.transport, **({"bucket_mb": ws.bucket_mb} if ws.transport == "broadcast" else {}))
        self.sync.setup(self.policy, self.rollout)

    def _wait_init(self) -> int:
        # Models load in parallel on every group.
        calls = [Call(r, self.policy.info(i), "init_model") for i, r in enumerate(self.policy.run_async("init_model"))]
        if self.reference:
            calls += [Call(r, self.reference.info(i), "init_model") for i, r in enumerate(self.reference.run_async("init_model"))]
        return wait_calls(calls, self.ft.save_timeout_s, what="model loading")[0]

    def _add(self, group):
        """Keep a worker group (anything with shutdown()) for `shutdown`."""
        self.groups.append(group)
        return group

    # -- generation ----------------------------------------------------------------------------

    def generate_async(self, prompts: list[list[int]], settings: SamplingSettings, *, what: str = "generation") -> PendingRollout:
        return generate_async(self.rollout, prompts, settings, what=what)

    def collect(self, pending: PendingRollout) -> tuple[TensorBatch, float]:
        """The generation's batch, by `fault_tolerance.generate_timeout_s`. A rollout worker that
        died is replaced (same placement bundle), given the trainer's weights, and generates its
        slice again: slices that finished are kept, so each prompt's samples appear once."""
        return collect(pending, timeout_s=self.ft.generate_timeout_s, recover=self._replace_rollout)

    def _replace_rollout(self, rank: int, died: WorkerDied, what: str) -> None:
        ft = self.ft
        if self.rollout_restarts >= ft.max_rollout_restarts:
            raise RolloutRestartsExhausted(
                f"{died.actor.describe()} died in {died.method}() during {what}, and rollout workers were already "
                f"restarted {self.rollout_restarts} times in this run (fault_tolerance.max_rollout_restarts: "
                f"{ft.max_rollout_restarts}); stopping. Last error: {died}",
                died.actor,
                died.method,
            )
        self.rollout_restarts += 1
        print(
            f"qwen25-rl: warning: {died.actor.describe()} died during {what}; restarting it "
            f"({self.rollout_restarts}/{ft.max_rollout_restarts}) with policy version {self.version}",
            flush=True,
        )
        self.rollout.restart(rank)
        if self.cfg.weight_sync.transport == "broadcast":
            self.sync.setup(self.policy, self.rollout)  # the new rank joins a new broadcast group
        # The trainer's current weights, through the object store whatever the transport (one
        # worker; the version is checked against the trainer's).
        ref = self.policy.run("export_weights_ref", timeout_s=ft.sync_timeout_s, what="weights for a restarted rollout worker")[0][0]
        worker = self.rollout.workers[rank]
        got = wait_calls(
            [Call(worker.update_weights.remote(self.version, ref), self.rollout.info(rank), "update_weights")],
            ft.sync_timeout_s,
            what="weights for a restarted rollout worker",
        )[0]
        have = wait_calls([Call(worker.get_version.remote(), self.rollout.info(rank), "get_version")], ft.sync_timeout_s)[0]
        if got != self.version or have != self.version:
            raise RuntimeError(f"restarted {self.rollout.info(rank).describe()} holds policy version {have}, the trainer {self.version}")

    # -- scoring, training, sync ---------------------------------------------------------------

    def policy_log_probs(self, batch: TensorBatch, temperature: float, with_entropy: bool = False) -> TensorBatch:
        parts = self.policy.run_sharded(
            "log_probs",
            batch,
            temperature=temperature,
            micro_batch_size=self.cfg.policy.micro_batch_size,
            with_entropy=with_entropy,
            timeout_s=self.ft.score_timeout_s,
            what="policy log-probs",
        )
        return TensorBatch.cat(parts)

    def reference_log_probs(self, batch: TensorBatch, temperature: float) -> TensorBatch:
        if self.reference is None:
            raise RuntimeError("no reference workers in this run (GRPO: algorithm.kl_coef is 0)")
        parts = self.reference.run_sharded(
            "log_probs",
            batch,
            temperature=temperature,
            micro_batch_size=self.cfg.reference.micro_batch_size,
            timeout_s=self.ft.score_timeout_s,
            what="reference log-probs",
        )
        return TensorBatch.cat(parts)

    def train(self, batch: TensorBatch, loss: LossSettings, lr: float, seed: int) -> dict[str, float]:
        return self.policy.run_sharded("train", batch, loss=loss, lr=lr, seed=seed, timeout_s=self.ft.train_timeout_s, what="training")[0]

    def reference_pair_log_probs(self, pairs: TensorBatch) -> TensorBatch:
        """Summed reference log-probs of each pair's chosen and rejected response (DPO)."""
        if self.reference is None:
            raise RuntimeError("no reference workers in this run")
        parts = self.reference.run_sharded(
            "pair_log_probs",
            pairs,
            micro_batch_size=self.cfg.reference.micro_batch_size,
            timeout_s=self.ft.score_timeout_s,
            what="reference log-probs",
        )
        return TensorBatch.cat(parts)

    def policy_pair_log_probs(self, pairs: TensorBatch) -> TensorBatch:
        parts = self.policy.run_sharded(
            "pair_log_probs",
            pairs,
            micro_batch_size=self.cfg.policy.micro_batch_size,
            timeout_s=self.ft.score_timeout_s,
            what="policy log-probs",
        )
        return TensorBatch.cat(parts)

    def train_dpo(self, pairs: TensorBatch, settings: DPOSettings, lr: float) -> dict[str, float]:
        return self.policy.run_sharded("train_dpo", pairs, settings=settings, lr=lr, timeout_s=self.ft.train_timeout_s, what="training")[0]

    def reload_reference(self, model_path: str) -> None:
        """Point the reference workers at another checkpoint folder (a DPO round's start)."""
        if self.reference is None:
            raise RuntimeError("no reference workers in this run")
        self.reference.run("reload", model_path, timeout_s=self.ft.save_timeout_s, what="reference reload")

    def sync_weights(self, version: int) -> float:
        if self.rollout is None:
            return 0.0
        seconds = self.sync.sync(self.policy, self.rollout, version, timeout_s=self.ft.sync_timeout_s)
        self.version = version
        return seconds

    def rollout_versions(self) -> list[int]:
        return self.rollout.run("get_version", timeout_s=self.ft.sync_timeout_s)

    def placement(self) -> dict[str, list[str]]:
        """Group name -> the Ray node id of each rank, as the actors report it."""
        out = {}
        for g in self.groups:
            g = getattr(g, "group", g)  # a RewardModelGroup holds its WorkerGroup
            out[g.name] = list(g.node_ids)
        return out

    # -- checkpoints ---------------------------------------------------------------------------

    def save(self, folder: str, tokenizer_path: str) -> None:
        # Every policy rank writes its own files (optimizer shard, RNG state; rank 0 the HF
        # model) on the node it runs on: `folder` must be on storage all nodes share.
        self.policy.run("save", folder, tokenizer_path, timeout_s=self.ft.save_timeout_s, what=f"saving {folder}")
        expected = [Path(folder) / f"rng_rank{r}.pt" for r in range(self.policy.num_workers)] + [Path(folder) / "model" / "config.json"]
        self._check_written(folder, expected)

    def save_model(self, folder: str, tokenizer_path: str) -> None:
        """The policy in Hugging Face format, written by policy rank 0 (after the engine gathers
        the full weights there, under ZeRO-3), checked to be visible here."""
        self.policy.run("save_model", folder, tokenizer_path, timeout_s=self.ft.save_timeout_s, what=f"saving {folder}")
        self._check_written(folder, [Path(folder) / "config.json"])

    def _check_written(self, folder: str, expected: list[Path]) -> None:
        missing = [p for p in expected if not p.exists()]
        if missing:
            raise UserValueError(
                f"{folder}: the policy workers wrote {', '.join(p.name for p in missing)} on their own nodes "
                f"({sorted(set(self.policy.node_ids))}), but this driver does not see them: on a cluster of "
                "several machines, logging.storage_path (or $QWEN25_RL_STORAGE) must be a filesystem every node shares"
            )

    def load(self, folder: str) -> None:
        self.policy.run("load", folder, timeout_s=self.ft.save_timeout_s, what=f"loading {folder}")

    def shutdown(self) -> None:
        for g in reversed(self.groups):
            g.shutdown()
        self.groups = []


def merge_settings(optimizer) -> dict | None:
    """The policy workers' Online Merging Optimizer settings from an optimizer section (DPO's
    has `name: ondare | onties`; GRPO's AdamW section has none)."""
    name = getattr(optimizer, "name", "adamw")
    if name == "adamw":
        return None
    return {
        "method": name,
        "base_model": optimizer.base_model,
        "alpha": optimizer.merge_alpha,
        "keep": optimizer.merge_keep,
        "rescale": optimizer.merge_rescale,
    }


# -- building blocks shared with stages that only sample (qwen25_rl.stages.filter) ------------


def placement_settings(cfg) -> dict[str, Any]:
    """How a stage's worker groups are placed and started (its `ray` and `fault_tolerance`)."""
    return {
        "strategy": cfg.ray.placement_strategy,
        "placement_timeout_s": cfg.ray.placement_timeout_s,
        "start_timeout_s": cfg.fault_tolerance.start_timeout_s,
    }


def rollout_group(cfg, model_path: str, name: str, common: dict[str, Any]) -> WorkerGroup:
    """The rollout (generation) workers of a config's `rollout` section."""
    ro = cfg.rollout
    engine_kwargs: dict[str, Any] = {"max_model_len": ro.max_model_len, "seed": cfg.seed}
    if ro.engine == "vllm":
        engine_kwargs |= {
            "kv_cache_gib": ro.kv_cache_gib,
            "gpu_memory_utilization": ro.gpu_memory_utilization,
            "cpu_threads": ro.torch_threads,
            "enforce_eager": ro.enforce_eager,
        }
    return WorkerGroup(
        RolloutWorker,
        ro.num_workers,
        name=f"{name}/rollout",
        num_cpus=ro.num_cpus_per_worker,
        num_gpus=ro.num_gpus_per_worker,
        distributed=False,
        init_kwargs={"engine": ro.engine, "model_path": model_path, "engine_kwargs": engine_kwargs, "torch_threads": ro.torch_threads},
        node_labels=dict(ro.node_labels),
        **common,
    )


def reward_model_group(m, name: str, common: dict[str, Any], ft) -> RewardModelGroup:
    """The worker group of one `reward_models` entry (`ft`: the stage's fault_tolerance deadlines)."""
    return RewardModelGroup(
        m.path,
        name=f"{name}/rm-{m.name}",
        num_workers=m.num_workers,
        num_cpus=m.num_cpus_per_worker,
        num_gpus=m.num_gpus_per_worker,
        micro_batch_size=m.micro_batch_size,
        max_length=m.max_length,
        template=m.template,
        torch_threads=m.torch_threads,
        load_timeout_s=ft.save_timeout_s,
        score_timeout_s=ft.score_timeout_s,
        **common,
    )


def generate_async(
    rollout: WorkerGroup, prompts: list[list[int]], settings: SamplingSettings, *, what: str = "generation"
) -> PendingRollout:
    """Spread prompts over the rollout workers in contiguous slices."""
    n, k = len(prompts), len(rollout.workers)
    bounds = [(i * n // k, (i + 1) * n // k) for i in range(k)]
    ranks = [r for r, (a, b) in enumerate(bounds) if b > a]
    refs = [rollout.workers[r].generate.remote(prompts[bounds[r][0] : bounds[r][1]], settings) for r in ranks]
    return PendingRollout(refs, [bounds[r] for r in ranks], time.perf_counter(), ranks, prompts, settings, what, rollout)


def collect(pending: PendingRollout, *, timeout_s: float | None = None, recover=None) -> tuple[TensorBatch, float]:
    """The finished generation as one batch (prompt_index relative to the prompt list), and
    the seconds from start to the last worker's answer.

    Each slice is waited for until `timeout_s` after the (re)start of its generation
    (WorkerHung past it). A slice whose worker died: `recover(rank, WorkerDied, what)` replaces
    the worker (or raises), and only that slice is generated again; without `recover` the
    WorkerDied is raised."""
    group = pending.group
    parts: list[TensorBatch | None] = [None] * len(pending.refs)
    refs = list(pending.refs)
    started = [pending.started] * len(refs)
    while True:
        dead: list[tuple[int, WorkerDied]] = []
        for i, ref in enumerate(refs):
            if parts[i] is not None:
                continue
            left = None if timeout_s is None else max(0.0, started[i] + timeout_s - time.perf_counter())
            try:
                call = Call(ref, group.info(pending.ranks[i]), "generate")
                parts[i] = wait_calls([call], left, what=pending.what, limit_s=timeout_s)[0]
            except WorkerDied as e:
                if recover is None:
                    raise
                dead.append((i, e))
        if not dead:
            break
        for i, e in dead:
            recover(pending.ranks[i], e, pending.what)
            a, b = pending.prompt_slices[i]
            refs[i] = group.workers[pending.ranks[i]].generate.remote(pending.prompts[a:b], pending.settings)
            started[i] = time.perf_counter()
    seconds = time.perf_counter() - pending.started
    for part, (a, _) in zip(parts, pending.prompt_slices):
        part.meta["prompt_index"] = [a + i for i in part.meta["prompt_index"]]
    return TensorBatch.cat(parts), seconds

"""Learned reward models as a worker group of their own: `RewardModelWorker` actors score the
decoded (prompt, response) texts of a step with the RM's own tokenizer and chat template
(`qwen25_rl.reward.learned.RewardModelScorer`: the path the Serve endpoint uses too), so an RM
whose tokenizer differs from the policy's scores what it was trained on. `RewardModelGroup`
shards a step's samples over the workers (balanced by length), and joins the scores back to
the samples by sample id, never by position: a worker that returns a sample twice or not at
all is an error naming it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from qwen25_rl.actors.base import DistributedWorker, inject_fault
from qwen25_rl.actors.deadlines import Call, wait_calls
from qwen25_rl.actors.worker_group import WorkerGroup


@dataclass
class RMSample:
    sample_id: str
    prompt: str | list[dict[str, str]]  # the user's text or conversation (the RM applies its own chat template)
    response: str


class RewardModelWorker(DistributedWorker):
    def __init__(
        self,
        model_path: str,
        *,
        micro_batch_size: int = 16,
        max_length: int | None = None,
        template: str = "chat",
        dtype: str = "float32",
        torch_threads: int | None = None,
    ):
        super().__init__(torch_threads=torch_threads)
        self.kwargs = {"micro_batch_size": micro_batch_size, "max_length": max_length, "template": template, "dtype": dtype}
        self.model_path = model_path
        self.scorer = None

    def init_model(self) -> dict[str, Any]:
        """Load the RM; returns its criteria, weights, max_length and saved score statistics."""
        from dataclasses import asdict

        from qwen25_rl.reward.learned import RewardModelScorer

        device = "cuda" if torch.cuda.is_available() else None
        self.scorer = RewardModelScorer(self.model_path, device=device, **self.kwargs)
        return asdict(self.scorer.info) | {"max_length": self.scorer.max_length}

    def score(self, samples: list[RMSample]) -> dict[str, Any]:
        """Scores of `samples`: {"ids", "scores" [n, C], "combined" [n], "truncated", "tokens", "seconds"}."""
        inject_fault("reward_model", "score")  # a no-op unless a test set its env var
        start = time.perf_counter()
        out = self.scorer.score([s.prompt for s in samples], [s.response for s in samples])
        return {
            "ids": [s.sample_id for s in samples],
            "scores": out.scores,
            "combined": out.combined,
            "truncated": out.truncated,
            "tokens": out.tokens,
            "seconds": time.perf_counter() - start,
        }


@dataclass
class RMScores:
    criteria: list[str]
    by_id: dict[str, tuple[list[float], float]]  # sample id -> (criterion scores, combined)
    truncated: int
    tokens: int
    seconds: float  # the slowest worker's


class RewardModelGroup:
    """N `RewardModelWorker`s of one RM folder in their own placement group."""

    def __init__(
        self,
        model_path: str,
        *,
        name: str,
        num_workers: int = 1,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        strategy: str = "PACK",
        placement_timeout_s: float = 60.0,
        start_timeout_s: float = 600.0,
        load_timeout_s: float | None = None,
        score_timeout_s: float | None = None,
        **worker_kwargs: Any,
    ):
        # Deadlines of the remote calls (fault_tolerance: WorkerHung / WorkerDied past them).
        self.score_timeout_s = score_timeout_s
        self.group = WorkerGroup(
            RewardModelWorker,
            num_workers,
            name=name,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            strategy=strategy,
            placement_timeout_s=placement_timeout_s,
            start_timeout_s=start_timeout_s,
            distributed=False,
            init_kwargs={"model_path": model_path, **worker_kwargs},
        )
        try:
            self.info = self.group.run("init_model", timeout_s=load_timeout_s, what="reward model loading")[0]
        except BaseException:
            self.group.shutdown()
            raise
        self.criteria: list[str] = list(self.info["criteria"])

    def score(self, samples: list[RMSample]) -> RMScores:
        n = self.group.num_workers
        # Longest first onto the least-loaded worker (by characters): even shards of work.
        shards: list[list[RMSample]] = [[] for _ in range(n)]
        load = [0] * n
        size = {s.sample_id: len(str(s.prompt)) + len(s.response) for s in samples}
        for s in sorted(samples, key=lambda s: -size[s.sample_id]):
            w = load.index(min(load))
            shards[w].append(s)
            load[w] += size[s.sample_id]
        calls = [
            Call(w.score.remote(shard), self.group.info(rank), "score")
            for rank, (w, shard) in enumerate(zip(self.group.workers, shards))
            if shard
        ]
        results = wait_calls(calls, self.score_timeout_s, what=f"reward model {self.group.name} scoring")
        by_id: dict[str, tuple[list[float], float]] = {}
        for r in results:
            for i, sid in enumerate(r["ids"]):
                if sid in by_id:
                    raise RuntimeError(f"reward model {self.group.name}: sample {sid!r} was scored twice")
                by_id[sid] = (r["scores"][i].tolist(), float(r["combined"][i]))
        missing = [s.sample_id for s in samples if s.sample_id not in by_id]
        if missing:
            raise RuntimeError(f"reward model {self.group.name}: no score for {len(missing)} samples, e.g. {missing[:3]}")
        return RMScores(
            self.criteria,
            by_id,
            truncated=sum(r["truncated"] for r in results),
            tokens=sum(r["tokens"] for r in results),
            seconds=max((r["seconds"] for r in results), default=0.0),
        )

    def shutdown(self) -> None:
        self.group.shutdown()

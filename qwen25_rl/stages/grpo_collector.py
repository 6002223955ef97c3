"""Collecting one step's training groups: prompts -> rollouts -> rewards -> (DAPO dynamic
sampling) -> a batch of whole groups with rewards.

Sampling seeds are a function of (run seed, step, round), and prompts come from a resumable
`PromptSampler`, so a resumed run generates exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from qwen25_rl.actors.rollout import SamplingSettings
from qwen25_rl.algorithms.pass_at_k import pass_at_k
from qwen25_rl.batch import TensorBatch
from qwen25_rl.data.prompts import PromptRecord, PromptSampler
from qwen25_rl.reward.pool import RewardPool
from qwen25_rl.stages.grpo_cluster import PendingRollout, RLCluster
from qwen25_rl.stages.grpo_config import GRPOConfig


@dataclass
class PendingStep:
    step: int
    sampler_position: int  # where the prompt order stood before this step took its prompts
    prompts: list[PromptRecord]
    rollout: PendingRollout


@dataclass
class StepRollout:
    batch: TensorBatch  # kept samples: tensors + meta (group_id, data_source, ...) + "rewards"
    metrics: dict[str, float] = field(default_factory=dict)


def sampling_seed(run_seed: int, step: int, round_: int) -> int:
    return (run_seed * 1_000_003 + step * 101 + round_) % (2**31 - 1)


class GroupCollector:
    def __init__(self, cluster: RLCluster, reward_pool: RewardPool, records: list[PromptRecord], sampler: PromptSampler, cfg: GRPOConfig):
        self.cluster, self.pool, self.records, self.sampler, self.cfg = cluster, reward_pool, records, sampler, cfg
        labels = [f.label for f in cfg.reward.functions]
        self.accuracy_label = cfg.algorithm.accuracy_reward or labels[0]

    def settings(
        self, step: int, round_: int, *, n: int | None = None, temperature: float | None = None, max_new_tokens: int | None = None
    ) -> SamplingSettings:
        ro = self.cfg.rollout
        return SamplingSettings(
            n=n or ro.samples_per_prompt,
            temperature=ro.temperature if temperature is None else temperature,
            top_p=ro.top_p,
            top_k=ro.top_k,
            max_new_tokens=max_new_tokens or ro.max_new_tokens,
            seed=sampling_seed(self.cfg.seed, step, round_),
        )

    def start(self, step: int, round_: int = 0) -> PendingStep:
        position = self.sampler.position
        prompts = [self.records[i] for i in self.sampler.take(self.cfg.algorithm.prompts_per_step)]
        pending = self.cluster.generate_async(
            [p.prompt_ids for p in prompts], self.settings(step, round_), what=f"generation at step {step + 1}"
        )
        return PendingStep(step, position, prompts, pending)

    def finish(self, pending: PendingStep) -> StepRollout:
        """Wait for the generation, score it, refill dropped groups (dynamic sampling)."""
        algo = self.cfg.algorithm
        want = algo.prompts_per_step
        kept: list[TensorBatch] = []
        n_groups = 0
        counts: dict[str, float] = defaultdict(float)
        round_ = 0
        while True:
            batch, gen_s = self.cluster.collect(pending.rollout)
            counts["time/generate_s"] += gen_s
            t = time.perf_counter()
            batch, reward_metrics = self.score(batch, pending.prompts, f"s{pending.step}r{round_}")
            counts["time/reward_s"] += time.perf_counter() - t
            for k, v in reward_metrics.items():
                counts[k] += v
            groups = _split_groups(batch)
            counts["groups/generated"] += len({g for g in batch.meta["group_id"]}) if len(batch) else 0
            for g in groups:
                if algo.dynamic_sampling.enabled and len(g) > 1 and float(g["rewards"].std()) == 0.0:
                    counts["groups/all_equal_dropped"] += 1
                    continue
                if n_groups < want:
                    kept.append(g)
                    n_groups += 1
                else:
                    counts["groups/surplus"] += 1
            round_ += 1
            if not algo.dynamic_sampling.enabled or n_groups >= want or round_ >= algo.dynamic_sampling.max_rounds:
                break
            # Refill: as many new prompts as groups are missing, with the weights we have now.
            need = want - n_groups
            prompts = [self.records[i] for i in self.sampler.take(need)]
            pending = PendingStep(
                pending.step,
                pending.sampler_position,
                prompts,
                self.cluster.generate_async(
                    [p.prompt_ids for p in prompts],
                    self.settings(pending.step, round_),
                    what=f"generation at step {pending.step + 1} (refill round {round_})",
                ),
            )
        counts["groups/kept"] = n_groups
        counts["groups/short"] = max(0, want - n_groups)
        counts["dynamic_sampling/rounds"] = round_
        counts["rollout/restarts"] = getattr(self.cluster, "rollout_restarts", 0)  # in this run so far
        out = TensorBatch.cat(kept) if kept else TensorBatch()
        return StepRollout(out, dict(counts) | self.batch_metrics(out))

    def score(
        self, batch: TensorBatch, prompts: list[PromptRecord], tag: str, *, with_reward_models: bool = True
    ) -> tuple[TensorBatch, dict[str, float]]:
        """Rewards for every sample; samples the failure policy dropped are removed (whole groups).

        The rule rewards come from the reward pool; each learned reward model (`reward_models`,
        unless `with_reward_models` is false) scores the samples on its own workers, joined by
        sample id, and adds one component per criterion. Components become the reward by
        `algorithm.reward_combination` (qwen25_rl.algorithms.reward_combination)."""
        from qwen25_rl.reward.types import RewardSample

        samples = []
        for i in range(len(batch)):
            rec = prompts[batch.meta["prompt_index"][i]]
            samples.append(
                RewardSample(
                    response=batch.meta["response_text"][i],
                    prompt=rec.prompt_text,
                    answer=rec.answer,
                    data_source=rec.data_source,
                    group_id=f"{tag}p{batch.meta['prompt_index'][i]}",
                    sample_id=f"{tag}i{i}",
                    response_length=int(batch["response_mask"][i].sum()),
                    extra=rec.extra,
                )
            )
        models = self.cluster.reward_models if with_reward_models else {}
        scored = score_samples(
            self.pool,
            models,
            self.cfg.reward.functions,
            getattr(self.cfg, "reward_models", []),
            # DPO's sampling rounds use this collector too; their config has no reward combination.
            getattr(self.cfg.algorithm, "reward_combination", "sum"),
            samples,
            [
                prompts[batch.meta["prompt_index"][i]].messages or prompts[batch.meta["prompt_index"][i]].prompt_text
                for i in range(len(batch))
            ],
        )
        batch.meta["group_id"] = [s.group_id for s in samples]
        batch.meta["data_source"] = [s.data_source for s in samples]
        batch.meta["reward_breakdown"] = [r.breakdown for r in scored.results]
        batch = batch.with_tensors(rewards=scored.rewards)
        return batch.select(scored.keep), scored.metrics

    def batch_metrics(self, batch: TensorBatch) -> dict[str, float]:
        if len(batch) == 0:
            return {}
        rewards = batch["rewards"]
        lengths = batch["response_mask"].sum(1).float()
        m = {
            "reward/mean": float(rewards.mean()),
            "reward/std": float(rewards.std()) if len(rewards) > 1 else 0.0,
            "response_length/mean": float(lengths.mean()),
            "response_length/max": float(lengths.max()),
            "response_length/clipped_frac": float(np.mean([r == "length" for r in batch.meta["finish_reason"]])),
            "tokens/generated": float(lengths.sum()),
        }
        by_fn: dict[str, list[float]] = defaultdict(list)
        for b in batch.meta["reward_breakdown"]:
            for k, v in b.items():
                if v is not None:
                    by_fn[k].append(float(v))
        for k, vals in by_fn.items():
            m[f"reward/{k}/mean"] = float(np.mean(vals))
        acc = by_fn.get(self.accuracy_label)
        if acc:
            m["accuracy"] = float(np.mean([v >= 1.0 - 1e-9 for v in acc]))
        return m


@dataclass
class ScoredSamples:
    rewards: torch.Tensor  # [N] float32, NaN where a sample got no reward
    results: list  # RewardResult per sample; breakdowns include every RM criterion
    keep: list[int]  # samples with a reward, not dropped by the failure policy
    metrics: dict[str, float]


def score_samples(
    pool: RewardPool, reward_models: dict, functions, rm_configs, combination: str, samples: list, prompts: list
) -> ScoredSamples:
    """Rewards of `samples` (RewardSample): the rule rewards from the reward pool; each learned
    reward model in `reward_models` (name -> RewardModelGroup, configured by `rm_configs`)
    scores the kept samples on its own workers, joined by sample id, adding one component per
    criterion (`<name>/<criterion>`) and its weighted total (`<name>`) to the breakdown. The
    components become one reward by `combination` (qwen25_rl.algorithms.reward_combination):
    rule rewards by their weights, each criterion by RM weight x criterion weight. `prompts`:
    each sample's prompt as the user gave it (text or chat), what an RM renders itself."""
    results = pool.score(samples)
    keep = [i for i, r in enumerate(results) if not r.dropped and r.reward is not None]
    metrics = {
        k: float(v)
        for k, v in pool.last_stats.as_metrics().items()
        if k.endswith(("error", "timeout", "dropped", "groups_dropped", "_failures", "restarts"))
    }
    rewards = torch.tensor([r.reward if r.reward is not None else float("nan") for r in results], dtype=torch.float32)
    if not keep or (not reward_models and combination == "sum"):
        return ScoredSamples(rewards, results, keep, metrics)
    from qwen25_rl.actors.reward_model import RMSample
    from qwen25_rl.algorithms import combine_rewards

    components = [(f.label, f.weight) for f in functions]
    rm_samples = [RMSample(samples[i].sample_id, prompts[i], samples[i].response) for i in keep]
    for m in rm_configs if reward_models else []:
        group = reward_models[m.name]
        out = group.score(rm_samples)
        weights = {c: float((m.criteria_weights or group.info["weights"]).get(c, 0.0)) for c in group.criteria}
        for i in keep:
            scores, _ = out.by_id[samples[i].sample_id]
            breakdown = results[i].breakdown
            for c, v in zip(out.criteria, scores):
                breakdown[f"{m.name}/{c}"] = v
            breakdown[m.name] = float(sum(weights[c] * v for c, v in zip(out.criteria, scores)))
        components += [(f"{m.name}/{c}", m.weight * w) for c, w in weights.items()]
        metrics[f"reward_model/{m.name}/truncated"] = float(out.truncated)
        metrics[f"time/reward_model/{m.name}_s"] = out.seconds
    values = torch.tensor([[_value(results[i].breakdown.get(k)) for k, _ in components] for i in keep], dtype=torch.float32).reshape(
        len(keep), len(components)
    )
    weights_t = torch.tensor([w for _, w in components], dtype=torch.float32)
    rewards[keep] = combine_rewards(values, weights_t, [samples[i].group_id for i in keep], combination).float()
    return ScoredSamples(rewards, results, keep, metrics)


def _value(v) -> float:
    return float("nan") if v is None else float(v)


def _split_groups(batch: TensorBatch) -> list[TensorBatch]:
    if len(batch) == 0:
        return []
    order: dict[Any, list[int]] = {}
    for i, g in enumerate(batch.meta["group_id"]):
        order.setdefault(g, []).append(i)
    return [batch.select(idx) for idx in order.values()]


def evaluate(
    cluster: RLCluster, pool: RewardPool, records: list[PromptRecord], cfg: GRPOConfig, step: int, accuracy_label: str
) -> dict[str, float]:
    """Held-out accuracy and pass@k with the current rollout weights."""
    ev = cfg.eval
    records = records[: ev.max_prompts] if ev.max_prompts else records
    collector = GroupCollector(cluster, pool, records, PromptSampler(len(records), 0, shuffle=False), cfg)
    settings = collector.settings(step, 10_000, n=ev.samples_per_prompt, temperature=ev.temperature, max_new_tokens=ev.max_new_tokens)
    if ev.temperature == 0:
        settings.temperature, settings.n = 0.0, 1
    t = time.perf_counter()
    batch, _ = cluster.collect(cluster.generate_async([r.prompt_ids for r in records], settings, what=f"evaluation at step {step}"))
    scored, _ = collector.score(batch, records, f"eval{step}", with_reward_models=False)  # accuracy needs the rule reward only
    correct: dict[int, list[bool]] = defaultdict(list)
    for idx, b in zip(scored.meta["prompt_index"], scored.meta["reward_breakdown"]):
        v = b.get(accuracy_label)
        correct[idx].append(v is not None and v >= 1.0 - 1e-9)
    out = {
        "eval/accuracy": float(np.mean([c for cs in correct.values() for c in cs])) if correct else float("nan"),
        "eval/prompts": float(len(records)),
        "eval/scored_prompts": float(len(correct)),
        "eval/seconds": time.perf_counter() - t,
    }
    for k in ev.pass_k:
        # A prompt with fewer than k scored samples (greedy decoding samples one; the reward
        # failure policy may drop some) has no unbiased pass@k: it is left out of the mean.
        values = [pass_at_k(len(cs), sum(cs), k) for cs in correct.values() if len(cs) >= k]
        out[f"eval/pass@{k}"] = float(np.mean(values)) if values else float("nan")
    return out

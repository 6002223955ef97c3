"""The pieces of a DPO round: rejection sampling into pairs, and the reference log-probs stored
with them.

Rejection sampling (Qwen2.5's offline RL): the rollout workers draw K responses per prompt,
the reward pool scores them (verifier, sandboxed tests, plug-ins, learned RMs), a registered
pairing rule turns each prompt's scored group into (chosen, rejected) pairs, and ties,
all-correct and all-wrong groups are dropped and counted.

Reference log-probs: computed once per pair by the reference workers, or, where the pairs
were sampled from weights equal to the reference at temperature 1 with neither top-p nor top-k,
summed from the sampler's own log-probs after a per-token check against the reference workers
on a few pairs (the same consistency check GRPO makes after every weight sync).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from qwen25_rl.actors.policy import stack_pair_rows
from qwen25_rl.algorithms.pairing import Candidate, form_pairs
from qwen25_rl.batch import TensorBatch
from qwen25_rl.data.pairs import PairRecord, pair_batch
from qwen25_rl.data.prompts import PromptRecord, PromptSampler
from qwen25_rl.stages.dpo_config import DPOConfig
from qwen25_rl.stages.grpo_cluster import RLCluster
from qwen25_rl.stages.grpo_collector import GroupCollector

# Pairs per reference call when scoring a whole round (bounded memory on the driver and workers).
REFERENCE_CHUNK = 512


@dataclass
class SampledRound:
    pairs: list[PairRecord]
    # Per pair index: the sampler's per-token log-probs of (chosen, rejected), for the
    # sampler-as-reference check; never written to the pair file.
    sampler_token_logps: dict[int, tuple[list[float], list[float]]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def sample_pairs(
    cluster: RLCluster,
    collector: GroupCollector,
    records: list[PromptRecord],
    sampler: PromptSampler,
    cfg: DPOConfig,
    round_: int,
) -> SampledRound:
    """One round of rejection sampling: `prompts_per_round` prompts x K samples -> pairs."""
    a = cfg.algorithm
    prompts = [records[i] for i in sampler.take(a.prompts_per_round)]
    metrics: dict[str, float] = {}
    pending = cluster.generate_async([p.prompt_ids for p in prompts], collector.settings(round_, 0))
    batch, metrics["time/sample_s"] = cluster.collect(pending)
    t = time.perf_counter()
    scored, reward_metrics = collector.score(batch, prompts, f"round{round_}")
    metrics["time/reward_s"] = time.perf_counter() - t
    metrics |= {f"round/{k}": v for k, v in reward_metrics.items()}
    for k, v in collector.batch_metrics(scored).items():
        metrics["round/sampling_accuracy" if k == "accuracy" else f"round/{k}"] = v

    t = time.perf_counter()
    label = collector.accuracy_label
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(scored.meta["group_id"]):
        members[g].append(i)
    needs_verdict = a.pairing.rule == "correct_vs_incorrect"
    groups = []
    unjudged = 0
    for idx in members.values():
        group = []
        for i in idx:
            verdict = scored.meta["reward_breakdown"][i].get(label)
            if verdict is None and needs_verdict:
                unjudged += 1  # the accuracy reward failed on this sample: neither right nor wrong
                continue
            group.append(
                Candidate(
                    index=i,
                    score=float(scored["rewards"][i]),
                    correct=None if verdict is None else verdict >= 1.0 - 1e-9,
                    length=int(scored["response_mask"][i].sum()),
                )
            )
        groups.append(group)
    p = a.pairing
    outcome = form_pairs(
        groups,
        p.rule,
        pairs_per_group=p.pairs_per_prompt,
        min_margin=p.min_margin,
        prefer_shorter=p.prefer_shorter,
        max_length_ratio=p.max_length_ratio,
        seed=cfg.seed * 1_000_003 + round_,
    )
    out = SampledRound([], {}, metrics)
    identical = 0
    for c, r in outcome.pairs:
        prompt = prompts[scored.meta["prompt_index"][c]]
        c_ids, c_lp = _response(scored, c)
        r_ids, r_lp = _response(scored, r)
        if c_ids == r_ids:  # one response scored twice differently (a noisy reward): no preference
            identical += 1
            continue
        index = len(out.pairs)
        out.pairs.append(
            PairRecord(
                index=index,
                location=f"round {round_}, prompt {prompt.index}",
                prompt_ids=list(prompt.prompt_ids),
                chosen_ids=c_ids,
                rejected_ids=r_ids,
                prompt_text=prompt.prompt_text,
                chosen_text=scored.meta["response_text"][c],
                rejected_text=scored.meta["response_text"][r],
                margin=float(scored["rewards"][c] - scored["rewards"][r]),
                extra={
                    "round": round_,
                    "prompt_index": prompt.index,
                    "data_source": prompt.data_source,
                    "chosen_score": float(scored["rewards"][c]),
                    "rejected_score": float(scored["rewards"][r]),
                },
            )
        )
        out.sampler_token_logps[index] = (c_lp, r_lp)
    metrics["time/pairing_s"] = time.perf_counter() - t
    metrics["round/prompts"] = float(len(prompts))
    metrics["round/groups"] = float(outcome.groups)
    metrics["round/groups_paired"] = float(outcome.groups_paired)
    metrics["round/pairs"] = float(len(out.pairs))
    for cause, n in outcome.dropped.items():
        metrics[f"round/dropped/{cause}"] = float(n)
    metrics["round/dropped/identical"] = float(identical)
    metrics["round/dropped/unjudged_samples"] = float(unjudged)
    return out


def _response(batch: TensorBatch, i: int) -> tuple[list[int], list[float]]:
    n = int(batch["response_mask"][i].sum())
    ids = batch["response_ids"][i, :n].tolist()
    logps = batch["sampler_logprobs"][i, :n].tolist() if "sampler_logprobs" in batch.tensors else []
    return ids, logps


def sampler_matches_reference(cfg: DPOConfig) -> bool:
    """Whether sampler log-probs are log-probs of the reference's own distribution: temperature
    1 and no top-p / top-k truncation (the weights are checked separately)."""
    ro = cfg.rollout
    return ro.temperature == 1.0 and ro.top_p == 1.0 and ro.top_k in (-1, 0)


def add_reference_log_probs(
    cluster: RLCluster, pairs: list[PairRecord], pad_id: int, cfg: DPOConfig, sampled: SampledRound | None = None
) -> dict[str, float]:
    """Fill `ref_chosen_logp` / `ref_rejected_logp` of every pair (in place). `sampled` given:
    the pairs were sampled from the reference's weights; use the sampler's log-probs if the
    per-token check on the first `sampler_check_pairs` pairs passes."""
    a = cfg.algorithm
    metrics: dict[str, float] = {}
    t = time.perf_counter()
    if sampled is not None and a.reference_from_sampler and sampler_matches_reference(cfg) and sampled.sampler_token_logps:
        check = pairs[: a.sampler_check_pairs]
        rows = stack_pair_rows(pair_batch(check, pad_id))
        ref = cluster.reference_log_probs(rows, 1.0)["log_probs"]
        sampler = torch.zeros_like(ref)
        for j, rec in enumerate(check):
            c, r = sampled.sampler_token_logps[rec.index]
            sampler[j, : len(c)] = torch.tensor(c)
            sampler[len(check) + j, : len(r)] = torch.tensor(r)
        mask = rows["response_mask"].bool()
        gap = float((ref - sampler).abs()[mask].max()) if bool(mask.any()) else 0.0
        metrics["reference/sampler_gap_abs_max"] = gap
        if gap <= a.sampler_tolerance:
            for rec in pairs:
                c, r = sampled.sampler_token_logps[rec.index]
                rec.ref_chosen_logp, rec.ref_rejected_logp = float(sum(c)), float(sum(r))
            metrics["reference/from_sampler"] = 1.0
            metrics["time/reference_s"] = time.perf_counter() - t
            return metrics
    metrics["reference/from_sampler"] = 0.0
    for start in range(0, len(pairs), REFERENCE_CHUNK):
        chunk = pairs[start : start + REFERENCE_CHUNK]
        out = cluster.reference_pair_log_probs(pair_batch(chunk, pad_id))
        for rec, c, r in zip(chunk, out["chosen_logps"].tolist(), out["rejected_logps"].tolist()):
            rec.ref_chosen_logp, rec.ref_rejected_logp = c, r
    metrics["time/reference_s"] = time.perf_counter() - t
    return metrics


def step_order(num_pairs: int, epochs: int, seed: int, round_: int) -> list[int]:
    """The order in which a round's pairs are trained: `epochs` seeded permutations back to back."""
    order: list[int] = []
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(seed * 1_000_003 + round_ * 1009 + epoch)
        order += torch.randperm(num_pairs, generator=g).tolist()
    return order

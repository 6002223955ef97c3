"""`qwen25-rl filter`: best-of-n filtering, how Qwen2.5's synthetic data was cleaned.

The recipe:  prompts -> rollout workers sample K responses each (or the responses a file gives)
-> reward pool (rule rewards) and reward-model workers score them -> per prompt, the best
`per_prompt` (or all at or above a threshold) -> a chat file `{"messages": [..., assistant]}`
that `qwen25-rl sft` trains on, with each kept response's reward and components beside it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen25_rl.checkpointing import atomic_write, check_published
from qwen25_rl.config.loader import load_config
from qwen25_rl.data.prompts import DatasetError, _chat, load_prompts, read_rows
from qwen25_rl.ray_utils import init_ray
from qwen25_rl.runs import RunDir, stage_run
from qwen25_rl.stages.filter_config import FilterConfig
from qwen25_rl.stages.grpo_cluster import collect, generate_async, placement_settings, reward_model_group, rollout_group
from qwen25_rl.stages.grpo_collector import score_samples


@dataclass
class Prompt:
    messages: list[dict[str, str]]  # the conversation as given, ending with the user's turn
    prompt_text: str  # what the rule rewards see as the prompt
    answer: Any = None
    data_source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    prompt_ids: list[int] = field(default_factory=list)  # sampling only
    responses: list[str] = field(default_factory=list)  # given responses only


def main(config_path: str, overrides: list[str] | None = None) -> Path:
    cfg = load_config(config_path, overrides, schema=FilterConfig)
    with stage_run(cfg, cfg.logging.output_dir, cfg.logging.run_name, stage="filter") as run:
        return run_filter(cfg, run)


def run_filter(cfg: FilterConfig, run: RunDir) -> Path:
    if cfg.sampling:
        check_published(Path(cfg.model.path), "model.path")  # a stage's final/ verifies before it samples
    prompts = sampled_prompts(cfg) if cfg.sampling else given_responses(cfg)
    init_ray(cfg.ray, third_party_logs=cfg.logging.third_party_logs)
    from qwen25_rl.reward.pool import RewardPool

    common = placement_settings(cfg)
    groups: list[Any] = []
    pool = RewardPool(cfg.reward, name_prefix="filter/reward")
    try:
        rms = {m.name: _keep(groups, reward_model_group(m, "filter", common, cfg.fault_tolerance)) for m in cfg.reward_models}
        rollout = _keep(groups, rollout_group(cfg, str(cfg.model.path), "filter", common)) if cfg.sampling else None
        run.mark_started()
        return _select(cfg, run, prompts, pool, rms, rollout)
    finally:
        for g in reversed(groups):
            g.shutdown()
        pool.shutdown()


def _eligible(breakdown: dict[str, float | None], minimums: dict[str, float]) -> bool:
    return all(breakdown.get(k) is not None and breakdown[k] >= v for k, v in minimums.items())


def _keep(groups: list, group):
    groups.append(group)
    return group


def sampled_prompts(cfg: FilterConfig) -> list[Prompt]:
    from qwen25_rl.models import load_tokenizer

    d = cfg.data
    tokenizer = load_tokenizer(cfg.tokenizer.path or str(cfg.model.path))
    records, _ = load_prompts(
        d.train_files,
        tokenizer,
        prompt_key=d.prompt_key,
        messages_key=d.messages_key,
        answer_key=d.answer_key,
        apply_chat_template=d.apply_chat_template,
        max_prompt_length=d.max_prompt_length,
        on_long_prompt=d.on_long_prompt,
    )
    return [Prompt(r.messages, r.prompt_text, r.answer, r.data_source, r.extra, prompt_ids=r.prompt_ids) for r in records]


def given_responses(cfg: FilterConfig) -> list[Prompt]:
    """Rows with a prompt (text or chat) and a list of responses; bad rows named by file:line."""
    d = cfg.data
    out = []
    for path in d.responses_files:
        for location, row in read_rows(path):
            if row.get(d.messages_key) is not None:
                messages = _chat(location, row[d.messages_key], d.messages_key)
            elif isinstance(row.get(d.prompt_key), str):
                messages = [{"role": "user", "content": row[d.prompt_key]}]
            else:
                raise DatasetError(
                    f"{location}: row has neither {d.prompt_key!r} (text) nor {d.messages_key!r} (chat); keys: {sorted(row)}"
                )
            responses = row.get(d.responses_key)
            if not isinstance(responses, list) or not responses or not all(isinstance(r, str) for r in responses):
                raise DatasetError(f"{location}: {d.responses_key!r} must be a non-empty list of response texts")
            answer = row.get(d.answer_key, row.get("tests"))
            reserved = {d.prompt_key, d.messages_key, d.answer_key, d.responses_key, "tests", "data_source"}
            extra = {k: v for k, v in row.items() if k not in reserved}
            text = messages[-1]["content"]
            out.append(Prompt(messages, text, answer, str(row.get("data_source") or ""), extra, responses=responses))
    if not out:
        raise DatasetError(f"no rows in {d.responses_files}")
    return out


def _select(cfg: FilterConfig, run: RunDir, prompts: list[Prompt], pool, rms: dict, rollout) -> Path:
    from qwen25_rl.actors.rollout import SamplingSettings
    from qwen25_rl.reward.types import RewardSample

    sel = cfg.selection
    writer = run.metrics_writer(tensorboard=False)
    kept_rows: list[str] = []
    totals = {"prompts": 0, "responses": 0, "scored": 0, "kept": 0, "prompts_kept": 0, "reward_sum_scored": 0.0, "reward_sum_kept": 0.0}
    components: dict[str, list[float]] = {}
    try:
        for b, start in enumerate(range(0, len(prompts), sel.prompts_per_batch)):
            chunk = prompts[start : start + sel.prompts_per_batch]
            if rollout is not None:
                ro = cfg.rollout
                settings = SamplingSettings(
                    n=ro.samples_per_prompt,
                    temperature=ro.temperature,
                    top_p=ro.top_p,
                    top_k=ro.top_k,
                    max_new_tokens=ro.max_new_tokens,
                    seed=cfg.seed * 1_000_003 + b,
                )
                batch, _ = collect(generate_async(rollout, [p.prompt_ids for p in chunk], settings))
                lengths = batch["response_mask"].sum(1).tolist()
                pairs = list(zip(batch.meta["prompt_index"], batch.meta["response_text"], lengths))
            else:
                # Given texts: no tokenizer of the policy here, so no token count (length shaping needs one).
                pairs = [(i, r, None) for i, p in enumerate(chunk) for r in p.responses]
            samples, owners = [], []
            for j, (i, response, n_tokens) in enumerate(pairs):
                p = chunk[i]
                samples.append(
                    RewardSample(
                        response=response,
                        prompt=p.prompt_text,
                        answer=p.answer,
                        data_source=p.data_source,
                        group_id=f"b{b}p{i}",
                        sample_id=f"b{b}p{i}s{j}",
                        response_length=int(n_tokens) if n_tokens is not None else None,
                        extra=p.extra,
                    )
                )
                owners.append(i)
            scored = score_samples(
                pool, rms, cfg.reward.functions, cfg.reward_models, cfg.reward_combination, samples, [chunk[i].messages for i in owners]
            )
            by_prompt: dict[int, list[int]] = {}
            for j in scored.keep:
                by_prompt.setdefault(owners[j], [])
                if _eligible(scored.results[j].breakdown, sel.min_components):
                    by_prompt[owners[j]].append(j)
            for i, js in by_prompt.items():
                ranked = sorted(js, key=lambda j: -float(scored.rewards[j]))
                if sel.keep == "best":
                    chosen = ranked[: sel.per_prompt]
                    if sel.threshold is not None:
                        chosen = [j for j in chosen if float(scored.rewards[j]) >= sel.threshold]
                else:
                    chosen = [j for j in ranked if float(scored.rewards[j]) >= sel.threshold]
                for rank, j in enumerate(chosen):
                    row = {
                        "messages": [*chunk[i].messages, {"role": "assistant", "content": samples[j].response}],
                        "reward": float(scored.rewards[j]),
                        "breakdown": scored.results[j].breakdown,
                        "rank": rank,
                        "candidates": len(js),
                    }
                    kept_rows.append(json.dumps(row, ensure_ascii=False) + "\n")
                    totals["reward_sum_kept"] += float(scored.rewards[j])
                totals["kept"] += len(chosen)
                totals["prompts_kept"] += bool(chosen)
            for j in scored.keep:
                totals["reward_sum_scored"] += float(scored.rewards[j])
                for k, v in scored.results[j].breakdown.items():
                    if v is not None:
                        components.setdefault(k, []).append(float(v))
            totals["prompts"] += len(chunk)
            totals["responses"] += len(samples)
            totals["scored"] += len(scored.keep)
            print(
                f"filter: {totals['prompts']}/{len(prompts)} prompts, {totals['responses']} responses scored "
                f"({totals['responses'] - totals['scored']} without a reward), {totals['kept']} kept",
                flush=True,
            )
        summary = {
            "prompts": totals["prompts"],
            "responses": totals["responses"],
            "scored": totals["scored"],
            "kept": totals["kept"],
            "prompts_kept": totals["prompts_kept"],
            "reward/mean_scored": totals["reward_sum_scored"] / totals["scored"] if totals["scored"] else math.nan,
            "reward/mean_kept": totals["reward_sum_kept"] / totals["kept"] if totals["kept"] else math.nan,
            **{f"reward/{k}/mean": sum(v) / len(v) for k, v in components.items()},
        }
        writer.log(0, summary)
    finally:
        writer.close()
    out = Path(sel.output)
    out = out if out.is_absolute() else run.path / out
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, "".join(kept_rows))
    print(
        f"filter: kept {totals['kept']} of {totals['scored']} scored responses for {totals['prompts_kept']} prompts -> {out.resolve()}",
        flush=True,
    )
    return out.resolve()

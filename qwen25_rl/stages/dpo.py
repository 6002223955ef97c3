"""`qwen25-rl dpo`: offline RL as in Qwen2.5 — DPO on pairs formed by rejection sampling with
execution feedback or answer matching, in iterative rounds — or plain DPO on a pair file.

The recipe, one round:  (round > 0 with reference: previous_round -> the reference becomes the
round's starting policy) -> rollout workers sample K responses per prompt -> reward pool scores
them -> a pairing rule forms (chosen, rejected) pairs -> reference log-probs stored with the
pairs (from the sampler when it IS the reference) -> the round's pair file is published ->
DPO steps over the pairs -> weights to the rollout workers (policy version + 1) -> evaluate.
Checkpoints carry (round, step in round); a resumed run reads the round's pair file back and
continues mid-round exactly where the checkpoint was taken.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen25_rl.actors.policy import DPOSettings
from qwen25_rl.checkpointing import resolve_resume, staging
from qwen25_rl.config.loader import load_config
from qwen25_rl.data.pairs import PairRecord, load_pairs, pair_batch, write_pairs
from qwen25_rl.data.prompts import PromptSampler, load_prompts
from qwen25_rl.errors import UserValueError
from qwen25_rl.metrics import StepLogger
from qwen25_rl.models import load_tokenizer
from qwen25_rl.ray_utils import init_ray
from qwen25_rl.runs import RunDir, stage_run
from qwen25_rl.stages.dpo_config import DPOConfig
from qwen25_rl.stages.dpo_rounds import add_reference_log_probs, sample_pairs, step_order
from qwen25_rl.stages.grpo_cluster import RLCluster, run_with_restarts
from qwen25_rl.stages.grpo_collector import GroupCollector, evaluate
from qwen25_rl.stages.rl_run import load_state, prepare_initial_model, save_checkpoint
from qwen25_rl.training.schedule import PhaseSchedule

PAIRS_FILE = "pairs.jsonl"
CONSOLE_KEYS = ("dpo/loss", "dpo/reward_accuracy", "dpo/reward_margin", "round/pairs", "eval/accuracy", "time/step_s")


def run_dpo(cfg: DPOConfig) -> Path:
    with stage_run(cfg, cfg.logging.output_dir, cfg.logging.run_name, stage="dpo") as run:
        return _run_dpo(cfg, run)


def _run_dpo(cfg: DPOConfig, run: RunDir) -> Path:
    d = cfg.data
    # -- set up: model and data first (bad input fails before any worker starts) -------------
    model_path = prepare_initial_model(cfg, run)
    tokenizer_path = str(cfg.tokenizer.path or model_path)
    tokenizer = load_tokenizer(tokenizer_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # Token ids in pair files are valid up to the model's embedding rows (>= the tokenizer's).
    vocab_size = json.loads((Path(model_path) / "config.json").read_text())["vocab_size"]
    prompt_kw = dict(
        prompt_key=d.prompt_key,
        messages_key=d.messages_key,
        answer_key=d.answer_key,
        apply_chat_template=d.apply_chat_template,
        max_prompt_length=d.max_prompt_length,
        on_long_prompt=d.on_long_prompt,
    )
    given_pairs: list[PairRecord] = []
    prompts = []
    if d.mode == "pairs":
        given_pairs, dropped = load_pairs(
            d.train_files,
            tokenizer,
            prompt_key=d.prompt_key,
            chosen_key=d.chosen_key,
            rejected_key=d.rejected_key,
            margin_key=d.margin_key,
            apply_chat_template=d.apply_chat_template,
            max_prompt_length=d.max_prompt_length,
            max_length=d.max_length,
            on_long_pair=d.on_long_pair,
            vocab_size=vocab_size,
        )
    else:
        prompts, dropped = load_prompts(d.train_files, tokenizer, **prompt_kw)
    eval_records = load_prompts(d.eval_files, tokenizer, **prompt_kw)[0] if d.eval_files else []
    ckpt = resolve_resume(cfg.checkpoint.resume, run.checkpoints)
    # Held-out prompts are evaluated at the end of every round (and every eval.every_n_steps).
    generating = d.mode == "sample" or bool(eval_records)

    # -- workers: reward pool (sampling and evaluation), policy / reference / rollout groups ----
    init_ray(cfg.ray, third_party_logs=cfg.logging.third_party_logs)
    from qwen25_rl.reward.pool import RewardPool

    pool = RewardPool(cfg.reward, name_prefix="dpo/reward") if generating else None
    inputs = DPOInputs(tokenizer, tokenizer_path, pad_id, vocab_size, given_pairs, prompts, dropped, eval_records, generating)
    try:
        return run_with_restarts(
            "dpo",
            cfg,
            run,
            ckpt,
            build=lambda: RLCluster(cfg, str(model_path), name="dpo", with_reference=True, with_rollout=generating),  # type: ignore[arg-type]
            train=lambda cluster, ckpt, restarts: _train(cfg, run, cluster, pool, inputs, ckpt, restarts),
        )
    finally:
        if pool is not None:
            pool.shutdown()


@dataclass
class DPOInputs:
    """What a DPO run reads before any worker starts (and keeps across worker restarts)."""

    tokenizer: Any
    tokenizer_path: str
    pad_id: int
    vocab_size: int
    given_pairs: list[PairRecord]
    prompts: list
    dropped: dict[str, int]
    eval_records: list
    generating: bool


def _train(cfg: DPOConfig, run: RunDir, cluster: RLCluster, pool, inputs: DPOInputs, ckpt: Path | None, restarts) -> Path:
    """The run from `ckpt` (None: the start) to its end, on `cluster`'s workers."""
    a, d = cfg.algorithm, cfg.data
    tokenizer, tokenizer_path, pad_id, vocab_size = inputs.tokenizer, inputs.tokenizer_path, inputs.pad_id, inputs.vocab_size
    given_pairs, prompts, dropped, eval_records, generating = (
        inputs.given_pairs,
        inputs.prompts,
        inputs.dropped,
        inputs.eval_records,
        inputs.generating,
    )
    logger = None
    try:
        # -- resume ---------------------------------------------------------------------------
        run.mark_started()
        state = {"step": 0, "round": 0, "step_in_round": 0, "policy_version": 0, "sampler_position": 0}
        if ckpt is not None:
            state = load_state(ckpt)
            cluster.load(str(ckpt / "policy"))
            cluster.sync_weights(state["policy_version"])
        sampler = PromptSampler(max(len(prompts), 1), d.seed, d.shuffle, state["sampler_position"])
        collector = GroupCollector(cluster, pool, prompts, sampler, cfg) if generating else None  # type: ignore[arg-type]
        settings = DPOSettings(
            beta=a.beta,
            loss_type=a.loss_type,
            label_smoothing=a.label_smoothing,
            rpo_alpha=a.rpo_alpha,
            length_normalize=a.length_normalize,
        )
        planned = planned_steps(cfg, len(given_pairs))
        schedule = PhaseSchedule(planned, cfg.optimizer.lr, cfg.scheduler.warmup_steps, cfg.scheduler.name, cfg.scheduler.min_lr_ratio)
        logger = StepLogger(run, cfg.logging, stage="dpo", total_steps=planned, start_step=state["step"], console_keys=CONSOLE_KEYS)
        source = f"{len(given_pairs)} pairs" if d.mode == "pairs" else f"{len(prompts)} prompts, {a.rounds} rounds"
        opening = f"dpo: run {run.path}, {source}, {cluster.num_parameters:,} parameters"
        if any(dropped.values()):
            opening += f" (dropped at load: {', '.join(f'{k} {v}' for k, v in dropped.items() if v)})"
        if ckpt:
            opening += f", resumed from {ckpt}"
        logger.message(opening)
        if cfg.eval.at_start and state["step"] == 0 and eval_records:
            with logger.phase(f"evaluating the initial model on {len(eval_records)} held-out prompts"):
                baseline = evaluate(cluster, pool, eval_records, cfg, 0, collector.accuracy_label)  # type: ignore[arg-type]
            logger.log(0, baseline)

        # -- the rounds -------------------------------------------------------------------------
        step, version = state["step"], state["policy_version"]
        for round_ in range(state["round"], a.rounds):
            round_dir = run.path / "rounds" / f"round_{round_}"
            pairs_file = round_dir / PAIRS_FILE
            round_metrics: dict[str, float] = {}
            first_step = state["step_in_round"] if round_ == state["round"] else 0
            if round_ > 0 and a.reference == "previous_round" and (a.reference_mode == "online" or not pairs_file.is_file()):
                round_metrics |= use_round_start_as_reference(cluster, round_dir, tokenizer_path, fresh=first_step == 0)
            if pairs_file.is_file():  # resumed mid-round: the round's pairs (and reference) as stored
                pairs, _ = load_pairs([str(pairs_file)], tokenizer, vocab_size=vocab_size)
            else:
                t = time.perf_counter()
                if d.mode == "sample":
                    with logger.phase(
                        f"round {round_}: rejection sampling ({a.prompts_per_round} prompts x {cfg.rollout.samples_per_prompt})"
                    ):
                        sampled = sample_pairs(cluster, collector, prompts, sampler, cfg, round_)  # type: ignore[arg-type]
                    logger.message(f"round {round_}: {len(sampled.pairs)} pairs")
                    pairs, round_metrics = sampled.pairs, round_metrics | sampled.metrics
                    if not pairs:
                        raise UserValueError(no_pairs_message(round_, sampled.metrics, cfg))
                    sampler_is_reference = a.reference == "previous_round" or round_ == 0
                else:
                    sampled, pairs, sampler_is_reference = None, given_pairs, False
                if a.reference_mode == "stored" and not all(p.ref_chosen_logp is not None for p in pairs):
                    round_metrics |= add_reference_log_probs(cluster, pairs, pad_id, cfg, sampled if sampler_is_reference else None)
                write_pairs(pairs_file, pairs)  # atomic: a resumed run reads it back whole or not at all
                round_metrics["time/round_setup_s"] = time.perf_counter() - t
            round_metrics["round"] = float(round_)

            order = step_order(len(pairs), a.epochs_per_round, cfg.seed, round_)
            steps_in_round = steps_for(len(order), a.pairs_per_step, cfg.policy.num_workers)
            for s in range(first_step, steps_in_round):
                t_step = time.perf_counter()
                batch = pair_batch([pairs[i] for i in order[s * a.pairs_per_step : (s + 1) * a.pairs_per_step]], pad_id)
                metrics = dict(round_metrics) if s == first_step else {}
                if a.reference_mode == "online":
                    t = time.perf_counter()
                    ref = cluster.reference_pair_log_probs(batch)
                    batch = batch.with_tensors(ref_chosen_logps=ref["chosen_logps"], ref_rejected_logps=ref["rejected_logps"])
                    metrics["time/reference_s"] = time.perf_counter() - t
                t = time.perf_counter()
                metrics |= cluster.train_dpo(batch, settings, lr=schedule.lr(min(step, planned - 1)))
                metrics["time/train_s"] = time.perf_counter() - t
                step += 1
                end_of_round = s + 1 == steps_in_round
                if end_of_round or (cfg.eval.every_n_steps and step % cfg.eval.every_n_steps == 0):
                    # New weights to the rollout workers: the next round samples from them, and
                    # evaluation generates with them.
                    version += 1
                    metrics["time/sync_s"] = cluster.sync_weights(version)
                    if eval_records and (end_of_round or cfg.eval.every_n_steps):
                        with logger.phase(f"evaluating step {step} on {len(eval_records)} held-out prompts"):
                            metrics |= evaluate(cluster, pool, eval_records, cfg, step, collector.accuracy_label)  # type: ignore[arg-type]
                metrics["policy_version"] = version
                metrics["workers/restarts"] = restarts.count  # the run's workers rebuilt after a crash, so far
                metrics["time/step_s"] = time.perf_counter() - t_step
                metrics["tokens_per_s"] = metrics["dpo/tokens"] / metrics["time/train_s"]
                logger.log(step, metrics)
                if cfg.checkpoint.every_n_steps and (step % cfg.checkpoint.every_n_steps == 0 or end_of_round):
                    done = {"round": round_ + 1, "step_in_round": 0} if end_of_round else {"round": round_, "step_in_round": s + 1}
                    with logger.phase(f"saving checkpoint {run.checkpoint_dir(step)}"):
                        save_checkpoint(
                            run,
                            cluster,
                            cfg.checkpoint.keep_last,
                            tokenizer_path,
                            {"step": step, "policy_version": version, "sampler_position": sampler.position, **done},
                        )

        if cfg.checkpoint.save_final:
            with logger.phase(f"saving the final model to {run.final}"), staging(run.final) as tmp:
                cluster.save_model(str(tmp), tokenizer_path)
        logger.close()
        return run.path
    except BaseException:
        if logger is not None:
            logger.close()
        raise


# -- the pieces of a round ---------------------------------------------------------------------


def steps_for(num_pairs: int, pairs_per_step: int, num_workers: int) -> int:
    """Optimizer steps over `num_pairs` (in order): full steps, plus the last partial one when
    every policy worker gets at least one pair of it."""
    full, rest = divmod(num_pairs, pairs_per_step)
    return full + (1 if rest >= num_workers else 0)


def planned_steps(cfg: DPOConfig, num_given_pairs: int) -> int:
    """Steps of the whole run for the lr schedule and the progress display: exact for a pair
    file; for sampling, the most the rounds can form (every prompt yielding its pairs), so a
    round that forms fewer pairs ends earlier on the schedule."""
    a = cfg.algorithm
    if cfg.data.mode == "pairs":
        return max(1, steps_for(num_given_pairs * a.epochs_per_round, a.pairs_per_step, cfg.policy.num_workers))
    per_round = a.prompts_per_round * a.pairing.pairs_per_prompt * a.epochs_per_round
    return max(1, a.rounds * math.ceil(per_round / a.pairs_per_step))


def no_pairs_message(round_: int, metrics: dict[str, float], cfg: DPOConfig) -> str:
    dropped = {k.removeprefix("round/dropped/"): int(v) for k, v in metrics.items() if k.startswith("round/dropped/") and v}
    why = ", ".join(f"{k}: {v}" for k, v in dropped.items()) or "no groups"
    return (
        f"round {round_} formed no pairs from {int(metrics.get('round/prompts', 0))} prompts x "
        f"{cfg.rollout.samples_per_prompt} samples (dropped {why}); the pairing rule "
        f"{cfg.algorithm.pairing.rule!r} needs groups with both better and worse answers: sample more "
        "per prompt (rollout.samples_per_prompt), raise rollout.temperature, or change algorithm.pairing"
    )


def use_round_start_as_reference(cluster: RLCluster, round_dir: Path, tokenizer_path: str, *, fresh: bool) -> dict[str, float]:
    """reference: previous_round — the reference workers load the policy as it starts this round
    (saved once in the round's folder, so a resumed run finds the same reference)."""
    t = time.perf_counter()
    folder = round_dir / "reference_model"
    if not folder.is_dir():
        if not fresh:
            raise UserValueError(f"{folder}: the round's reference model is missing; cannot resume this round with reference_mode online")
        with staging(folder) as tmp:
            cluster.save_model(str(tmp), tokenizer_path)
    cluster.reload_reference(str(folder))
    return {"time/reference_reload_s": time.perf_counter() - t}


def main(config_path: str, overrides: list[str]) -> Path:
    cfg = load_config(config_path, overrides, schema=DPOConfig)
    return run_dpo(cfg)  # type: ignore[arg-type]

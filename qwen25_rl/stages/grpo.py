"""`qwen25-rl grpo`: online RL with group-relative advantages (GRPO / DAPO / Dr. GRPO / RLOO /
REINFORCE++), on separate policy, reference, rollout and reward workers.

The recipe, one step:  prompts -> rollout workers generate -> reward pool scores -> (dynamic
sampling refills) -> policy (old) and reference log-probs -> advantages -> PPO update ->
weights to the rollout workers (policy version + 1) -> log, evaluate, checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from qwen25_rl.actors.policy import LossSettings
from qwen25_rl.algorithms import compute_advantages
from qwen25_rl.checkpointing import atomic_write, resolve_resume, staging
from qwen25_rl.config.loader import load_config
from qwen25_rl.data.prompts import PromptSampler, load_prompts
from qwen25_rl.metrics import StepLogger
from qwen25_rl.models import load_tokenizer
from qwen25_rl.ray_utils import init_ray
from qwen25_rl.runs import RunDir, stage_run
from qwen25_rl.stages.grpo_cluster import RLCluster, run_with_restarts
from qwen25_rl.stages.grpo_collector import GroupCollector, PendingStep, evaluate
from qwen25_rl.stages.grpo_config import GRPOConfig
from qwen25_rl.stages.rl_run import load_state, prepare_initial_model, save_checkpoint
from qwen25_rl.training.schedule import PhaseSchedule


def run_grpo(cfg: GRPOConfig) -> Path:
    with stage_run(cfg, cfg.logging.output_dir, cfg.logging.run_name, stage="grpo") as run:
        return _run_grpo(cfg, run)


def _run_grpo(cfg: GRPOConfig, run: RunDir) -> Path:
    # -- set up: model and data first (bad input fails before any worker starts, and leaves no
    # run folder behind: see stage_run) ----------------------------------------------------
    model_path = prepare_initial_model(cfg, run)
    tokenizer = load_tokenizer(cfg.tokenizer.path or model_path)
    data_kw = dict(
        prompt_key=cfg.data.prompt_key,
        messages_key=cfg.data.messages_key,
        answer_key=cfg.data.answer_key,
        apply_chat_template=cfg.data.apply_chat_template,
        max_prompt_length=cfg.data.max_prompt_length,
        on_long_prompt=cfg.data.on_long_prompt,
    )
    train_records, dropped = load_prompts(cfg.data.train_files, tokenizer, **data_kw)
    eval_records = load_prompts(cfg.data.eval_files, tokenizer, **data_kw)[0] if cfg.data.eval_files else []
    ckpt = resolve_resume(cfg.checkpoint.resume, run.checkpoints)

    # -- workers: reward pool, policy / reference / rollout groups ---------------------------
    init_ray(cfg.ray, third_party_logs=cfg.logging.third_party_logs)
    from qwen25_rl.reward.pool import RewardPool

    pool = RewardPool(cfg.reward, name_prefix="grpo/reward")
    try:
        return run_with_restarts(
            "grpo",
            cfg,
            run,
            ckpt,
            build=lambda: RLCluster(cfg, str(model_path), name="grpo"),
            train=lambda cluster, ckpt, restarts: _train(
                cfg, run, cluster, pool, model_path, train_records, eval_records, dropped, ckpt, restarts
            ),
        )
    finally:
        pool.shutdown()


def _train(
    cfg: GRPOConfig, run: RunDir, cluster: RLCluster, pool, model_path, train_records, eval_records, dropped, ckpt, restarts
) -> Path:
    """The run from `ckpt` (None: the start) to its end, on `cluster`'s workers."""
    logger = None
    try:
        # -- resume -------------------------------------------------------------------------
        run.mark_started()  # inputs checked, workers up: from here on the run folder stays
        state = {"step": 0, "sampler_position": 0, "policy_version": 0}
        if ckpt is not None:
            state = load_state(ckpt)
            cluster.load(str(ckpt / "policy"))
            cluster.sync_weights(state["policy_version"])
        sampler = PromptSampler(len(train_records), cfg.data.seed, cfg.data.shuffle, state["sampler_position"])
        collector = GroupCollector(cluster, pool, train_records, sampler, cfg)
        schedule = PhaseSchedule(
            cfg.algorithm.total_steps, cfg.optimizer.lr, cfg.scheduler.warmup_steps, cfg.scheduler.name, cfg.scheduler.min_lr_ratio
        )
        loss = loss_settings(cfg)
        logger = StepLogger(run, cfg.logging, stage="grpo", total_steps=cfg.algorithm.total_steps, start_step=state["step"])
        opening = f"grpo: run {run.path}, {len(train_records)} prompts, {cluster.num_parameters:,} parameters"
        placement = cluster.placement()  # where every worker runs: placement.json in the run folder
        atomic_write(run.path / "placement.json", json.dumps(placement, indent=1))
        placed_after = cluster.rollout_restarts  # rewritten when a rollout worker is replaced
        nodes = {n for ids in placement.values() for n in ids}
        if len(nodes) > 1:
            opening += f", workers on {len(nodes)} nodes"
        if dropped["too_long"]:
            opening += f" ({dropped['too_long']} prompts too long, dropped)"
        if ckpt:
            opening += f", resumed from {ckpt}"
        logger.message(opening)

        if cfg.eval.at_start and state["step"] == 0:
            with logger.phase(f"evaluating the initial model on {len(eval_records)} held-out prompts"):
                baseline = evaluate(cluster, pool, eval_records, cfg, 0, collector.accuracy_label)
            logger.log(0, baseline)

        # -- the loop -------------------------------------------------------------------------
        version = state["policy_version"]
        pending: PendingStep | None = None
        for step in range(state["step"], cfg.algorithm.total_steps):
            t_step = time.perf_counter()
            if pending is None:
                pending = collector.start(step)
            rollout = collector.finish(pending)
            batch, metrics = rollout.batch, dict(rollout.metrics)
            pending = None
            if cfg.algorithm.one_step_off_policy and step + 1 < cfg.algorithm.total_steps:
                pending = collector.start(step + 1)  # generates with version `version` while we train

            if len(batch) >= cluster.policy.num_workers * cfg.algorithm.num_mini_batches:
                batch, score_metrics = add_log_probs(cluster, batch, cfg)
                metrics |= score_metrics
                batch = batch.with_tensors(advantages=advantages(batch, cfg))
                t = time.perf_counter()
                metrics |= cluster.train(batch, loss, lr=schedule.lr(step), seed=cfg.seed * 100_003 + step)
                metrics["time/train_s"] = time.perf_counter() - t
                version += 1
                metrics["time/sync_s"] = cluster.sync_weights(version)
                metrics["policy_version/lag_mean"] = float((version - 1 - batch["policy_version"].float()).mean())
                metrics["policy_version/lag_max"] = float((version - 1 - batch["policy_version"]).max())
            else:
                metrics["skipped_update"] = 1.0
            metrics["policy_version"] = version
            metrics["time/step_s"] = time.perf_counter() - t_step
            metrics["tokens_per_s"] = metrics.get("tokens/generated", 0.0) / metrics["time/step_s"]
            metrics["prompts/position"] = sampler.position
            metrics["workers/restarts"] = restarts.count  # the run's workers rebuilt after a crash, so far
            if cluster.rollout_restarts > placed_after:  # a replaced rollout worker may run elsewhere
                placed_after = cluster.rollout_restarts
                atomic_write(run.path / "placement.json", json.dumps(cluster.placement(), indent=1))

            done = step + 1
            if cfg.eval.every_n_steps and (done % cfg.eval.every_n_steps == 0 or done == cfg.algorithm.total_steps):
                with logger.phase(f"evaluating step {done} on {len(eval_records)} held-out prompts"):
                    metrics |= evaluate(cluster, pool, eval_records, cfg, done, collector.accuracy_label)
            logger.log(done, metrics)
            if cfg.checkpoint.every_n_steps and done % cfg.checkpoint.every_n_steps == 0:
                # The next step's prompts were already taken when generation runs ahead.
                position = pending.sampler_position if pending is not None else sampler.position
                with logger.phase(f"saving checkpoint {run.checkpoint_dir(done)}"):
                    save_checkpoint(
                        run,
                        cluster,
                        cfg.checkpoint.keep_last,
                        str(model_path),
                        {"step": done, "sampler_position": position, "policy_version": version},
                    )

        if cfg.checkpoint.save_final:
            with logger.phase(f"saving the final model to {run.final}"), staging(run.final) as tmp:
                cluster.save_model(str(tmp), str(cfg.tokenizer.path or model_path))
        logger.close()
        return run.path
    except BaseException:
        if logger is not None:
            logger.close()
        raise


# -- the pieces of a step ---------------------------------------------------------------------


def add_log_probs(cluster: RLCluster, batch, cfg: GRPOConfig):
    """Old (trainer) log-probs when the update makes several passes, reference log-probs when a
    KL term needs them. (The sampler-vs-trainer gap is measured by the policy workers.)"""
    temperature = cfg.rollout.temperature
    metrics: dict[str, float] = {}
    algo = cfg.algorithm
    if algo.ppo_epochs > 1 or algo.num_mini_batches > 1 or (algo.kl_mode == "reward" and algo.kl_coef > 0):
        # Several updates per batch: the ratio needs the log-probs from before the first one
        # (and a KL reward penalty needs them before advantages are computed).
        # (One update: the worker uses its own forward pass, detached; see PolicyWorker.train.)
        t = time.perf_counter()
        batch = batch.with_tensors(old_log_probs=cluster.policy_log_probs(batch, temperature)["log_probs"])
        metrics["time/old_log_probs_s"] = time.perf_counter() - t
    if cluster.reference is not None:
        t = time.perf_counter()
        batch = batch.with_tensors(ref_log_probs=cluster.reference_log_probs(batch, temperature)["log_probs"])
        metrics["time/reference_s"] = time.perf_counter() - t
    return batch, metrics


def advantages(batch, cfg: GRPOConfig) -> torch.Tensor:
    algo = cfg.algorithm
    options = {}
    if algo.advantage_estimator == "grpo":
        options["scale_by_std"] = algo.std_normalize
    if algo.kl_mode == "reward" and algo.kl_coef > 0:
        from qwen25_rl.algorithms.kl import kl_divergence, kl_penalty_token_rewards

        kl = kl_divergence(batch["old_log_probs"], batch["ref_log_probs"], algo.kl_estimator)
        options["token_rewards"] = kl_penalty_token_rewards(kl, batch["response_mask"], algo.kl_coef)
    return compute_advantages(algo.advantage_estimator, batch["rewards"], batch.meta["group_id"], batch["response_mask"], **options)


def loss_settings(cfg: GRPOConfig) -> LossSettings:
    a = cfg.algorithm
    return LossSettings(
        ppo_epochs=a.ppo_epochs,
        num_mini_batches=a.num_mini_batches,
        temperature=cfg.rollout.temperature,
        loss_type=a.loss_type,
        loss_agg_mode=a.loss_agg_mode,
        clip_low=a.clip_low,
        clip_high=a.clip_high,
        dual_clip=a.dual_clip,
        kl_coef=a.kl_coef if a.kl_mode == "loss" else 0.0,
        kl_estimator=a.kl_estimator,
        entropy_coef=a.entropy_coef,
        tis=a.importance_correction.enabled,
        tis_mode=a.importance_correction.mode,
        tis_low=a.importance_correction.low,
        tis_high=a.importance_correction.high,
        max_response_length=cfg.rollout.max_new_tokens,
    )


def main(config_path: str, overrides: list[str]) -> Path:
    cfg = load_config(config_path, overrides, schema=GRPOConfig)
    return run_grpo(cfg)  # type: ignore[arg-type]

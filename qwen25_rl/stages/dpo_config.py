"""Config of `qwen25-rl dpo`: offline RL as in Qwen2.5 (DPO on pairs formed by rejection sampling
with execution feedback or answer matching, in iterative rounds), or plain DPO on a pair file.

It shares the worker sections (rollout, policy, reference, reward, eval, weight sync) with GRPO,
so a user moves between the two stages without relearning the cluster settings. Defaults follow
the Qwen2.5 report where it gives them (one epoch, lr 7e-7, the Online Merging Optimizer is the
GPU configs' choice); the tiny CPU configs override what a minutes-long run needs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from qwen25_rl.config.placement import GroupDemand
from qwen25_rl.config.schema import OptimizerConfig, Section, StageConfig, register_stage_config
from qwen25_rl.config.storage import InputPath
from qwen25_rl.reward.config import RewardConfig
from qwen25_rl.stages.grpo_config import (
    EvalConfig,
    PolicyConfig,
    PromptDataConfig,
    ReferenceConfig,
    RolloutConfig,
    WeightSyncConfig,
    rl_worker_groups,
)


class PairDataConfig(PromptDataConfig):
    """`mode: sample`: `train_files` are prompt files (as GRPO's; `answer` / `tests` feed the
    rewards) and each round samples its pairs. `mode: pairs`: `train_files` are pair files
    (JSONL or Parquet): `prompt` (text or chat messages), `chosen` and `rejected` (text or the
    assistant's messages), optional `margin`. `eval_files` are prompt files in both modes."""

    mode: Literal["sample", "pairs"] = "sample"
    chosen_key: str = "chosen"
    rejected_key: str = "rejected"
    margin_key: str = "margin"
    # A pair longer than max_length (prompt + the longer response) or max_prompt_length:
    # drop it (counted), truncate its responses (counted), or stop with the row named.
    on_long_pair: Literal["drop", "truncate", "error"] = "drop"


class PairingConfig(Section):
    """How a prompt's scored samples become (chosen, rejected) pairs (qwen25_rl.algorithms.pairing).
    Ties never pair; all-correct and all-wrong groups are dropped and counted."""

    rule: str = "correct_vs_incorrect"
    pairs_per_prompt: int = Field(default=1, ge=1)
    # best_vs_worst / best_vs_random: the chosen score must beat the rejected one by this much.
    min_margin: float = Field(default=0.0, ge=0)
    # Among equally good chosen candidates take the shortest (length control).
    prefer_shorter: bool = False
    # Drop a pair whose chosen response is more than this many times longer than the rejected.
    max_length_ratio: float | None = Field(default=None, gt=0)


class DPOAlgorithmConfig(Section):
    # Sampling rounds (mode: sample); each round samples with the newest policy weights.
    rounds: int = Field(default=1, ge=1)
    prompts_per_round: int = Field(default=64, ge=1)
    pairs_per_step: int = Field(default=8, ge=1)
    # Passes over a round's pairs (Qwen2.5: one).
    epochs_per_round: int = Field(default=1, ge=1)
    beta: float = Field(default=0.1, gt=0)
    loss_type: str = "sigmoid"  # a registered DPO loss: sigmoid | ipo | hinge
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5)  # robust / conservative DPO (sigmoid)
    rpo_alpha: float = Field(default=0.0, ge=0)  # NLL of the chosen response (RPO)
    length_normalize: bool = False  # average per-token log-probs instead of sums
    # The reference the loss measures against: the starting model, or each round's starting policy.
    reference: Literal["initial", "previous_round"] = "initial"
    # stored: reference log-probs computed once per pair (before the round trains) and kept in
    # the round's pair file; online: a reference forward pass in every training step.
    reference_mode: Literal["stored", "online"] = "stored"
    # When the pairs were sampled from weights equal to the reference (round one with
    # reference: initial, every round with previous_round) at temperature 1 without top-p/k,
    # take the reference log-probs from the sampler instead of a second forward pass, after
    # checking the sampler against the reference workers on `sampler_check_pairs` pairs.
    reference_from_sampler: bool = True
    sampler_check_pairs: int = Field(default=4, ge=1)
    # Largest per-token |sampler - reference| log-prob gap accepted (float32 on CPU: ~1e-5;
    # bf16 vLLM on GPU: ~1e-2). Above it the reference workers score every pair.
    sampler_tolerance: float = Field(default=1e-3, gt=0)
    pairing: PairingConfig = Field(default_factory=PairingConfig)
    # The reward whose value (1 = solved) defines sampling and held-out accuracy and
    # `correct` for pairing; null: the first reward function.
    accuracy_reward: str | None = None


class DPOOptimizerConfig(OptimizerConfig):
    """AdamW, or the Online Merging Optimizer around it (Lu et al. 2024; Qwen2/2.5's DPO):
    each step θ_t = θ_{t-1} + (1-α) F(Δθ_adam) + α F(τ), τ = θ_start - θ_base."""

    name: Literal["adamw", "ondare", "onties"] = "adamw"  # type: ignore[assignment]
    # The pretrained base model folder (τ = starting policy - base); needed by ondare / onties.
    base_model: InputPath | None = None
    # Defaults: the public release's DPO script (7B, lr 1e-6): alpha 1e-7, keep 0.01.
    merge_alpha: float = Field(default=1e-7, ge=0, le=1)
    # OnDARE: probability of keeping an entry; OnTIES: fraction kept by magnitude.
    merge_keep: float = Field(default=0.01, gt=0, le=1)
    # Rescale the kept entries (OnDARE: / keep; OnTIES: back to each term's L1 norm), as the
    # public code does, so the expected step keeps Adam's size. false: the paper's formula,
    # whose expected step is `keep` times Adam's (see qwen25_rl.algorithms.merging).
    merge_rescale: bool = True


def _dpo_optimizer() -> DPOOptimizerConfig:
    return DPOOptimizerConfig(lr=7e-7, weight_decay=0.0, grad_clip=1.0)


def _dpo_rollout() -> RolloutConfig:
    return RolloutConfig(samples_per_prompt=8)


@register_stage_config("dpo")
class DPOConfig(StageConfig):
    stage: Literal["dpo"] = "dpo"
    data: PairDataConfig = Field(default_factory=PairDataConfig)  # type: ignore[assignment]
    optimizer: DPOOptimizerConfig = Field(default_factory=_dpo_optimizer)  # type: ignore[assignment]
    rollout: RolloutConfig = Field(default_factory=_dpo_rollout)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    algorithm: DPOAlgorithmConfig = Field(default_factory=DPOAlgorithmConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    weight_sync: WeightSyncConfig = Field(default_factory=WeightSyncConfig)

    def worker_groups(self) -> list[GroupDemand]:
        # Rollout workers and the reward pool exist when the stage samples pairs or evaluates.
        generating = self.data.mode == "sample" or bool(self.data.eval_files)
        return rl_worker_groups(self, with_reference=True, with_rollout=generating)

    @model_validator(mode="after")
    def _consistent(self) -> DPOConfig:
        a, d = self.algorithm, self.data
        if not d.train_files:
            raise ValueError(f"data.train_files: give at least one {'pair' if d.mode == 'pairs' else 'prompt'} file")
        if d.mode == "pairs" and a.rounds > 1:
            raise ValueError("algorithm.rounds > 1 needs data.mode: sample (a pair file is one round; use epochs_per_round)")
        if (self.eval.every_n_steps or self.eval.at_start) and not d.eval_files:
            raise ValueError("eval.every_n_steps / eval.at_start is set but data.eval_files is empty")
        if a.pairs_per_step < self.policy.num_workers:
            raise ValueError(f"algorithm.pairs_per_step={a.pairs_per_step} is fewer than policy.num_workers={self.policy.num_workers}")
        if d.mode == "sample" and self.rollout.samples_per_prompt < 2:
            raise ValueError("data.mode sample needs rollout.samples_per_prompt >= 2 (pairs come from one prompt's samples)")
        if self.optimizer.name in ("ondare", "onties") and not self.optimizer.base_model:
            raise ValueError(
                f"optimizer.name {self.optimizer.name!r} needs optimizer.base_model: the pretrained base model folder "
                "(the task vector is the starting policy minus the base)"
            )
        if self.optimizer.name in ("ondare", "onties") and self.policy.strategy == "deepspeed" and self.policy.zero_stage == 3:
            raise ValueError(f"optimizer.name {self.optimizer.name!r} needs policy.zero_stage 0-2 or strategy ddp (not ZeRO-3)")
        labels = [f.label for f in self.reward.functions]
        if a.accuracy_reward is not None and a.accuracy_reward not in labels:
            raise ValueError(f"algorithm.accuracy_reward {a.accuracy_reward!r} is not a reward function label ({', '.join(labels)})")
        from qwen25_rl.algorithms.dpo import DPO_LOSSES

        if a.loss_type not in DPO_LOSSES:
            raise ValueError(f"algorithm.loss_type {a.loss_type!r} is not a registered DPO loss ({', '.join(sorted(DPO_LOSSES))})")
        if a.label_smoothing and a.loss_type != "sigmoid":
            raise ValueError("algorithm.label_smoothing applies to loss_type sigmoid only")
        return self

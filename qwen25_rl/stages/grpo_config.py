"""Config of `qwen25-rl grpo`: the shared sections plus rollout, policy, reference, algorithm,
reward, evaluation and weight-sync sections. Defaults follow the Qwen2.5 report's online RL
where it gives them (8 samples per prompt); everything else is what the tiny CPU run needs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from qwen25_rl.config.placement import GroupDemand
from qwen25_rl.config.schema import DataConfig, OptimizerConfig, Section, StageConfig, register_stage_config
from qwen25_rl.config.storage import InputPath
from qwen25_rl.reward.config import RewardConfig


class PromptDataConfig(DataConfig):
    """Prompt files (JSONL or Parquet). A row has `prompt` (text) or `messages` (chat), and
    optionally `answer` (or `tests`) for the reward, `data_source`, and any other columns
    (passed to custom rewards as extras)."""

    prompt_key: str = "prompt"
    messages_key: str = "messages"
    answer_key: str = "answer"
    # Chat template applied to a `prompt` row as a single user turn (the tokenizer's ChatML).
    apply_chat_template: bool = True
    # Prompts longer than max_prompt_length tokens: drop them (counted) or fail at load.
    on_long_prompt: Literal["drop", "error"] = "drop"


class RolloutConfig(Section):
    engine: Literal["vllm", "hf"] = "vllm"
    num_workers: int = Field(default=1, ge=1)
    num_cpus_per_worker: float = Field(default=1.0, gt=0)
    num_gpus_per_worker: float = Field(default=0.0, ge=0)
    samples_per_prompt: int = Field(default=8, ge=1)
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = -1
    max_new_tokens: int = Field(default=128, ge=1)
    # vLLM: context length; CPU: KV cache in GiB (fixed, never a fraction of RAM); GPU: fraction.
    max_model_len: int = Field(default=1024, gt=0)
    kv_cache_gib: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.5, gt=0, le=1)
    # Compute threads of a rollout worker (torch intra-op threads; vLLM on CPU computes with
    # them too and freezes the number once its engine has started). Unset: the worker's CPU
    # request, at least 1 (Ray's OMP_NUM_THREADS).
    torch_threads: int | None = Field(default=None, ge=1)
    # vLLM: run the model eagerly (true) or compiled with torch.compile, plus CUDA graphs on GPU
    # (false). null: eager on CPU (compiling adds ~25 s to engine start; it speeds up decode
    # steps of small, overhead-bound models by ~30 %), compiled on GPU.
    enforce_eager: bool | None = None
    # Ray node labels every worker's node must carry (`ray start --labels='{"role": "rollout"}'`):
    # puts the group on nodes of its own. Within the group, ray.placement_strategy applies
    # (SPREAD: its workers on different nodes). {}: any node.
    node_labels: dict[str, str] = Field(default_factory=dict)


class PolicyConfig(Section):
    num_workers: int = Field(default=1, ge=1)
    num_cpus_per_worker: float = Field(default=1.0, gt=0)
    num_gpus_per_worker: float = Field(default=0.0, ge=0)
    # deepspeed: ZeRO stage 1/2 on CPU (ZeRO-3 over gloo has NaN bugs), up to 3 on GPU.
    strategy: Literal["deepspeed", "ddp"] = "deepspeed"
    zero_stage: Literal[0, 1, 2, 3] = 2
    micro_batch_size: int = Field(default=8, ge=1)
    bf16: bool = False
    torch_threads: int | None = Field(default=None, ge=1)
    chunk_size: int = Field(default=1024, ge=1)
    # Ray node labels of the policy workers' nodes (see RolloutConfig.node_labels).
    node_labels: dict[str, str] = Field(default_factory=dict)


class ReferenceConfig(Section):
    """The frozen reference. Skipped entirely when algorithm.kl_coef is 0."""

    num_workers: int = Field(default=1, ge=1)
    num_cpus_per_worker: float = Field(default=1.0, gt=0)
    num_gpus_per_worker: float = Field(default=0.0, ge=0)
    micro_batch_size: int = Field(default=16, ge=1)
    # torch threads (null: the CPU request, at least 1). The phases of a synchronous step run
    # one after another, so each worker may use every core while the others wait.
    torch_threads: int | None = Field(default=None, ge=1)
    # Ray node labels of the reference workers' nodes (see RolloutConfig.node_labels).
    node_labels: dict[str, str] = Field(default_factory=dict)


class RewardModelConfig(Section):
    """A learned reward model (an RM folder from `qwen25-rl rm`, or any sequence-classification
    checkpoint) scoring every sample on its own worker group, beside the rule rewards. Each of
    its criteria is a reward component (`<name>/<criterion>` in the metrics) with weight
    `weight` x the criterion's weight (`criteria_weights`, else the RM's reward_model.json)."""

    name: str = "rm"
    path: InputPath
    weight: float = 1.0
    criteria_weights: dict[str, float] | None = None
    # chat: the RM's own chat template renders the prompt (its tokenizer may differ from the
    # policy's); plain: prompt text + response.
    template: Literal["chat", "plain"] = "chat"
    # Tokens per scored sequence (null: the RM's own limit); longer ones keep their end, counted.
    max_length: int | None = Field(default=None, gt=0)
    micro_batch_size: int = Field(default=16, ge=1)
    num_workers: int = Field(default=1, ge=1)
    num_cpus_per_worker: float = Field(default=1.0, gt=0)
    num_gpus_per_worker: float = Field(default=0.0, ge=0)
    torch_threads: int | None = Field(default=None, ge=1)


def check_reward_model_names(labels: list[str], reward_models: list[RewardModelConfig]) -> None:
    """RM names label reward components, as reward-function labels do: each must be unique."""
    names = [m.name for m in reward_models]
    clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(labels)))
    if clash:
        raise ValueError(f"reward_models: names {clash} repeat or clash with reward function labels; give each a unique name")


class DynamicSamplingConfig(Section):
    """DAPO dynamic sampling: drop groups whose rewards are all equal (no learning signal) and
    refill with new prompts, up to `max_rounds` generation rounds per step."""

    enabled: bool = False
    max_rounds: int = Field(default=3, ge=1)


class ImportanceCorrectionConfig(Section):
    """Truncated importance sampling for the sampler/trainer log-prob mismatch."""

    enabled: bool = False
    mode: Literal["truncate", "mask"] = "truncate"
    low: float = Field(default=0.0, ge=0)
    high: float = Field(default=2.0, gt=0)


class AlgorithmConfig(Section):
    prompts_per_step: int = Field(default=8, ge=1)
    total_steps: int = Field(default=100, ge=1)
    advantage_estimator: str = "grpo"
    # grpo: divide by the group's reward std (false = Dr. GRPO). Ignored by other estimators.
    std_normalize: bool = True
    ppo_epochs: int = Field(default=1, ge=1)
    num_mini_batches: int = Field(default=1, ge=1)
    loss_type: str = "ppo"
    loss_agg_mode: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"] = "token-mean"
    clip_low: float = Field(default=0.2, ge=0)
    clip_high: float = Field(default=0.28, ge=0)  # DAPO clip-higher
    dual_clip: float | None = Field(default=None, gt=1)
    kl_coef: float = Field(default=0.0, ge=0)
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    # loss: KL term in the policy loss (GRPO); reward: per-token penalty folded into the reward.
    kl_mode: Literal["loss", "reward"] = "loss"
    entropy_coef: float = Field(default=0.0, ge=0)
    importance_correction: ImportanceCorrectionConfig = Field(default_factory=ImportanceCorrectionConfig)
    dynamic_sampling: DynamicSamplingConfig = Field(default_factory=DynamicSamplingConfig)
    # Generate step k+1 while training on step k (samples are one policy version behind).
    one_step_off_policy: bool = False
    # The reward function whose value (1 = solved) defines accuracy; null: the first one.
    accuracy_reward: str | None = None
    # How reward components (rule rewards, reward-model criteria) become one reward:
    # sum: weighted sum; group_normalized: each component normalised within its group first
    # (GDPO), so a component with a large spread does not drown the others.
    reward_combination: Literal["sum", "group_normalized"] = "sum"


class EvalConfig(Section):
    """Held-out evaluation on `data.eval_files` every `every_n_steps` (and at the end)."""

    every_n_steps: int | None = Field(default=None, gt=0)
    # Also evaluate the initial model before step 1 (logged as step 0; not on resume), so
    # every run carries its own baseline.
    at_start: bool = False
    max_prompts: int | None = Field(default=None, gt=0)
    # k samples per prompt give pass@k for every k in `pass_k` (unbiased estimator).
    samples_per_prompt: int = Field(default=1, ge=1)
    pass_k: list[int] = Field(default_factory=lambda: [1])
    temperature: float = Field(default=1.0, ge=0)
    max_new_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _k(self) -> EvalConfig:
        bad = [k for k in self.pass_k if not 1 <= k <= self.samples_per_prompt]
        if bad:
            raise ValueError(f"pass_k {bad} must lie in 1..samples_per_prompt ({self.samples_per_prompt})")
        return self


class WeightSyncConfig(Section):
    transport: Literal["object_store", "broadcast"] = "object_store"
    bucket_mb: float = Field(default=64.0, gt=0)


def _grpo_optimizer() -> OptimizerConfig:
    return OptimizerConfig(lr=1e-6, weight_decay=0.0, grad_clip=1.0)


def rl_worker_groups(cfg, *, with_reference: bool, with_rollout: bool) -> list[GroupDemand]:
    """The bundles RLCluster and the reward pool reserve for an RL stage config (GRPO, DPO)."""
    groups = [GroupDemand("policy", cfg.policy.num_workers, cfg.policy.num_cpus_per_worker, cfg.policy.num_gpus_per_worker)]
    if with_reference:
        r = cfg.reference
        groups.append(GroupDemand("reference", r.num_workers, r.num_cpus_per_worker, r.num_gpus_per_worker))
    if with_rollout:
        ro = cfg.rollout
        groups.append(GroupDemand("rollout", ro.num_workers, ro.num_cpus_per_worker, ro.num_gpus_per_worker))
        pool = cfg.reward.pool
        groups.append(GroupDemand("reward pool", pool.num_workers, pool.num_cpus_per_worker))
    return groups


@register_stage_config("grpo")
class GRPOConfig(StageConfig):
    stage: Literal["grpo"] = "grpo"
    data: PromptDataConfig = Field(default_factory=PromptDataConfig)  # type: ignore[assignment]
    optimizer: OptimizerConfig = Field(default_factory=_grpo_optimizer)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    weight_sync: WeightSyncConfig = Field(default_factory=WeightSyncConfig)
    reward_models: list[RewardModelConfig] = Field(default_factory=list)

    def worker_groups(self) -> list[GroupDemand]:
        groups = rl_worker_groups(self, with_reference=self.algorithm.kl_coef > 0, with_rollout=True)
        return groups + [
            GroupDemand(f"reward model {m.name}", m.num_workers, m.num_cpus_per_worker, m.num_gpus_per_worker) for m in self.reward_models
        ]

    @model_validator(mode="after")
    def _consistent(self) -> GRPOConfig:
        if not self.data.train_files:
            raise ValueError("data.train_files: give at least one prompt file")
        if (self.eval.every_n_steps or self.eval.at_start) and not self.data.eval_files:
            raise ValueError("eval.every_n_steps / eval.at_start is set but data.eval_files is empty")
        samples = self.algorithm.prompts_per_step * self.rollout.samples_per_prompt
        per_rank = samples // self.policy.num_workers
        if per_rank < self.algorithm.num_mini_batches:
            raise ValueError(
                f"algorithm.num_mini_batches={self.algorithm.num_mini_batches} needs at least that many samples per "
                f"policy worker; a step has {samples} samples over {self.policy.num_workers} workers"
            )
        if self.algorithm.advantage_estimator in ("grpo", "rloo") and self.rollout.samples_per_prompt < 2:
            raise ValueError(f"advantage_estimator {self.algorithm.advantage_estimator!r} needs rollout.samples_per_prompt >= 2")
        if self.algorithm.kl_mode == "reward" and self.algorithm.advantage_estimator not in ("reinforce_pp", "reinforce_pp_baseline"):
            raise ValueError(
                f"algorithm.kl_mode 'reward' needs an estimator that takes token rewards (reinforce_pp, "
                f"reinforce_pp_baseline), not {self.algorithm.advantage_estimator!r}"
            )
        labels = [f.label for f in self.reward.functions]
        if self.algorithm.accuracy_reward is not None and self.algorithm.accuracy_reward not in labels:
            raise ValueError(
                f"algorithm.accuracy_reward {self.algorithm.accuracy_reward!r} is not a reward function label ({', '.join(labels)})"
            )
        check_reward_model_names(labels, self.reward_models)
        return self

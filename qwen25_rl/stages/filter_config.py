"""Config of `qwen25-rl filter`: best-of-n selection of responses by rewards (rule rewards and/or
learned reward models), written as a chat file that `qwen25-rl sft` trains on."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from qwen25_rl.config.placement import GroupDemand
from qwen25_rl.config.schema import Section, StageConfig, register_stage_config
from qwen25_rl.config.storage import InputPath
from qwen25_rl.reward.config import RewardConfig
from qwen25_rl.stages.grpo_config import PromptDataConfig, RewardModelConfig, RolloutConfig, check_reward_model_names


class FilterDataConfig(PromptDataConfig):
    """Prompts to sample K responses for (`train_files`, with `model.path` the sampler), or
    responses given already (`responses_files`: rows with the prompt as text or chat and
    `responses`, a list of texts, plus any answer / tests the rule rewards need)."""

    responses_files: list[InputPath] = Field(default_factory=list)
    responses_key: str = "responses"


class SelectionConfig(Section):
    """Which responses of a prompt are kept: the `per_prompt` best (keep: best; with a
    `threshold`, only those at or above it), or every one at or above `threshold`."""

    keep: Literal["best", "threshold"] = "best"
    per_prompt: int = Field(default=1, ge=1)
    threshold: float | None = None
    # Only responses whose named components (a reward function's label, an RM's name, or
    # `<rm>/<criterion>`) reach these values are candidates, e.g. {math: 1.0}: verified answers.
    min_components: dict[str, float] = Field(default_factory=dict)
    # The chat file written (relative to the run folder, or absolute).
    output: str = "filtered.jsonl"
    # Prompts generated and scored together (progress is reported per batch).
    prompts_per_batch: int = Field(default=64, ge=1)


@register_stage_config("filter")
class FilterConfig(StageConfig):
    stage: Literal["filter"] = "filter"
    data: FilterDataConfig = Field(default_factory=FilterDataConfig)  # type: ignore[assignment]
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    reward_models: list[RewardModelConfig] = Field(default_factory=list)
    # How rule rewards and RM criteria become one score (see GRPO's algorithm.reward_combination).
    reward_combination: Literal["sum", "group_normalized"] = "sum"
    selection: SelectionConfig = Field(default_factory=SelectionConfig)

    @property
    def sampling(self) -> bool:
        return bool(self.data.train_files)

    def worker_groups(self) -> list[GroupDemand]:
        groups = [GroupDemand("reward pool", self.reward.pool.num_workers, self.reward.pool.num_cpus_per_worker)]
        if self.sampling:
            ro = self.rollout
            groups.append(GroupDemand("rollout", ro.num_workers, ro.num_cpus_per_worker, ro.num_gpus_per_worker))
        return groups + [
            GroupDemand(f"reward model {m.name}", m.num_workers, m.num_cpus_per_worker, m.num_gpus_per_worker) for m in self.reward_models
        ]

    @model_validator(mode="after")
    def _consistent(self) -> FilterConfig:
        d = self.data
        if bool(d.train_files) == bool(d.responses_files):
            raise ValueError("give data.train_files (prompts to sample for) or data.responses_files (given responses), not both or neither")
        if self.sampling and self.model.path is None:
            raise ValueError("sampling responses needs model.path (the trained model that samples them), not a preset")
        if self.selection.keep == "threshold" and self.selection.threshold is None:
            raise ValueError("selection.keep 'threshold' needs selection.threshold")
        labels = [f.label for f in self.reward.functions]
        names = [m.name for m in self.reward_models]
        known = set(labels) | set(names)
        unknown = [k for k in self.selection.min_components if k not in known and k.split("/", 1)[0] not in names]
        if unknown:
            raise ValueError(f"selection.min_components names {unknown}: not a reward function label or reward model ({sorted(known)})")
        check_reward_model_names(labels, self.reward_models)
        return self

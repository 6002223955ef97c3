"""Config of `qwen25-rl eval`: a model (or given responses) scored on GSM8K, MATH-500, HumanEval,
MBPP or your own prompt file, with accuracy and pass@k.

Which reward decides correctness:
- the named sets (`data.name`) fix it: gsm8k / math500 -> `math` (the math verifier),
  humaneval / mbpp -> `code` (the sandboxed tests). Its params come from the entry of
  `reward.functions` of that type when the config lists one (timeouts, sandbox settings), else
  that reward's defaults (`code`: all tests must pass, 10 s per test); only that one reward runs.
- your files (`data.eval_files`) are scored by `reward.functions` as GRPO would score them
  (default: the math verifier against the `answer` column); a response is correct when the
  function named by `eval.accuracy_reward` (default: the first) gives 1.0.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from qwen25_rl.config.placement import GroupDemand
from qwen25_rl.config.schema import Section, StageConfig, register_stage_config
from qwen25_rl.config.storage import InputPath
from qwen25_rl.reward.config import RewardConfig, RewardPoolConfig
from qwen25_rl.stages.grpo_config import PromptDataConfig, RolloutConfig

# The real evaluation sets and the file each is read from in $QWEN25_RL_DATA (qwen25_rl.paths).
EVAL_SETS: dict[str, str] = {
    "gsm8k": "gsm8k_test.jsonl",
    "math500": "math500_test.jsonl",
    "humaneval": "humaneval.jsonl",
    "mbpp": "mbpp.jsonl",
}


class EvalDataConfig(PromptDataConfig):
    """What is evaluated: a named set (`name`), or your prompt files (`eval_files`, rows with
    `prompt_key` text or `messages_key` chat and the gold in `answer_key`, as GRPO reads
    them). `responses_file` scores given responses instead of sampling from a model."""

    name: Literal["gsm8k", "math500", "humaneval", "mbpp"] | None = None
    # MBPP split by task_id as Google's README gives it: test 11-510 (the benchmark),
    # validation 511-600, train 601-974, prompt 1-10 (few-shot examples); all: 974 tasks.
    mbpp_split: Literal["test", "validation", "train", "prompt", "all"] = "test"
    # In eval_files: the column holding an item's id (absent: the row's 0-based position).
    id_key: str = "id"
    # Evaluate the first `limit` items only.
    limit: int | None = Field(default=None, ge=1)
    # JSONL of given responses: rows {"id" or "index", "response" or "responses"}.
    responses_file: InputPath | None = None
    # A prompt over max_prompt_length tokens: an error by default, since dropping it would
    # quietly change what the accuracy is measured on (drop: left out and counted).
    on_long_prompt: Literal["drop", "error"] = "error"
    max_prompt_length: int = Field(default=2048, gt=0)


class EvalRolloutConfig(RolloutConfig):
    """The rollout workers (as GRPO's), sampling greedily by default: temperature 0 and one
    sample per prompt gives accuracy; temperature > 0 and n samples give pass@k."""

    samples_per_prompt: int = Field(default=1, ge=1)
    temperature: float = Field(default=0.0, ge=0)
    max_new_tokens: int = Field(default=1024, ge=1)
    max_model_len: int = Field(default=4096, gt=0)


class EvalSettings(Section):
    # pass@k for each k (unbiased estimator, qwen25_rl.algorithms.pass_at_k); every k must be
    # at most the samples per item.
    pass_k: list[int] = Field(default_factory=lambda: [1])
    # eval_files: the reward function (its label) whose value 1.0 means solved; null: the first.
    accuracy_reward: str | None = None
    # Items generated and scored together; the next batch generates while this one is scored.
    prompts_per_batch: int = Field(default=256, ge=1)


def _eval_reward() -> RewardConfig:
    # A reward that raises or times out is counted under its status and as not solved; the
    # default drop_group policy would also throw away the item's other, fine samples.
    return RewardConfig(pool=RewardPoolConfig(on_failure="zero"))


@register_stage_config("eval")
class EvalConfig(StageConfig):
    stage: Literal["eval"] = "eval"
    data: EvalDataConfig = Field(default_factory=EvalDataConfig)  # type: ignore[assignment]
    rollout: EvalRolloutConfig = Field(default_factory=EvalRolloutConfig)
    reward: RewardConfig = Field(default_factory=_eval_reward)
    eval: EvalSettings = Field(default_factory=EvalSettings)

    @property
    def generating(self) -> bool:
        """True when the rollout workers sample the responses (no responses_file given)."""
        return self.data.responses_file is None

    def worker_groups(self) -> list[GroupDemand]:
        pool = self.reward.pool
        groups = [GroupDemand("reward pool", pool.num_workers, pool.num_cpus_per_worker)]
        if self.generating:
            ro = self.rollout
            groups.append(GroupDemand("rollout", ro.num_workers, ro.num_cpus_per_worker, ro.num_gpus_per_worker))
        return groups

    @model_validator(mode="after")
    def _consistent(self) -> EvalConfig:
        d, ro = self.data, self.rollout
        if (d.name is None) == (not d.eval_files):
            raise ValueError(
                f"data: give a named set (data.name: one of {', '.join(EVAL_SETS)}) or your own files (data.eval_files), not both or neither"
            )
        if d.train_files:
            raise ValueError("data.train_files: eval reads data.name or data.eval_files; leave train_files empty")
        if self.generating and self.model.path is None:
            raise ValueError("sampling responses needs model.path (the checkpoint folder to evaluate), or give data.responses_file")
        if self.generating and ro.temperature == 0 and ro.samples_per_prompt > 1:
            raise ValueError(
                f"rollout.samples_per_prompt is {ro.samples_per_prompt} with temperature 0: greedy decoding gives the same answer "
                "every time, so it samples one; set rollout.temperature > 0 for several samples (pass@k)"
            )
        if not self.eval.pass_k:
            raise ValueError("eval.pass_k: give at least one k (1 gives accuracy)")
        bad = [k for k in self.eval.pass_k if k < 1 or (self.generating and k > ro.samples_per_prompt)]
        if bad:
            bound = f"1..rollout.samples_per_prompt ({ro.samples_per_prompt})" if self.generating else "1 or more"
            raise ValueError(f"eval.pass_k {bad} must lie in {bound}: pass@k needs at least k samples per item")
        labels = [f.label for f in self.reward.functions]
        if d.name is None and self.eval.accuracy_reward is not None and self.eval.accuracy_reward not in labels:
            raise ValueError(f"eval.accuracy_reward {self.eval.accuracy_reward!r} is not a reward function label ({labels})")
        return self

"""Typed configuration shared by every stage.

Every model here forbids unknown keys, so a misspelled key in a YAML file fails at load time
instead of being silently ignored. Defaults live here and only here: the YAML files in
`configs/` override them, and the resolved config (defaults + file + command-line overrides)
is written into every run folder.

A stage declares its own config class by subclassing `StageConfig` and registering it with
`register_stage_config("name")`; the YAML file selects it with its top-level `stage:` key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from qwen25_rl.config.placement import GroupDemand, placement_problems
from qwen25_rl.config.storage import InputPath, OutputPath


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    """Which model to train or serve.

    Exactly one of `path` (a local Hugging Face checkpoint folder) or `preset` (a named
    architecture from `qwen25_rl.models.presets`, randomly initialised) is given.
    """

    path: InputPath | None = None
    preset: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # "auto": flash-attention 2 when importable and a GPU is present, otherwise SDPA.
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"
    gradient_checkpointing: bool = False
    seed: int = 0

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if (self.path is None) == (self.preset is None):
            raise ValueError("give exactly one of model.path (a checkpoint folder) or model.preset")
        return self


class TokenizerConfig(Section):
    """Tokenizer location; when `path` is null the model folder's tokenizer is used."""

    path: InputPath | None = None
    # Left padding keeps prompts right-aligned for batched generation.
    padding_side: Literal["left", "right"] = "left"


class DataConfig(Section):
    """Where a stage's examples come from."""

    train_files: list[InputPath] = Field(default_factory=list)
    eval_files: list[InputPath] = Field(default_factory=list)
    max_prompt_length: int = Field(default=512, gt=0)
    max_length: int = Field(default=1024, gt=0)
    shuffle: bool = True
    seed: int = 0


class OptimizerConfig(Section):
    """AdamW settings (the only optimizer the recipe uses)."""

    name: Literal["adamw"] = "adamw"
    lr: float = Field(default=1e-5, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    grad_clip: float | None = Field(default=1.0, gt=0)


class SchedulerConfig(Section):
    """Learning-rate schedule: linear warm-up, then constant, cosine or linear decay."""

    name: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = Field(default=0, ge=0)
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)


class HardwareConfig(Section):
    """The machines a config is written for: `nodes` nodes of `gpus_per_node` GPUs and
    `cpus_per_node` CPUs. When a config names them, the workers it asks for (every worker
    group's CPUs and GPUs) must fit on them, checked when the config loads (see
    qwen25_rl.config.placement)."""

    nodes: int = Field(default=1, ge=1)
    gpus_per_node: int = Field(default=0, ge=0)
    cpus_per_node: int = Field(gt=0)


class RayConfig(Section):
    """Ray cluster and resources.

    `address` null means: use RAY_ADDRESS if set (a `ray job submit` run), otherwise start an
    embedded local Ray with `num_cpus` logical CPUs.
    """

    address: str | None = None
    namespace: str = "qwen25_rl"
    num_cpus: int | None = Field(default=None, gt=0)
    num_gpus: int | None = Field(default=None, ge=0)
    object_store_memory_mb: int | None = Field(default=None, gt=0)
    # The dashboard (127.0.0.1:8265) of an embedded local Ray; a joined cluster has its own.
    include_dashboard: bool = True
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    # Seconds to wait for a placement group before failing with a clear error (not a hang).
    placement_timeout_s: float = Field(default=60.0, gt=0)
    # The hardware this config is written for (null: not stated, nothing checked).
    hardware: HardwareConfig | None = None


class CheckpointConfig(Section):
    """When to save and whether to resume."""

    every_n_steps: int | None = Field(default=None, gt=0)
    keep_last: int | None = Field(default=2, gt=0)
    # "auto": resume from the newest complete checkpoint in the run folder if there is one.
    resume: Literal["auto", "never"] | str = "auto"
    save_final: bool = True


class FaultToleranceConfig(Section):
    """What an RL stage (GRPO, DPO) does when a worker crashes or hangs: the recovery bounds and
    every deadline of its remote calls, in one place. A deadline (seconds) is how long one phase
    of a step may take before the run stops with the stuck worker named and its stacks dumped;
    null waits forever. The defaults are generous for a 7B model on GPUs and far above what a
    tiny CPU run needs."""

    # A rollout worker that dies is replaced in its placement bundle, loads the trainer's
    # weights, and generates its unfinished prompts again; at most this many times per run.
    max_rollout_restarts: int = Field(default=3, ge=0)
    # A policy or reference worker that dies: all workers restart and the run resumes from its
    # newest checkpoint (the steps since are redone); at most this many times per run.
    max_worker_restarts: int = Field(default=2, ge=0)
    # A new worker's placement and construction (a rollout engine's start); a replacement that
    # lands on a node being lost is started again within it.
    start_timeout_s: float = Field(default=1800.0, gt=0)
    generate_timeout_s: float | None = Field(default=1800.0, gt=0)
    score_timeout_s: float | None = Field(default=900.0, gt=0)  # policy / reference log-probs
    train_timeout_s: float | None = Field(default=1800.0, gt=0)
    sync_timeout_s: float | None = Field(default=600.0, gt=0)
    save_timeout_s: float | None = Field(default=1800.0, gt=0)


class LoggingConfig(Section):
    """Run folder and metric sinks."""

    # Run folders go to <output_dir>/<run_name>; a relative output_dir (and every relative
    # path in the config) resolves against the storage root (qwen25_rl.config.storage):
    # storage_path, else $QWEN25_RL_STORAGE, else ~/qwen25-rl inside a `ray job submit` job,
    # else the current directory.
    storage_path: str | None = None
    output_dir: OutputPath = "runs"
    run_name: str | None = None
    console: bool = True
    tensorboard: bool = True
    ray_metrics: bool = True
    # report.html + plots/ in the run folder when the stage ends (qwen25_rl.reports); off for
    # benchmarks and tests that run many tiny stages and never look at it.
    report: bool = True
    log_every_n_steps: int = Field(default=1, gt=0)
    # Show vLLM / Ray Train / transformers INFO logs and known-harmless warnings (qwen25_rl.logs).
    third_party_logs: bool = False


class StageConfig(Section):
    """The sections every stage shares. Stage configs subclass this."""

    stage: str = "base"
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(preset="tiny"))
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    fault_tolerance: FaultToleranceConfig = Field(default_factory=FaultToleranceConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    seed: int = 0

    def worker_groups(self) -> list[GroupDemand]:
        """The worker bundles the stage reserves on the cluster (a stage with workers says)."""
        return []

    @model_validator(mode="after")
    def _fits_hardware(self) -> StageConfig:
        hw = self.ray.hardware
        if hw is not None:
            problems = placement_problems(
                self.worker_groups(), nodes=hw.nodes, gpus_per_node=hw.gpus_per_node, cpus_per_node=hw.cpus_per_node
            )
            if problems:
                raise ValueError("ray.hardware: " + "; ".join(problems))
        return self


STAGE_CONFIGS: dict[str, type[StageConfig]] = {"base": StageConfig}

# Modules whose import registers a stage config; `stage: NAME` in a file imports them on demand.
# Add a stage's config module here when the stage lands.
STAGE_CONFIG_MODULES: list[str] = [
    "qwen25_rl.pretrain.config",
    "qwen25_rl.stages.grpo_config",
    "qwen25_rl.stages.dpo_config",
    "qwen25_rl.stages.filter_config",
    "qwen25_rl.stages.eval_config",
    "qwen25_rl.commands.reward",
]

C = TypeVar("C", bound=type[StageConfig])


def register_stage_config(name: str) -> Callable[[C], C]:
    """Class decorator: make `stage: name` in a YAML file select this config class."""

    def deco(cls: C) -> C:
        if name in STAGE_CONFIGS and STAGE_CONFIGS[name] is not cls:
            raise ValueError(f"stage config {name!r} is already registered to {STAGE_CONFIGS[name].__name__}")
        STAGE_CONFIGS[name] = cls
        return cls

    return deco

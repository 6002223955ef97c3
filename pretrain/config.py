"""Stage configs for `qwen25-rl pretrain`, `qwen25-rl sft` and `qwen25-rl rm`.

Both stages train a causal LM with Ray Train workers; they share the `trainer:` section
(workers, DeepSpeed ZeRO or DDP, batch sizes, evaluation) and differ in their data: the
pretraining config declares corpus sources with mixture weights and a list of training
phases (Qwen2.5's general stage, then a long-context stage with a raised RoPE base); the SFT
config declares chat files and the over-length policy.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from qwen25_rl.config.placement import GroupDemand
from qwen25_rl.config.schema import SchedulerConfig, Section, StageConfig, register_stage_config
from qwen25_rl.config.storage import InputPath, OutputPath
from qwen25_rl.data.synthetic import SyntheticSpec


class SyntheticDataConfig(Section):
    """Generate the synthetic task data set into `out_dir` before the stage runs (skipped when
    the folder already holds the same data). The fields mirror `qwen25_rl.data.SyntheticSpec`."""

    out_dir: OutputPath
    seed: int = 0
    arithmetic_train: int = Field(default=2000, ge=0)
    arithmetic_heldout: int = Field(default=200, ge=0)
    code_train: int = Field(default=400, ge=0)
    code_heldout: int = Field(default=60, ge=0)
    heldout_fraction: float = Field(default=0.2, gt=0, lt=1)
    max_operand: int = Field(default=20, ge=2)
    max_factor: int = Field(default=10, ge=2)
    families: list[str] = Field(default_factory=lambda: ["add", "sub", "mul", "add_sub", "share"])
    problems_per_document: int = Field(default=4, ge=1)
    multi_turn_fraction: float = Field(default=0.2, ge=0, le=1)

    def spec(self) -> SyntheticSpec:
        d = self.model_dump()
        d.pop("out_dir")
        d["families"] = tuple(d["families"])
        return SyntheticSpec(**d)


class TrainerConfig(Section):
    """Ray Train workers and how they train.

    `global_batch_size` sequences make one optimizer step; each worker runs micro-batches of
    `micro_batch_size` sequences, so gradient accumulation is
    global_batch_size / (num_workers * micro_batch_size) micro-batches per step.
    """

    num_workers: int = Field(default=1, ge=1)
    # deepspeed: ZeRO stage `zero_stage` (0 = plain data parallel inside DeepSpeed).
    # ddp: torch DistributedDataParallel. On CPU, ZeRO-3 over gloo has known NaN bugs.
    strategy: Literal["deepspeed", "ddp"] = "deepspeed"
    zero_stage: Literal[0, 1, 2, 3] = 2
    micro_batch_size: int = Field(default=4, ge=1)
    global_batch_size: int = Field(default=8, ge=1)
    use_gpu: bool = False
    cpus_per_worker: int = Field(default=1, ge=1)
    # Intra-op threads per worker; null = cpus_per_worker (Ray sets OMP_NUM_THREADS to that).
    torch_threads: int | None = Field(default=None, ge=1)
    # "auto": bf16 on GPU, fp32 on CPU.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Ray Train restarts the worker group this many times after a worker fails (raises, or
    # dies: OOM killer, a lost node); each restart resumes from the newest checkpoint with its
    # weights, optimizer, RNG and data position. -1: without limit; 0: the first failure stops.
    max_failures: int = Field(default=2, ge=-1)
    # Metric rows go to Ray (and so to metrics.jsonl / the console) in batches at most this
    # often: Ray Train blocks a report until its controller took the previous one, which it
    # polls for every ~2 s. 0 reports every step (slow for fast steps; for tests).
    report_interval_s: float = Field(default=5.0, ge=0)
    eval_every_n_steps: int | None = Field(default=None, gt=0)
    eval_max_batches: int | None = Field(default=None, gt=0)
    # Compute the loss from hidden states in chunks of this many tokens instead of
    # materialising [batch, seq, vocab] logits (large vocabularies at long sequence length).
    loss_chunk_size: int | None = Field(default=None, gt=0)
    # Peak dense TFLOP/s of one worker's device, for MFU. null: known GPUs are looked up;
    # on CPU no MFU is reported (achieved TFLOP/s always is).
    peak_tflops: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> TrainerConfig:
        per_step = self.num_workers * self.micro_batch_size
        if self.global_batch_size % per_step:
            raise ValueError(
                f"global_batch_size ({self.global_batch_size}) must be a multiple of "
                f"num_workers * micro_batch_size ({self.num_workers} * {self.micro_batch_size} = {per_step})"
            )
        if self.strategy == "deepspeed" and self.zero_stage == 3 and not self.use_gpu:
            raise ValueError("zero_stage 3 needs use_gpu: true (ZeRO-3 over gloo on CPU has known NaN bugs); use 1 or 2, or strategy ddp")
        if self.strategy == "deepspeed" and self.zero_stage == 3 and self.loss_chunk_size is not None:
            # The chunked loss reads the output projection outside the module's forward, where
            # ZeRO-3 keeps only this rank's partition of it.
            raise ValueError("loss_chunk_size cannot be combined with zero_stage 3; use zero_stage 2 or drop loss_chunk_size")
        return self

    def worker_group(self) -> GroupDemand:
        """The Ray Train workers' bundles."""
        return GroupDemand("train", self.num_workers, self.cpus_per_worker, 1.0 if self.use_gpu else 0.0)

    @property
    def grad_accumulation(self) -> int:
        return self.global_batch_size // (self.num_workers * self.micro_batch_size)


class CorpusSource(Section):
    """One pretraining source. `weight` is its share of the training tokens (weights are
    normalised): a source is up-sampled (repeated) or down-sampled to reach its share, as in
    Qwen2.5's domain re-balancing."""

    name: str
    files: list[InputPath] = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0)
    # JSONL: the field holding the document; Parquet: the column. Plain text files are one
    # document each.
    text_key: str = "text"
    format: Literal["auto", "jsonl", "parquet", "text"] = "auto"


class PretrainDataConfig(Section):
    synthetic: SyntheticDataConfig | None = None
    sources: list[CorpusSource] = Field(min_length=1)
    # Held-out text for the evaluation loss (same formats; `text` field).
    eval_files: list[InputPath] = Field(default_factory=list)
    eval_text_key: str = "text"
    # false: position ids restart at every document, so a token never attends to another
    # document in the same packed sequence. true: plain causal attention over the whole
    # sequence (documents separated only by the EOS token).
    cross_document_attention: bool = False
    # Documents per tokenisation task (Ray tasks tokenise in parallel).
    tokenize_batch_documents: int = Field(default=2000, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _unique_names(self) -> PretrainDataConfig:
        names = [s.name for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"corpus source names must be unique, repeated: {dup}")
        return self


class PretrainPhase(Section):
    """One phase of multi-stage pretraining. Fields left null inherit from the sections
    (`optimizer.lr`, `scheduler.warmup_steps`, `trainer.global_batch_size`) or, for the RoPE
    base and context, from the previous phase / the model."""

    name: str
    steps: int = Field(gt=0)
    seq_len: int = Field(gt=1)
    rope_theta: float | None = Field(default=None, gt=0)
    # Written into the model config; null keeps the model's, raised to seq_len if smaller.
    max_position_embeddings: int | None = Field(default=None, gt=0)
    lr: float | None = Field(default=None, gt=0)
    warmup_steps: int | None = Field(default=None, ge=0)
    global_batch_size: int | None = Field(default=None, gt=0)


class TokenizerTrainingConfig(Section):
    """Train a byte-level BPE tokenizer (Qwen2.5 control tokens, ChatML template) on the
    corpus sources before pretraining a preset model."""

    enabled: bool = False
    # Learned tokens including the 256 byte tokens; the 22 control tokens come on top.
    vocab_size: int = Field(default=4096, ge=257)
    min_frequency: int = Field(default=2, ge=1)
    # Train on at most this many documents (spread over the sources); null = all.
    max_documents: int | None = Field(default=None, gt=0)


def _cosine_scheduler() -> SchedulerConfig:
    return SchedulerConfig(name="cosine", warmup_steps=0, min_lr_ratio=0.1)


@register_stage_config("pretrain")
class PretrainConfig(StageConfig):
    stage: Literal["pretrain"] = "pretrain"
    data: PretrainDataConfig  # type: ignore[assignment]
    tokenizer_training: TokenizerTrainingConfig = Field(default_factory=TokenizerTrainingConfig)
    phases: list[PretrainPhase] = Field(min_length=1)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    scheduler: SchedulerConfig = Field(default_factory=_cosine_scheduler)

    def worker_groups(self) -> list[GroupDemand]:
        return [self.trainer.worker_group()]

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be unique, got {names}")
        t = self.trainer
        for p in self.phases:
            gb = p.global_batch_size or t.global_batch_size
            if gb % (t.num_workers * t.micro_batch_size):
                raise ValueError(
                    f"phase {p.name!r}: global_batch_size {gb} is not a multiple of "
                    f"num_workers * micro_batch_size ({t.num_workers * t.micro_batch_size})"
                )
        if self.model.preset is not None and self.tokenizer.path is None and not self.tokenizer_training.enabled:
            raise ValueError("a preset model needs a tokenizer: set tokenizer.path or tokenizer_training.enabled: true")
        if self.model.path is not None and self.tokenizer_training.enabled:
            raise ValueError("tokenizer_training is for a new (preset) model; a model.path brings its own tokenizer")
        return self

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)


class ChatDataConfig(Section):
    """Chat data for SFT: JSONL rows with a `messages` list of {role, content}."""

    synthetic: SyntheticDataConfig | None = None
    train_files: list[InputPath] = Field(min_length=1)
    eval_files: list[InputPath] = Field(default_factory=list)
    messages_key: str = "messages"
    # Tokens per packed sequence (the report's SFT uses 8K; tiny configs use less).
    max_length: int = Field(default=8192, gt=1)
    # A conversation longer than max_length: "truncate" keeps its first max_length tokens,
    # "drop" leaves it out. Either way it is counted and reported.
    overlong: Literal["truncate", "drop"] = "drop"
    # Several conversations per sequence, each attending only to itself (position ids
    # restart per conversation); false: one conversation per (padded) sequence.
    packing: bool = True
    seed: int = 0


class SFTTrainerConfig(TrainerConfig):
    # Passes over the training conversations (fractions allowed); max_steps caps it.
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, gt=0)


def _sft_scheduler() -> SchedulerConfig:
    return SchedulerConfig(name="cosine", warmup_steps=0, min_lr_ratio=0.1)


@register_stage_config("sft")
class SFTConfig(StageConfig):
    stage: Literal["sft"] = "sft"
    data: ChatDataConfig  # type: ignore[assignment]
    trainer: SFTTrainerConfig = Field(default_factory=SFTTrainerConfig)
    scheduler: SchedulerConfig = Field(default_factory=_sft_scheduler)

    def worker_groups(self) -> list[GroupDemand]:
        return [self.trainer.worker_group()]

    @model_validator(mode="after")
    def _needs_checkpoint(self) -> SFTConfig:
        if self.model.path is None:
            raise ValueError("sft fine-tunes an existing model: set model.path (e.g. a pretrain run's final/ folder)")
        return self


# ---------------------------------------------------------------------------------------------
# reward model


class SyntheticPreferencesConfig(Section):
    """Write the synthetic preference set (qwen25_rl.data.synth_preferences) into `out_dir`
    before the stage runs: pairs labelled per criterion, split by prompt."""

    out_dir: OutputPath
    seed: int = 0
    num_prompts: int = Field(default=400, ge=4)
    heldout_fraction: float = Field(default=0.25, gt=0, lt=1)
    missing_label_fraction: float = Field(default=0.1, ge=0, lt=1)


class PreferenceDataConfig(Section):
    """Preference pairs (JSONL or Parquet): `prompt`, `chosen`, `rejected` as in DPO pair files,
    `preferences: {criterion: 1 | -1 | 0 | "chosen" | "rejected" | "tie" | null}`, optional
    `ratings: {criterion: {chosen: x, rejected: y}}` and `margin` (qwen25_rl.data.preferences)."""

    synthetic: SyntheticPreferencesConfig | None = None
    train_files: list[InputPath] = Field(min_length=1)
    eval_files: list[InputPath] = Field(default_factory=list)
    prompt_key: str = "prompt"
    chosen_key: str = "chosen"
    rejected_key: str = "rejected"
    margin_key: str = "margin"
    apply_chat_template: bool = True
    # Tokens of prompt + response; a longer pair is dropped, truncated (counted) or an error.
    max_length: int = Field(default=1024, gt=1)
    on_long: Literal["drop", "truncate", "error"] = "drop"
    seed: int = 0


def _default_criteria() -> list[str]:
    from qwen25_rl.algorithms.reward_model import DEFAULT_CRITERIA

    return list(DEFAULT_CRITERIA)


class RewardHeadConfig(Section):
    """The score head: one output per criterion, combined into one reward by `weights`
    (null: every criterion weighs 1)."""

    criteria: list[str] = Field(default_factory=_default_criteria, min_length=1)
    weights: dict[str, float] | None = None
    # Pull sum of chosen and rejected scores towards 0 (reward centering, Eisenstein et al. 2023).
    centering_coef: float = Field(default=0.0, ge=0)
    # Use a pair's `margin` column in the Bradley-Terry loss (Llama-2 style).
    use_margin: bool = True
    # Weight of the squared-error loss on given ratings beside the preference loss.
    rating_weight: float = Field(default=1.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> RewardHeadConfig:
        if len(set(self.criteria)) != len(self.criteria):
            raise ValueError(f"reward_model.criteria has duplicates: {self.criteria}")
        unknown = sorted(set(self.weights or {}) - set(self.criteria))
        if unknown:
            raise ValueError(f"reward_model.weights name {unknown}, which are not among reward_model.criteria {self.criteria}")
        return self

    def resolved_weights(self) -> dict[str, float]:
        return {c: float((self.weights or {}).get(c, 1.0 if self.weights is None else 0.0)) for c in self.criteria}


@register_stage_config("rm")
class RMConfig(StageConfig):
    stage: Literal["rm"] = "rm"
    data: PreferenceDataConfig  # type: ignore[assignment]
    reward_model: RewardHeadConfig = Field(default_factory=RewardHeadConfig)
    trainer: SFTTrainerConfig = Field(default_factory=SFTTrainerConfig)
    scheduler: SchedulerConfig = Field(default_factory=_sft_scheduler)

    def worker_groups(self) -> list[GroupDemand]:
        return [self.trainer.worker_group()]

    @model_validator(mode="after")
    def _needs_policy(self) -> RMConfig:
        if self.model.path is None:
            raise ValueError("rm starts from a trained policy: set model.path (e.g. an SFT run's final/ folder)")
        if self.trainer.loss_chunk_size is not None:
            raise ValueError("trainer.loss_chunk_size is for language-model losses; a reward model scores with its small head")
        return self

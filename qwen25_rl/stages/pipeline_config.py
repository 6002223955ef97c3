"""`qwen25-rl pipeline` config: the stages of the recipe in order, each a stage config (a file or
inline) with overrides, starting from an earlier stage's `final/` (`from:`).

    stage: pipeline
    output_dir: runs/tiny-pipeline      # stage <name> runs in <output_dir>/<name>
    stages:
      - name: pretrain
        config: pretrain.yaml           # relative to this file's folder
      - name: sft
        config: sft.yaml
        from: pretrain                  # model.path = <output_dir>/pretrain/final
      - name: grpo
        config: grpo.yaml
        from: sft
        overrides:
          algorithm.total_steps: 10
          reward_models: [{name: rm, path: "${rm}", weight: 0.1}]   # ${stage}: its final/ folder
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from qwen25_rl.config.schema import RayConfig, Section
from qwen25_rl.config.storage import OutputPath

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class PipelineStage(Section):
    """One stage of the pipeline. `stage` is its type (a registered pipeline stage: pretrain, sft,
    rm, dpo, grpo, filter, eval); it defaults to `name`, which names the run folder."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    name: str
    stage: str | None = None
    # A stage config file (relative to the pipeline file's folder, or absolute), or the config inline.
    config: str | dict[str, Any]
    # Dotted keys set on the stage config (values as in YAML); strings may name an earlier
    # stage's output as ${name} (its final/ folder) or ${name.run_dir} (its run folder).
    overrides: dict[str, Any] = Field(default_factory=dict)
    # The stage whose final/ folder this stage starts from (its model.path).
    from_: str | None = Field(default=None, alias="from")

    @field_validator("name")
    @classmethod
    def _folder_name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError(f"{v!r} is not a folder name (letters, digits, '_', '.', '-')")
        return v

    @property
    def kind(self) -> str:
        return self.stage or self.name


class PipelineEvalConfig(Section):
    """Held-out accuracy of each model the pipeline makes, measured the same way after every
    stage named in `after`: an `eval` stage (`qwen25-rl eval`'s config, by path or inline, with
    overrides) on that stage's final/ folder, run in <output_dir>/eval-<stage>. The pipeline's
    report tabulates them."""

    config: str | dict[str, Any]
    overrides: dict[str, Any] = Field(default_factory=dict)
    # Stage names; null: every stage whose type makes a policy model (sft, dpo, grpo).
    after: list[str] | None = None


class PipelineConfig(Section):
    stage: str = "pipeline"
    # As logging.storage_path of every stage (see qwen25_rl.config.storage).
    storage_path: str | None = None
    output_dir: OutputPath = "runs/pipeline"
    # One Ray for every stage (an embedded one sized for the largest stage; RAY_ADDRESS joins a cluster).
    ray: RayConfig = Field(default_factory=RayConfig)
    # As logging.third_party_logs: vLLM / Ray Train INFO logs on the console.
    third_party_logs: bool = False
    evaluation: PipelineEvalConfig | None = None
    stages: list[PipelineStage] = Field(min_length=1)

    @model_validator(mode="after")
    def _order(self) -> PipelineConfig:
        seen: list[str] = []
        for s in self.stages:
            if s.name in seen:
                raise ValueError(f"stages: two stages are named {s.name!r}")
            if s.from_ is not None and s.from_ not in seen:
                where = "names no stage" if s.from_ not in {x.name for x in self.stages} else "is not an earlier stage"
                raise ValueError(f"stages.{s.name}.from: {s.from_!r} {where} (stages start from an earlier stage's final/)")
            seen.append(s.name)
        if self.evaluation is not None:
            unknown = sorted(set(self.evaluation.after or []) - set(seen))
            if unknown:
                raise ValueError(f"evaluation.after: {', '.join(map(repr, unknown))} names no stage")
        if self.stage != "pipeline":
            raise ValueError(f"stage: a pipeline file says 'stage: pipeline', not {self.stage!r}")
        return self

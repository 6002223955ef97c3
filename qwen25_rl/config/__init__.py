"""Typed configs: schema (pydantic, extra="forbid") and the YAML loader with overrides."""

from qwen25_rl.config.loader import ConfigError, dump_config, load_config, parse_override
from qwen25_rl.config.schema import (
    STAGE_CONFIGS,
    CheckpointConfig,
    DataConfig,
    LoggingConfig,
    ModelConfig,
    OptimizerConfig,
    RayConfig,
    SchedulerConfig,
    Section,
    StageConfig,
    TokenizerConfig,
    register_stage_config,
)

__all__ = [
    "STAGE_CONFIGS",
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "LoggingConfig",
    "ModelConfig",
    "OptimizerConfig",
    "RayConfig",
    "SchedulerConfig",
    "Section",
    "StageConfig",
    "TokenizerConfig",
    "dump_config",
    "load_config",
    "parse_override",
    "register_stage_config",
]

"""Qwen2-architecture models: size presets, tokenizer, build/load/save in HF format."""

from qwen25_rl.models.factory import (
    build_model,
    choose_attn_implementation,
    initial_model_folder,
    load_model,
    load_tokenizer,
    padded_vocab_size,
    qwen2_config,
    save_pretrained,
)
from qwen25_rl.models.presets import PRESETS, ModelPreset, count_parameters, get_preset

__all__ = [
    "PRESETS",
    "ModelPreset",
    "build_model",
    "choose_attn_implementation",
    "count_parameters",
    "get_preset",
    "initial_model_folder",
    "load_model",
    "load_tokenizer",
    "padded_vocab_size",
    "qwen2_config",
    "save_pretrained",
]

"""Preset shapes against the published Qwen2.5 sizes, and the counting formula against torch."""

from __future__ import annotations

import pytest
import torch

from qwen25_rl.models import PRESETS, build_model, count_parameters, get_preset, qwen2_config

QWEN25 = [name for name, p in PRESETS.items() if p.published_params]


def test_all_seven_qwen25_sizes_are_presets():
    assert QWEN25 == [f"qwen2.5-{s}" for s in ["0.5b", "1.5b", "3b", "7b", "14b", "32b", "72b"]]


@pytest.mark.parametrize("name", QWEN25)
def test_parameter_count_within_5_percent_of_published(name):
    p = PRESETS[name]
    assert count_parameters(p) == pytest.approx(p.published_params, rel=0.05)


def test_formula_matches_instantiated_tiny_model():
    model = build_model("tiny")
    assert sum(t.numel() for t in model.parameters()) == count_parameters(get_preset("tiny"))


@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "qwen2.5-7b"])
def test_formula_matches_meta_device_model(name):
    """Meta tensors have shapes but no storage: exact counts of big models without memory."""
    from transformers import Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(qwen2_config(name))
    # A tied head shares the embedding tensor, which parameters() yields once.
    assert sum(t.numel() for t in model.parameters()) == count_parameters(PRESETS[name])


def test_tiny_preset_fits_vllm_cpu_and_size_budget():
    p = get_preset("tiny")
    assert p.head_dim == 64  # vLLM's CPU attention refuses head_dim 16
    assert 1e6 <= count_parameters(p) <= 5e6


def test_qwen25_shapes_use_gqa_and_million_rope_base():
    for name in QWEN25:
        p = PRESETS[name]
        assert p.num_attention_heads % p.num_key_value_heads == 0 and p.num_key_value_heads < p.num_attention_heads
        assert p.rope_theta == 1_000_000.0 and p.head_dim == 128 or name == "qwen2.5-0.5b" and p.head_dim == 64


def test_unknown_preset_suggests_close_names():
    with pytest.raises(KeyError, match="did you mean qwen2.5-7b"):
        get_preset("qwen2.5-7")

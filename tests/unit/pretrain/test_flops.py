"""FLOPs accounting for tokens/s -> TFLOP/s -> MFU."""

from __future__ import annotations

import torch

from qwen25_rl.models import build_model, qwen2_config
from qwen25_rl.pretrain.flops import device_peak_tflops, matmul_params, train_flops_per_token


def test_matmul_params_count_every_linear_weight_of_the_model():
    model = build_model("tiny", vocab_size=320)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert matmul_params(model.config) == linear  # lm_head counted although tied


def test_flops_per_token_adds_attention_over_the_context():
    cfg = qwen2_config("qwen2.5-0.5b")
    assert train_flops_per_token(cfg, 1024) - train_flops_per_token(cfg, 0) == 12 * 24 * 896 * 1024
    # ~0.49B parameters minus the 136M embedding lookup, plus the (tied) output projection.
    assert 2.9e9 < train_flops_per_token(cfg, 0) < 3.0e9


def test_peak_is_known_only_for_listed_gpus_in_bf16():
    assert device_peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.0
    assert device_peak_tflops("NVIDIA A100-SXM4-80GB", "bf16") == 312.0
    assert device_peak_tflops(None, "bf16") is None
    assert device_peak_tflops("NVIDIA H100", "fp32") is None

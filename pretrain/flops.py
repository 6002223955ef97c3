"""Model FLOPs per token and model FLOPs utilisation (MFU).

Training FLOPs per token = 6 * (matmul parameters) + 12 * layers * hidden * context
(forward + backward; the second term is attention scores and weighted values, as in the
PaLM paper's appendix B). Matmul parameters exclude the input embedding (a lookup) but
include the output projection, even when it is tied to the embedding. The attention term
uses the full row length, an upper bound when packed documents are masked from each other.
"""

from __future__ import annotations

# Dense bf16 tensor-core peak per device (TFLOP/s, no sparsity), by substring of the CUDA
# device name. Vendor data sheets.
GPU_PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
}


def matmul_params(config) -> int:
    """Parameters that take part in a matmul per token for a Qwen2-style config."""
    h = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    kv = config.num_key_value_heads * head_dim
    attn = h * heads * head_dim + 2 * h * kv + heads * head_dim * h
    mlp = 3 * h * config.intermediate_size
    return config.num_hidden_layers * (attn + mlp) + config.vocab_size * h


def train_flops_per_token(config, context: int) -> float:
    h = config.hidden_size
    return 6.0 * matmul_params(config) + 12.0 * config.num_hidden_layers * h * context


def device_peak_tflops(device_name: str | None, precision: str) -> float | None:
    """Known bf16 peak for a GPU name; None for CPUs and unknown devices (MFU omitted)."""
    if not device_name or precision != "bf16":
        return None
    for key, peak in GPU_PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return peak
    return None

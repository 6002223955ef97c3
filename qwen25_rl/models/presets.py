"""Named Qwen2-architecture shapes: the published Qwen2.5 sizes and small CPU-sized ones.

The Qwen2.5 shapes are the dense base models of the Qwen2.5 report (hidden size, layers,
attention heads, KV heads, MLP width, vocabulary, tied embeddings, RoPE base). They are data:
tests count their parameters from the shape without instantiating anything big.

`tiny` is for CPU tests and the demo: head_dim 64 (vLLM's CPU attention refuses 16), 2
layers, about 2M parameters with a few-thousand-token vocabulary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from qwen25_rl.errors import UserError

# Qwen2.5's vocabulary: 151,643 BPE tokens + 22 control tokens, padded to 151,936 (the small
# models, tied embeddings) or 152,064 (7B and up) rows for efficient sharding.
QWEN25_VOCAB_SMALL = 151_936
QWEN25_VOCAB_LARGE = 152_064


@dataclass(frozen=True)
class ModelPreset:
    name: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 32_768
    rms_norm_eps: float = 1e-6
    # Published total parameter count (Qwen2.5 report, Table 1 / model cards), for checks.
    published_params: float | None = None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `transformers.Qwen2Config`."""
        d = asdict(self)
        d.pop("name")
        d.pop("published_params")
        return d


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in [
        ModelPreset("tiny", 256, 2, 4, 2, 768, 4096, True, rope_theta=10_000.0, max_position_embeddings=2048),
        # The ~20M-parameter shape used by the GRPO benchmark (hidden 512, 8 layers, 8 heads).
        ModelPreset("small-20m", 512, 8, 8, 2, 1536, 4096, True, rope_theta=10_000.0, max_position_embeddings=4096),
        ModelPreset("qwen2.5-0.5b", 896, 24, 14, 2, 4864, QWEN25_VOCAB_SMALL, True, published_params=0.49e9),
        ModelPreset("qwen2.5-1.5b", 1536, 28, 12, 2, 8960, QWEN25_VOCAB_SMALL, True, published_params=1.54e9),
        ModelPreset("qwen2.5-3b", 2048, 36, 16, 2, 11008, QWEN25_VOCAB_SMALL, True, published_params=3.09e9),
        ModelPreset("qwen2.5-7b", 3584, 28, 28, 4, 18944, QWEN25_VOCAB_LARGE, False, published_params=7.61e9),
        ModelPreset("qwen2.5-14b", 5120, 48, 40, 8, 13824, QWEN25_VOCAB_LARGE, False, published_params=14.7e9),
        ModelPreset("qwen2.5-32b", 5120, 64, 40, 8, 27648, QWEN25_VOCAB_LARGE, False, published_params=32.5e9),
        ModelPreset("qwen2.5-72b", 8192, 80, 64, 8, 29568, QWEN25_VOCAB_LARGE, False, published_params=72.7e9),
    ]
}


class UnknownPreset(UserError, KeyError):
    """A model preset name that does not exist (a KeyError too, as a lookup)."""


def get_preset(name: str, **overrides: Any) -> ModelPreset:
    """Look up a preset by name; keyword overrides replace fields (e.g. vocab_size)."""
    if name not in PRESETS:
        import difflib

        close = difflib.get_close_matches(name, list(PRESETS), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownPreset(f"unknown model preset {name!r}{hint}; known presets: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides) if overrides else PRESETS[name]


def count_parameters(p: ModelPreset) -> int:
    """Parameter count of a Qwen2 model of this shape, from the shape alone.

    Per layer: q/k/v projections with bias, o projection without bias, SwiGLU MLP (gate, up,
    down, no bias) and two RMSNorm weights. Plus the embedding, the final norm and, when not
    tied, the output projection.
    """
    h, kv = p.hidden_size, p.num_key_value_heads * p.head_dim
    attn = (h * h + h) + 2 * (h * kv + kv) + h * h
    mlp = 3 * h * p.intermediate_size
    per_layer = attn + mlp + 2 * h
    embed = p.vocab_size * h
    head = 0 if p.tie_word_embeddings else p.vocab_size * h
    return embed + p.num_hidden_layers * per_layer + h + head

"""Build, load and save Qwen2-architecture causal LMs (Hugging Face format, local paths only)."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from qwen25_rl.checkpointing import INITIAL_MODEL, check_published, ensure_initial_model, staging
from qwen25_rl.errors import UserPathError, UserValueError
from qwen25_rl.models.presets import ModelPreset, get_preset

if TYPE_CHECKING:
    from qwen25_rl.config.schema import ModelConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def choose_attn_implementation(requested: str = "auto", device: str | torch.device | None = None) -> str:
    """flash-attention 2 when importable and running on a GPU, SDPA otherwise.

    An explicit request is honoured, except flash_attention_2 without a GPU or without the
    package, which is a clear error rather than a failure deep inside transformers.
    """
    on_gpu = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    has_fa2 = importlib.util.find_spec("flash_attn") is not None
    if requested == "auto":
        return "flash_attention_2" if (on_gpu and has_fa2) else "sdpa"
    if requested == "flash_attention_2" and not (on_gpu and has_fa2):
        why = "no GPU" if not on_gpu else "the flash_attn package is not installed"
        raise UserValueError(f"attn_implementation flash_attention_2 requested but {why}; use 'sdpa' or 'auto'")
    return requested


def qwen2_config(preset: ModelPreset | str, *, vocab_size: int | None = None, **overrides: Any):
    """A `transformers.Qwen2Config` for a preset; `vocab_size` resizes to a tokenizer."""
    from transformers import Qwen2Config

    p = get_preset(preset) if isinstance(preset, str) else preset
    kwargs = p.config_kwargs()
    if vocab_size is not None:
        kwargs["vocab_size"] = vocab_size
    kwargs.update(overrides)
    return Qwen2Config(**kwargs)


def rope_theta_of(config: dict[str, Any]) -> float | None:
    """RoPE base of a saved `config.json` mapping: transformers 5 keeps it under
    `rope_parameters`, older configs at the top level; None when neither has it."""
    theta = (config.get("rope_parameters") or {}).get("rope_theta") or config.get("rope_theta")
    return float(theta) if theta is not None else None


def padded_vocab_size(n_tokens: int, multiple: int = 64) -> int:
    """Round the embedding rows up (as Qwen2.5 pads 151,665 tokens to 151,936)."""
    return -(-n_tokens // multiple) * multiple


def build_model(
    preset: ModelPreset | str,
    *,
    vocab_size: int | None = None,
    seed: int = 0,
    dtype: str = "float32",
    attn_implementation: str = "auto",
    tokenizer=None,
    **overrides: Any,
):
    """A randomly initialised Qwen2ForCausalLM of a preset's shape (deterministic in `seed`).

    With `tokenizer`, the vocabulary is sized to it and the special-token ids are copied into
    the model and generation configs (so generation stops on `<|im_end|>`).
    """
    from transformers import Qwen2ForCausalLM

    if tokenizer is not None and vocab_size is None:
        vocab_size = padded_vocab_size(len(tokenizer))
    config = qwen2_config(preset, vocab_size=vocab_size, **overrides)
    config._attn_implementation = choose_attn_implementation(attn_implementation)
    if tokenizer is not None:
        _set_special_ids(config, tokenizer)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(DTYPES[dtype])
    if tokenizer is not None:
        _set_generation_config(model, tokenizer)
    return model


def _set_special_ids(config, tokenizer) -> None:
    config.eos_token_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    config.pad_token_id = tokenizer.convert_tokens_to_ids(tokenizer.pad_token)
    config.bos_token_id = None


def _set_generation_config(model, tokenizer) -> None:
    from transformers import GenerationConfig

    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model.generation_config = GenerationConfig(eos_token_id=[im_end, eot], pad_token_id=eot, bos_token_id=None)


def load_model(path: str | Path, *, dtype: str = "float32", attn_implementation: str = "auto", device: str | None = None):
    """Load a causal LM from a local Hugging Face folder (never from a hub)."""
    from transformers import AutoModelForCausalLM

    p = Path(path)
    if not (p / "config.json").is_file():
        raise UserPathError(f"{p} is not a Hugging Face model folder (no config.json)")
    model = AutoModelForCausalLM.from_pretrained(
        p,
        dtype=DTYPES[dtype],
        attn_implementation=choose_attn_implementation(attn_implementation, device),
        local_files_only=True,
    )
    return model.to(device) if device else model


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers logs errors only within the block: loading a causal LM's backbone into a
    reward model reports the new score head and the unused lm_head as warnings, which is the intent."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_tokenizer(path: str | Path, padding_side: str | None = None):
    """Load a tokenizer from a local folder."""
    from transformers import AutoTokenizer

    p = Path(path)
    if not p.is_dir():
        raise UserPathError(f"tokenizer folder not found: {p}")
    tok = AutoTokenizer.from_pretrained(p, local_files_only=True)
    if padding_side is not None:
        tok.padding_side = padding_side
    return tok


def save_pretrained(model, tokenizer, out: str | Path) -> Path:
    """Save model (safetensors) + tokenizer as an HF folder, published atomically
    (qwen25_rl.checkpointing.staging): a crash never leaves a half-written folder under `out`,
    and an existing `out` is replaced whole."""
    with staging(Path(out)) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return Path(out)


def initial_model_folder(
    model: ModelConfig, tokenizer_dir: str | Path, run_path: str | Path, announce: Callable[[str], None] | None = None
) -> Path:
    """The (absolute) folder a stage's training starts from: `model.path`, which must be a
    Hugging Face model folder (verified against its manifest when this platform saved it), or
    the `model.preset` built with the tokenizer in `tokenizer_dir` and saved once as the run's
    initial_model/ (qwen25_rl.checkpointing.ensure_initial_model), so every worker and every
    restart loads the same initialisation. `announce` is told when a
    preset was built."""
    if model.path is not None:
        path = Path(model.path)
        if not (path / "config.json").is_file():
            raise UserPathError(f"model.path {path} is not a Hugging Face model folder (no config.json)")
        check_published(path, "model.path")  # another stage's final/ (a pipeline's `from:`) verifies first
        return path.resolve()

    def build(folder: Path) -> None:
        tok = load_tokenizer(tokenizer_dir)
        built = build_model(model.preset, tokenizer=tok, seed=model.seed, attn_implementation=model.attn_implementation)
        built.save_pretrained(folder, safe_serialization=True)
        tok.save_pretrained(folder)
        if announce is not None:
            n = sum(p.numel() for p in built.parameters())
            vocab = built.config.vocab_size
            announce(f"initialised {model.preset} model ({n:,} parameters, vocab {vocab}) -> {Path(run_path) / INITIAL_MODEL}")

    return ensure_initial_model(Path(run_path), build).resolve()


def named_weights(model) -> list[tuple[str, torch.Tensor]]:
    """(Hugging Face name, tensor) of every weight a serving engine needs.

    `named_parameters` yields a tied output projection only once (as the embedding); serving
    engines may keep their own copy (vLLM's CPU backend repacks `lm_head`), so it is listed
    under its own name as well.
    """
    named = list(model.named_parameters())
    names = {n for n, _ in named}
    head = model.get_output_embeddings()
    if head is not None and "lm_head.weight" not in names:
        named.append(("lm_head.weight", head.weight))
    return named

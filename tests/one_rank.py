"""A policy-worker test's spawned process: a small model saved from a config, and a function run
on it as rank 0 of a one-rank gloo group in a fresh process (DeepSpeed keeps process-wide state,
so each such test gets its own), its results read back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from qwen25_rl.actors.base import free_port


def small_model(vocab_size: int, hidden_size: int, num_hidden_layers: int, *, tied: bool = True):
    """A `tiny`-preset model of the given size (one attention head, sdpa), seed 0."""
    from qwen25_rl.models import build_model

    return build_model(
        "tiny",
        seed=0,
        attn_implementation="sdpa",
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=1,
        num_key_value_heads=1,
        max_position_embeddings=hidden_size,
        tie_word_embeddings=tied,
    )


def run_on_one_rank(run: Callable, model, folder: Path):
    """Save `model` under `folder`, call `run(index, port, model_dir, out)` in one spawned process
    and return what it `torch.save`d to `out`."""
    import torch.multiprocessing as mp

    from qwen25_rl.models import save_pretrained

    save_pretrained(model, None, folder / "model")
    out = folder / "results.pt"
    mp.spawn(run, args=(free_port(), str(folder / "model"), str(out)), nprocs=1, join=True)
    return torch.load(out, weights_only=True)

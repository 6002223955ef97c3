"""Shared by the pretraining integration tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def small_pretrain_config():
    return _small_pretrain_config


def _small_pretrain_config(
    root: Path, run_name: str, *, steps: int, trainer: dict[str, Any], weights: tuple[float, float] = (0.5, 0.5), **sections: Any
) -> dict[str, Any]:
    """A pretrain stage config on a small synthetic corpus (arithmetic + code, 400-token BPE,
    64-token rows) under `root`; `sections` replace or add top-level sections."""
    data = root / "data"
    return {
        "stage": "pretrain",
        "model": {"preset": "tiny"},
        "data": {
            "synthetic": {"out_dir": str(data), "arithmetic_train": 200, "arithmetic_heldout": 10, "code_train": 40, "code_heldout": 5},
            "sources": [
                {"name": "arithmetic", "files": [str(data / "pretrain_arithmetic.jsonl")], "weight": weights[0]},
                {"name": "code", "files": [str(data / "pretrain_code.jsonl")], "weight": weights[1]},
            ],
        },
        "tokenizer_training": {"enabled": True, "vocab_size": 400},
        "phases": [{"name": "general", "steps": steps, "seq_len": 64}],
        "trainer": trainer,
        "ray": {"num_cpus": 2, "include_dashboard": False, "object_store_memory_mb": 128},
        "logging": {"output_dir": str(root / "runs"), "run_name": run_name, "tensorboard": False, "ray_metrics": False},
        **sections,
    }

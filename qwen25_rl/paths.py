"""Locations the project reads from outside the repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Real evaluation data (GSM8K, MATH-500, HumanEval, MBPP) is never copied into the repo:
# QWEN25_RL_DATA points at it, defaulting to the workplace's shared folder beside the checkout.
DATA_ENV = "QWEN25_RL_DATA"


def eval_data_dir() -> Path:
    """Folder with gsm8k_test.jsonl, math500_test.jsonl, humaneval.jsonl, mbpp.jsonl."""
    return Path(os.environ.get(DATA_ENV, str(REPO_ROOT.parent / "shared" / "data"))).resolve()


def eval_data_file(name: str) -> Path:
    """A file in the evaluation data folder; FileNotFoundError names the setting to fix."""
    p = eval_data_dir() / name
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: set {DATA_ENV} to the folder holding the evaluation data")
    return p

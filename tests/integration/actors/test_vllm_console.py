"""The rollout worker's vLLM engine keeps the quiet console (qwen25_rl.logs) after its start and
through a weight reload: vLLM configures its logging again when an engine starts (new handlers),
which once let the reload's known-harmless "RotaryEmbedding: Failed to load weights" through on
every step."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.vllm

# In a child process: vLLM binds threads and memory for the life of its process.
RELOAD = textwrap.dedent(
    """
    import logging, sys
    from qwen25_rl.actors.rollout import VLLMEngine
    from qwen25_rl.models import load_model

    engine = VLLMEngine(sys.argv[1], max_model_len=128, enforce_eager=True)
    weights = list(load_model(sys.argv[1]).state_dict().items())
    engine.load_weights(weights)
    import torch
    torch.set_num_threads(1)  # what vLLM's CPU backend warns about once it bound its threads
    engine.load_weights(weights)
    logging.getLogger("vllm.test").warning("a real warning stays visible")
    print("RELOADED", flush=True)
    """
)


def test_known_harmless_vllm_warnings_stay_quiet_after_the_engine_starts_and_reloads(tiny_model_dir):
    proc = subprocess.run([sys.executable, "-c", RELOAD, str(tiny_model_dir)], capture_output=True, text=True, timeout=400)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "RELOADED" in proc.stdout, out[-4000:]
    assert "a real warning stays visible" in out
    assert "RotaryEmbedding: Failed to load weights" not in out, out[-4000:]
    assert "CPU backend doesn't allow" not in out, out[-4000:]

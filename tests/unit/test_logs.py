"""The quiet console: third-party INFO and known-harmless warnings dropped, everything else kept,
and logging.third_party_logs (QWEN25_RL_THIRD_PARTY_LOGS=1) shows it all."""

from __future__ import annotations

import io
import logging

import pytest

from qwen25_rl import logs


@pytest.fixture
def vllm_logger(monkeypatch):
    """A stand-in for vLLM's logger: its own handler, no propagation (as vLLM sets it up)."""
    monkeypatch.delenv(logs.ENV_SWITCH, raising=False)
    logger = logging.getLogger("vllm.model_executor.test_layerwise")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    parent = logging.getLogger("vllm")
    saved = (parent.handlers[:], parent.propagate, parent.level, parent.filters[:])
    parent.handlers, parent.propagate = [handler], False
    parent.setLevel(logging.DEBUG)
    yield logger, stream
    parent.handlers, parent.propagate, parent.level, parent.filters = saved[0], saved[1], saved[2], saved[3]
    for h in (handler,):
        h.filters.clear()


def test_known_harmless_warnings_and_info_are_dropped_and_real_warnings_kept(vllm_logger):
    logger, stream = vllm_logger
    logs.quiet_third_party()
    logger.warning("RotaryEmbedding: Failed to load weights")
    logger.info("Successfully reset prefix cache")
    logger.warning("KV cache is full: preempting requests")
    assert stream.getvalue().splitlines() == ["KV cache is full: preempting requests"]


def test_the_switch_shows_third_party_logs(vllm_logger, monkeypatch):
    logger, stream = vllm_logger
    monkeypatch.setenv(logs.ENV_SWITCH, "1")
    logs.quiet_third_party()
    logger.info("Successfully reset prefix cache")
    assert "Successfully reset prefix cache" in stream.getvalue()

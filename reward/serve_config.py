"""Settings of `qwen25-rl serve-reward` (reward.serve): the Ray Serve deployment, and a learned
reward model to serve. Kept apart from reward.serve so that loading a config does not import
Ray Serve."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from qwen25_rl.reward.registry import Section


class ServeConfig(Section):
    """Ray Serve settings of `qwen25-rl serve-reward`."""

    # Loopback by default: a reward endpoint is not meant for the open network.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    app_name: str = "reward"
    route_prefix: str = "/reward"
    num_replicas: int = Field(default=1, ge=1)
    num_cpus_per_replica: float = Field(default=1.0, ge=0)
    # @serve.batch: samples from concurrent requests are scored together up to this many,
    # waiting at most batch_wait_timeout_s for a batch to fill.
    max_batch_size: int = Field(default=64, ge=1)
    batch_wait_timeout_s: float = Field(default=0.01, ge=0)
    max_ongoing_requests: int = Field(default=64, ge=1)
    # Largest number of samples accepted in one request (HTTP 400 beyond it).
    max_samples_per_request: int = Field(default=4096, ge=1)

    @field_validator("route_prefix")
    @classmethod
    def _slash(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"route_prefix must start with '/', got {v!r}")
        return v


class RewardModelServeConfig(Section):
    """A learned reward model to serve: a local Hugging Face sequence-classification
    checkpoint with one output (the reward is that logit)."""

    path: str
    # chat: score the ChatML rendering of [user: prompt, assistant: response] (what the
    # reward model was trained on); plain: prompt + response as one string.
    template: Literal["chat", "plain"] = "chat"
    max_length: int = Field(default=2048, gt=0)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # Samples per forward pass inside a batch.
    micro_batch_size: int = Field(default=16, ge=1)
    # torch threads of a replica (null: its CPU request, at least 1).
    num_threads: int | None = Field(default=None, ge=1)

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
    # Overload: each replica works on at most max_ongoing_requests requests at a time; up to
    # max_queued_requests more wait in a bounded queue at the HTTP proxy (per proxy); beyond
    # that a request is answered 503 at once, with a Retry-After header of retry_after_s
    # seconds (rounded up; null: no header), instead of piling up until clients time out.
    max_ongoing_requests: int = Field(default=64, ge=1)
    max_queued_requests: int = Field(default=256, ge=1)
    retry_after_s: float | None = Field(default=1.0, ge=0)
    # Largest number of samples accepted in one request (HTTP 400 beyond it).
    max_samples_per_request: int = Field(default=4096, ge=1)

    @field_validator("route_prefix")
    @classmethod
    def _slash(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"route_prefix must start with '/', got {v!r}")
        return v


class RewardModelServeConfig(Section):
    """A learned reward model to serve: an RM folder (`qwen25-rl rm` writes one: a Hugging Face
    sequence-classification checkpoint with one output per criterion, its tokenizer and
    reward_model.json), or any sequence-classification checkpoint (its outputs are criteria of
    weight 1). Scored by `qwen25_rl.reward.learned.RewardModelScorer`, as the RL stages' RM
    workers score: reward = sum of weight x criterion score, breakdown = each criterion's score.
    A folder without a score head (e.g. a causal LM) is refused when the endpoint is deployed."""

    path: str
    # chat: the prompt rendered by the RM's own chat template as one user turn with the
    # assistant turn opened, then the response and the end-of-turn token (what the RM was
    # trained on); plain: prompt + response + end-of-turn token.
    template: Literal["chat", "plain"] = "chat"
    # Tokens per sequence; longer ones keep their end (where the score is read) and are
    # counted (GET stats: truncated). null: the RM's own max_length from reward_model.json
    # (max_position_embeddings for a checkpoint without one).
    max_length: int | None = Field(default=None, gt=0)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # Samples per forward pass inside a batch.
    micro_batch_size: int = Field(default=16, ge=1)
    # torch threads of a replica (null: its CPU request, at least 1).
    num_threads: int | None = Field(default=None, ge=1)

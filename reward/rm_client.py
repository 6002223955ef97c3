"""`reward_model`: score samples by POSTing them to a reward endpoint over HTTP JSON.

The endpoint is what `qwen25-rl serve-reward` deploys on Ray Serve (a learned reward model or
any reward config), or anything else that speaks the same protocol:

    POST <url>   {"samples": [{"prompt": ..., "response": ..., "answer": ..., "data_source": ...,
                               "group_id": ..., "sample_id": ..., "response_length": ...,
                               "extra": {...}}, ...]}
    200          {"results": [{"reward": float | null, "status": "ok" | "error" | "timeout",
                               "error": str | null, "breakdown": {...}}, ...]}   same order
    4xx / 5xx    {"error": "..."}

A failed request (refused connection, HTTP error, a malformed or short answer, the deadline)
marks every sample of that request as error or timeout with the reason; nothing becomes 0.
"""

from __future__ import annotations

import json
import math
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from qwen25_rl.reward.registry import register_reward_factory
from qwen25_rl.reward.types import FunctionOutcome, RewardSample


class RewardModelParams(BaseModel):
    """`reward_model`: client of a reward endpoint (`qwen25-rl serve-reward`) over HTTP JSON."""

    model_config = ConfigDict(extra="forbid")
    url: str
    # Samples per request; the server batches across requests too.
    batch_size: int = Field(default=32, ge=1)
    # Requests in flight at once.
    concurrency: int = Field(default=4, ge=1)
    # Extra tries after a refused connection or an HTTP 5xx (not after a timeout: a slow
    # server would only get slower).
    retries: int = Field(default=2, ge=0)
    retry_backoff_s: float = Field(default=0.5, ge=0)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {v!r}")
        return v


def sample_payload(s: RewardSample) -> dict[str, Any]:
    d = s.to_dict()
    # JSON keys must be strings and values plain; a group id such as a tuple becomes a list.
    return json.loads(json.dumps(d, default=str))


class EndpointError(RuntimeError):
    pass


def post_samples(url: str, samples: list[RewardSample], timeout_s: float, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """POST one request; the server's per-sample result dicts, in order. Raises EndpointError."""
    body = json.dumps({"samples": [sample_payload(s) for s in samples]}).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        detail = e.read()[:500].decode(errors="replace")
        raise EndpointError(f"HTTP {e.code} from {url}: {detail}") from e
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise EndpointError(f"{url} answered with non-JSON: {raw[:200]!r}") from e
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list) or len(results) != len(samples):
        got = f"{len(results)} results" if isinstance(results, list) else f"{str(data)[:200]}"
        raise EndpointError(f"{url} answered {got} for {len(samples)} samples")
    return results


def outcome_from_result(r: Any, url: str) -> FunctionOutcome:
    if not isinstance(r, dict):
        return FunctionOutcome.failed("error", f"{url} returned {type(r).__name__} for a sample, expected an object")
    status = r.get("status", "ok")
    if status != "ok":
        if status not in ("error", "timeout"):
            status = "error"
        return FunctionOutcome.failed(status, f"served reward at {url}: {r.get('error') or status}")
    value = r.get("reward")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return FunctionOutcome.failed("error", f"{url} returned reward {value!r}, expected a finite number")
    details = {"breakdown": r["breakdown"]} if isinstance(r.get("breakdown"), dict) and len(r["breakdown"]) > 1 else None
    return FunctionOutcome(float(value), "ok", None, details)


class HTTPRewardFunction:
    """Batches samples into requests, sends up to `concurrency` at once, maps the answers back."""

    def __init__(self, p: RewardModelParams):
        self.p = p
        self._executor = ThreadPoolExecutor(p.concurrency, thread_name_prefix="reward-http")

    def _request(self, samples: list[RewardSample], timeout_s: float) -> list[FunctionOutcome]:
        deadline = time.monotonic() + timeout_s * len(samples)
        attempt = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return [FunctionOutcome.failed("timeout", f"{self.p.url} did not answer within {timeout_s:g} s per sample")] * len(samples)
            try:
                results = post_samples(self.p.url, samples, left, self.p.headers)
                return [outcome_from_result(r, self.p.url) for r in results]
            except TimeoutError:
                return [FunctionOutcome.failed("timeout", f"{self.p.url} did not answer within {timeout_s:g} s per sample")] * len(samples)
            except urllib.error.URLError as e:
                if isinstance(e.reason, (socket.timeout, TimeoutError)):
                    return [FunctionOutcome.failed("timeout", f"{self.p.url} did not answer within {timeout_s:g} s per sample")] * len(
                        samples
                    )
                err = f"cannot reach {self.p.url}: {e.reason}"
                retry = True
            except EndpointError as e:
                err = str(e)
                retry = err.startswith("HTTP 5")
            except (OSError, ValueError) as e:
                err = f"request to {self.p.url} failed: {type(e).__name__}: {e}"
                retry = True
            if not retry or attempt >= self.p.retries:
                return [FunctionOutcome.failed("error", err + (f" (after {attempt + 1} tries)" if attempt else ""))] * len(samples)
            attempt += 1
            time.sleep(min(self.p.retry_backoff_s * attempt, max(0.0, deadline - time.monotonic())))

    def score_batch(self, samples: list[RewardSample], timeout_s: float) -> list[FunctionOutcome]:
        bs = self.p.batch_size
        chunks = [samples[i : i + bs] for i in range(0, len(samples), bs)]
        out: list[FunctionOutcome] = []
        for part in self._executor.map(lambda c: self._request(c, timeout_s), chunks):
            out.extend(part)
        return out

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


@register_reward_factory("reward_model", params=RewardModelParams)
def build_reward_model_client(p: RewardModelParams) -> HTTPRewardFunction:
    """Reward from an HTTP JSON endpoint (a served reward model or reward config)."""
    return HTTPRewardFunction(p)

"""Serve a reward on Ray Serve: HTTP JSON in, rewards out, batched across requests.

Two backends behind one protocol (the one `reward.rm_client` speaks, see there):
- a reward config (`RewardConfig`: math, code, custom functions, weighted) scored by a
  `RewardScorer` in each replica, so several runs can share one set of sandboxes/verifiers;
- a learned reward model: an RM folder (what `qwen25-rl rm` writes: a sequence-classification
  checkpoint with one output per criterion, or any such checkpoint with one output) scored by
  `qwen25_rl.reward.learned.RewardModelScorer`, the scoring path of the RL stages' RM workers,
  so the endpoint gives the same numbers for the same samples. A sample's reward is the
  combined score (sum of weight x criterion score), its breakdown each criterion's score.

Each request may carry many samples. Requests are cut into pieces of at most max_batch_size
samples that go through a `@serve.batch` method counting samples (batch_size_fn), so the
samples of concurrent requests are scored together (up to max_batch_size, waiting at most
batch_wait_timeout_s) without a per-sample future. `GET <route>` returns what the endpoint
serves and how it has been batching.

Overload: a replica takes at most serve.max_ongoing_requests requests at a time and the proxy
queues at most serve.max_queued_requests more; beyond that a request is answered 503 with
`Retry-After` (serve.retry_after_s) at once, and the endpoint serves normally again when the
load drops (tests/chaos/test_served_reward_overload.py).

Results are raw: a sample whose reward failed comes back with status error/timeout and
reward null; the caller's pool applies its own failure policy.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve

from qwen25_rl.reward.config import RewardConfig
from qwen25_rl.reward.learned import RewardModelScorer, read_info
from qwen25_rl.reward.serve_config import RewardModelServeConfig, ServeConfig
from qwen25_rl.reward.types import RewardResult, RewardSample

log = logging.getLogger("reward.serve")


class _ModelBackend:
    """A learned reward model (an RM folder) scored by `qwen25_rl.reward.learned.RewardModelScorer`,
    the one scoring path the RL stages' RM workers use too: the same tokenisation, truncation
    and numbers. reward = the combined score (sum of weight x criterion score), breakdown = each
    criterion's score."""

    def __init__(self, cfg: RewardModelServeConfig, num_threads: int | None = None):
        import torch

        if num_threads:
            torch.set_num_threads(num_threads)
        self.cfg = cfg
        self.scorer = RewardModelScorer(
            cfg.path, micro_batch_size=cfg.micro_batch_size, max_length=cfg.max_length, template=cfg.template, dtype=cfg.dtype
        )

    def score(self, samples: list[RewardSample]) -> tuple[list[RewardResult], dict[str, int]]:
        try:
            batch = self.scorer.score([s.prompt for s in samples], [s.response for s in samples])
        except Exception as e:  # a bad batch is reported per sample, the replica keeps serving
            err = f"reward model failed: {type(e).__name__}: {e}"
            return [RewardResult(None, {}, "error", err, function_status={"reward_model": "error"}) for _ in samples], {}
        criteria = self.scorer.criteria
        results = [
            RewardResult(total, dict(zip(criteria, row)), "ok", function_status={"reward_model": "ok"})
            for total, row in zip(batch.combined.tolist(), batch.scores.tolist())
        ]
        if batch.truncated:
            log.info(
                "%d of %d samples longer than max_length %d: scored on their last tokens",
                batch.truncated,
                len(samples),
                self.scorer.max_length,
            )
        return results, {"truncated": batch.truncated}

    def close(self) -> None:
        pass


class _ConfigScorer:
    """A RewardConfig scorer returning raw results (the caller applies its failure policy)."""

    def __init__(self, cfg: RewardConfig):
        from qwen25_rl.reward.isolation import limit_memory
        from qwen25_rl.reward.scorer import RewardScorer

        self.scorer = RewardScorer(cfg)
        limit_memory(self.scorer, cfg.pool.memory_limit_mb)
        self.cfg = cfg

    def score(self, samples: list[RewardSample]) -> tuple[list[RewardResult], dict[str, int]]:
        from qwen25_rl.reward.scorer import combine

        raw = self.scorer.score_raw(samples)
        return [combine(s, o, self.cfg) for s, o in zip(samples, raw)], {}

    def close(self) -> None:
        self.scorer.close()


def _num_samples(pieces: list[list[RewardSample]]) -> int:
    return sum(len(p) for p in pieces)


class RewardService:
    """The Serve deployment body (wrapped with serve.deployment in `build_app`)."""

    def __init__(
        self,
        reward_json: dict | None,
        rm_json: dict | None,
        max_batch_size: int,
        batch_wait_timeout_s: float,
        max_samples: int,
        num_cpus: float,
    ):
        if (reward_json is None) == (rm_json is None):
            raise ValueError("serve exactly one of a reward config or a reward model")
        if rm_json is not None:
            rm_cfg = RewardModelServeConfig.model_validate(rm_json)
            self.backend: Any = _ModelBackend(rm_cfg, rm_cfg.num_threads or max(1, int(num_cpus)))
            rm_info = self.backend.scorer.info
            self.info = {
                "kind": "reward_model",
                "path": rm_cfg.path,
                "template": rm_cfg.template,
                "criteria": list(rm_info.criteria),
                "weights": dict(rm_info.weights),
                "max_length": self.backend.scorer.max_length,
            }
        else:
            cfg = RewardConfig.model_validate(reward_json)
            self.backend = _ConfigScorer(cfg)
            self.info = {"kind": "reward", "functions": [{"name": f.label, "type": f.type, "weight": f.weight} for f in cfg.functions]}
        self.max_samples = max_samples
        self.max_batch_size = max_batch_size
        # Served counts (GET shows them): how well requests are being batched together; for a
        # reward model also how many samples were longer than max_length (scored on their end).
        self.stats = {"requests": 0, "samples": 0, "batches": 0, "largest_batch": 0}
        if rm_json is not None:
            self.stats["truncated"] = 0
        self._score_batched.set_max_batch_size(max_batch_size)
        self._score_batched.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.01, batch_size_fn=_num_samples)
    async def _score_batched(self, pieces: list[list[RewardSample]]) -> list[list[dict[str, Any]]]:
        # Items are pieces of requests (lists of samples); batch_size_fn makes max_batch_size
        # count samples, so a batch holds up to that many samples from any requests.
        flat = [s for piece in pieces for s in piece]
        self.stats["batches"] += 1
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(flat))
        # Scoring blocks (model forward, sandbox runs): keep the replica's event loop free.
        scored, counts = await asyncio.to_thread(self.backend.score, flat)
        for key, n in counts.items():
            self.stats[key] = self.stats.get(key, 0) + n
        results = [r.to_dict() for r in scored]
        out, i = [], 0
        for piece in pieces:
            out.append(results[i : i + len(piece)])
            i += len(piece)
        return out

    async def __call__(self, request) -> Any:
        from starlette.responses import JSONResponse

        if request.method == "GET":
            return {**self.info, "stats": dict(self.stats)}
        if request.method != "POST":
            return JSONResponse({"error": f"method {request.method} not allowed; POST samples or GET info"}, status_code=405)
        try:
            body = await request.json()
        except Exception as e:
            return JSONResponse({"error": f"request body is not JSON: {e}"}, status_code=400)
        raw = body.get("samples") if isinstance(body, dict) else None
        if not isinstance(raw, list):
            return JSONResponse({"error": 'expected a JSON object {"samples": [...]}'}, status_code=400)
        if len(raw) > self.max_samples:
            return JSONResponse(
                {"error": f"{len(raw)} samples in one request; the limit is {self.max_samples} (serve.max_samples_per_request)"},
                status_code=400,
            )
        try:
            samples = [RewardSample.from_dict(d, f"samples[{i}]") for i, d in enumerate(raw)]
        except (TypeError, ValueError) as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        self.stats["requests"] += 1
        self.stats["samples"] += len(samples)
        size = self.max_batch_size
        parts = await asyncio.gather(*(self._score_batched(samples[i : i + size]) for i in range(0, len(samples), size)))
        return {"results": [r for part in parts for r in part]}

    def __del__(self):
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.close()


def build_app(serve_cfg: ServeConfig, reward_cfg: RewardConfig | None = None, rm_cfg: RewardModelServeConfig | None = None):
    """The Serve application for a reward config or a reward model (exactly one)."""
    deployment = serve.deployment(
        RewardService,
        name=f"{serve_cfg.app_name}-service",
        num_replicas=serve_cfg.num_replicas,
        ray_actor_options={"num_cpus": serve_cfg.num_cpus_per_replica},
        max_ongoing_requests=serve_cfg.max_ongoing_requests,
        # A bounded queue at the proxy: beyond it Serve's router raises BackPressureError,
        # which the HTTP proxy answers with this status (and Retry-After), not with a 500.
        max_queued_requests=serve_cfg.max_queued_requests,
        backpressure_config={"status_code": 503, "retry_after_s": serve_cfg.retry_after_s},
    )
    return deployment.bind(
        reward_cfg.model_dump(mode="json") if reward_cfg is not None else None,
        rm_cfg.model_dump(mode="json") if rm_cfg is not None else None,
        serve_cfg.max_batch_size,
        serve_cfg.batch_wait_timeout_s,
        serve_cfg.max_samples_per_request,
        serve_cfg.num_cpus_per_replica,
    )


def endpoint_url(serve_cfg: ServeConfig) -> str:
    host = "127.0.0.1" if serve_cfg.host in ("0.0.0.0", "::", "") else serve_cfg.host
    return f"http://{host}:{serve_cfg.port}{serve_cfg.route_prefix}"


def deploy(serve_cfg: ServeConfig, reward_cfg: RewardConfig | None = None, rm_cfg: RewardModelServeConfig | None = None) -> str:
    """Start Serve's HTTP proxy on serve_cfg.host:port (Ray must be initialised), deploy, and
    return the endpoint URL. Start-up problems (plugin, checkpoint) are raised here."""
    if reward_cfg is not None:
        from qwen25_rl.reward.scorer import check_plugins

        check_plugins(reward_cfg)
    if rm_cfg is not None:
        read_info(rm_cfg.path)  # not a model folder, or no score head: a user error naming the folder
    serve.start(http_options={"host": serve_cfg.host, "port": serve_cfg.port})
    serve.run(build_app(serve_cfg, reward_cfg, rm_cfg), name=serve_cfg.app_name, route_prefix=serve_cfg.route_prefix)
    return endpoint_url(serve_cfg)

"""Rollout engines (vLLM and transformers) in Ray actors, and weight sync from a policy.

The same tests run against both registered engines. The policy here is a plain torch model in
an actor (the DeepSpeed policy worker has its own tests); what is checked is that after a
sync the rollout engine samples from exactly the policy's distribution.
"""

from __future__ import annotations

import os

import pytest
import ray
import torch

from qwen25_rl.actors.base import DistributedWorker
from qwen25_rl.actors.rollout import RolloutWorker, SamplingSettings
from qwen25_rl.actors.weight_sync import WeightSource, get_weight_sync, plan_buckets
from qwen25_rl.actors.worker_group import WorkerGroup
from qwen25_rl.batch import TensorBatch

# float32 on CPU: vLLM's kernels and torch's SDPA agree to about 1e-5 per token on the tiny
# model; 2e-3 leaves room for accumulation order while still catching stale weights (a
# perturbation moves log-probs by ~1e-1).
LOGPROB_TOL = 2e-3


class TorchPolicy(DistributedWorker, WeightSource):
    def __init__(self, model_path: str):
        super().__init__(torch_threads=1)
        from qwen25_rl.models import load_model

        self.model = load_model(model_path).eval()

    def perturb(self, seed: int, scale: float = 0.05) -> None:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * scale)

    def sync_weights(self):
        from qwen25_rl.models.factory import named_weights

        return named_weights(self.model)

    def score(self, batch: TensorBatch, temperature: float) -> torch.Tensor:
        from qwen25_rl.models.scoring import response_log_probs

        with torch.no_grad():
            lp, _ = response_log_probs(
                self.model,
                batch["prompt_ids"],
                batch["prompt_mask"],
                batch["response_ids"],
                batch["response_mask"],
                temperature=temperature,
            )
        return lp * batch["response_mask"]


@pytest.fixture(scope="module")
def ray_cluster(local_ray):
    """The session's local Ray (tests/conftest.py)."""
    return local_ray


# "vllm-compiled": torch.compile'd vLLM (the GPU default, with CUDA graphs there); its weight
# reloads must reach the compiled graph as well.
@pytest.fixture(
    scope="module",
    params=["hf", pytest.param("vllm", marks=pytest.mark.vllm), pytest.param("vllm-compiled", marks=[pytest.mark.vllm, pytest.mark.slow])],
)
def setup(request, ray_cluster, tiny_model_dir):
    name = request.param
    engine = name.removesuffix("-compiled")
    engine_kwargs = {"max_model_len": 256} | ({"enforce_eager": False} if name.endswith("-compiled") else {})
    policy = WorkerGroup(TorchPolicy, 1, name=f"test/policy-{name}", num_cpus=1, init_kwargs={"model_path": str(tiny_model_dir)})
    rollout = WorkerGroup(
        RolloutWorker,
        1,
        name=f"test/rollout-{name}",
        num_cpus=1,
        distributed=False,
        init_kwargs={"engine": engine, "model_path": str(tiny_model_dir), "engine_kwargs": engine_kwargs, "torch_threads": 1},
    )
    from qwen25_rl.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    prompts = [tok.encode(t) for t in ["a = 1", "def f(x):", "The answer is"]]
    yield engine, policy, rollout, prompts, tok
    rollout.shutdown()
    policy.shutdown()


# No min_new_tokens in these comparisons: it masks the end tokens, so the sampler's
# distribution differs from the model's by log(1 - p_end) (~2e-3 on the tiny model).
def _max_gap(policy, batch, temperature):
    ours = policy.run_rank0("score", batch, temperature)
    mask = batch["response_mask"].bool()
    return (ours - batch["sampler_logprobs"]).abs()[mask].max().item()


def test_generate_returns_n_samples_per_prompt_with_version(setup):
    engine, policy, rollout, prompts, tok = setup
    settings = SamplingSettings(n=3, max_new_tokens=8, min_new_tokens=8, temperature=1.0, seed=0)
    batch = rollout.run_rank0("generate", prompts, settings)
    assert len(batch) == 9
    assert batch.meta["prompt_index"] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert batch["response_mask"].sum(1).tolist() == [8] * 9
    assert set(batch.meta["finish_reason"]) == {"length"}
    assert (batch["sampler_logprobs"] <= 0).all()
    assert batch["policy_version"].tolist() == [0] * 9
    ids = [row[mask.bool()].tolist() for row, mask in zip(batch["response_ids"], batch["response_mask"])]
    assert batch.meta["response_text"] == [tok.decode(x, skip_special_tokens=True) for x in ids]
    # Samples of one prompt differ (sampling, not n copies of one draw).
    assert len({tuple(r) for r in batch["response_ids"][:3].tolist()}) > 1


def test_same_seed_reproduces_samples(setup):
    engine, policy, rollout, prompts, tok = setup
    settings = SamplingSettings(n=2, max_new_tokens=6, min_new_tokens=6, seed=123)
    a = rollout.run_rank0("generate", prompts, settings)
    b = rollout.run_rank0("generate", prompts, settings)
    assert torch.equal(a["response_ids"], b["response_ids"])


def test_seeded_batch_larger_than_one_step_token_budget(setup):
    """More prompt tokens than one engine step takes (8192 on CPU): every prompt is still
    answered, reproducibly. (vLLM's chunked prefill rewinds seeded generators, which CPU
    generators cannot do: a crash before the engine scheduled prompts whole.)"""
    engine, policy, rollout, prompts, tok = setup
    long_prompts = [(p * 100)[:200] for p in prompts] * 15  # 45 x 200 = 9000 prompt tokens
    settings = SamplingSettings(n=2, max_new_tokens=3, min_new_tokens=3, seed=5)
    a = rollout.run_rank0("generate", long_prompts, settings)
    assert len(a) == 90 and a["response_mask"].sum(1).tolist() == [3] * 90
    b = rollout.run_rank0("generate", long_prompts, settings)
    assert torch.equal(a["response_ids"], b["response_ids"])


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_match_policy_forward(setup, temperature):
    engine, policy, rollout, prompts, tok = setup
    batch = rollout.run_rank0("generate", prompts, SamplingSettings(n=2, max_new_tokens=10, temperature=temperature, seed=1))
    assert _max_gap(policy, batch, temperature) < LOGPROB_TOL


@pytest.mark.parametrize("transport", ["object_store", "broadcast"])
def test_after_sync_rollout_samples_from_new_policy(setup, transport):
    engine, policy, rollout, prompts, tok = setup
    sync = get_weight_sync(transport, **({"bucket_mb": 1.0} if transport == "broadcast" else {}))
    sync.setup(policy, rollout)
    settings = SamplingSettings(n=2, max_new_tokens=10, seed=2)
    stale = rollout.run_rank0("generate", prompts, settings)
    policy.run("perturb", seed=hash(transport) % 1000)
    # The rollout still has the old weights: its log-probs no longer match the policy.
    assert _max_gap(policy, stale, 1.0) > 10 * LOGPROB_TOL
    version = 7 if transport == "object_store" else 8
    sync.sync(policy, rollout, version)
    fresh = rollout.run_rank0("generate", prompts, settings)
    assert _max_gap(policy, fresh, 1.0) < LOGPROB_TOL
    assert fresh["policy_version"].tolist() == [version] * len(fresh)


def test_bucket_plan_splits_by_size_and_dtype():
    named = [("a", torch.zeros(256)), ("b", torch.zeros(256)), ("c", torch.zeros(10, dtype=torch.float16)), ("d", torch.zeros(1000))]
    layout = plan_buckets(named, bucket_mb=1500 / 2**20)  # 1500 bytes
    assert [[n for n, _ in params] for _, params in layout] == [["a"], ["b"], ["c"], ["d"]]
    layout = plan_buckets(named, bucket_mb=1.0)
    assert [(d, [n for n, _ in params]) for d, params in layout] == [
        ("torch.float32", ["a", "b"]),
        ("torch.float16", ["c"]),
        ("torch.float32", ["d"]),
    ]


@pytest.mark.vllm
def test_vllm_worker_computes_with_the_threads_asked_for(ray_cluster, tiny_model_dir):
    """`rollout.torch_threads` (engine `cpu_threads`) beats Ray's OMP_NUM_THREADS (the CPU
    request, 1 here) and survives the engine start: vLLM's CPU worker turns
    torch.set_num_threads into a no-op, so the number must be set before it."""
    group = WorkerGroup(
        RolloutWorker,
        1,
        name="test/rollout-threads",
        num_cpus=1,
        distributed=False,
        init_kwargs={"engine": "vllm", "model_path": str(tiny_model_dir), "engine_kwargs": {"max_model_len": 128, "cpu_threads": 2}},
    )
    try:
        threads = ray.get(group.workers[0].__ray_call__.remote(lambda self: (os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads())))
        assert threads == ("1", 2)
    finally:
        group.shutdown()

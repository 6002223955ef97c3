"""PolicyWorker / ReferenceWorker on Ray: scoring, rank/micro-batch invariance of an update
(DDP and DeepSpeed ZeRO-2 over gloo), checkpoint round trip."""

from __future__ import annotations

import pytest
import ray
import torch

from qwen25_rl.actors.policy import LossSettings, PolicyWorker, ReferenceWorker, TrainSettings
from qwen25_rl.actors.worker_group import WorkerGroup
from qwen25_rl.batch import TensorBatch


@pytest.fixture(scope="module")
def ray_cluster(local_ray):
    """The session's local Ray (tests/conftest.py)."""
    return local_ray


def make_batch(vocab: int, n: int = 8, p_len: int = 5, r_len: int = 7, seed: int = 0) -> TensorBatch:
    g = torch.Generator().manual_seed(seed)
    prompt_mask = torch.ones(n, p_len, dtype=torch.long)
    prompt_mask[::3, :2] = 0  # some left padding
    response_mask = torch.zeros(n, r_len, dtype=torch.long)
    for i in range(n):
        response_mask[i, : 1 + (i * 3) % r_len] = 1  # ragged lengths
    return TensorBatch(
        {
            "prompt_ids": torch.randint(0, vocab, (n, p_len), generator=g),
            "prompt_mask": prompt_mask,
            "response_ids": torch.randint(0, vocab, (n, r_len), generator=g),
            "response_mask": response_mask,
            "advantages": torch.randn(n, generator=g),
        }
    )


def policy_group(model_dir, n, name, **settings) -> WorkerGroup:
    # Adam with eps=1 is plain SGD for these small gradients (update = lr * g / (|g| + 1)), so a
    # wrongly scaled gradient shows in the weights; with a tiny eps Adam's first step is
    # lr * sign(g) and would hide any scale error.
    settings.setdefault("eps", 1.0)
    s = TrainSettings(lr=1.0, grad_clip=None, **settings)
    g = WorkerGroup(PolicyWorker, n, name=name, num_cpus=0.5, init_kwargs={"model_path": str(model_dir), "settings": s, "torch_threads": 1})
    g.run("init_model")
    return g


def one_update(group: WorkerGroup, batch: TensorBatch, loss: LossSettings) -> tuple[dict, dict]:
    old = TensorBatch.cat(group.run_sharded("log_probs", batch))["log_probs"]
    metrics = group.run_sharded("train", batch.with_tensors(old_log_probs=old), loss=loss, lr=1.0)[0]
    weights = dict(group.run("sync_weights")[0])
    return metrics, weights


def max_weight_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_reference_and_policy_score_identically(ray_cluster, tiny_model_dir):
    ref = WorkerGroup(ReferenceWorker, 1, name="t/ref", num_cpus=0.5, init_kwargs={"model_path": str(tiny_model_dir)}, distributed=False)
    pol = policy_group(tiny_model_dir, 1, "t/pol-score", strategy="ddp")
    try:
        ref.run("init_model")
        batch = make_batch(1000)
        a = ref.run_rank0("log_probs", batch)["log_probs"]
        b = pol.run_rank0("log_probs", batch)["log_probs"]
        assert torch.allclose(a, b, atol=1e-6)
        assert (a[batch["response_mask"] == 0] == 0).all() and (a[batch["response_mask"] == 1] < 0).all()
    finally:
        ref.shutdown()
        pol.shutdown()


@pytest.mark.parametrize("strategy", ["ddp", pytest.param("deepspeed", marks=pytest.mark.slow)])
def test_update_is_invariant_to_ranks_and_micro_batches(ray_cluster, tiny_model_dir, strategy):
    """Optimizer steps on 8 samples: 1 rank x 1 micro-batch of 8 == 2 ranks x 2 micro-batches of 2,
    for each aggregation mode in turn (a later step starts from the identical weights and Adam
    state the previous step left in both groups, so it also covers non-empty optimizer state)."""
    from qwen25_rl.models import load_model
    from qwen25_rl.models.factory import named_weights

    before = {k: v.detach() for k, v in named_weights(load_model(tiny_model_dir))}
    big = policy_group(tiny_model_dir, 1, f"t/big-{strategy}", strategy=strategy, micro_batch_size=8)
    split = policy_group(tiny_model_dir, 2, f"t/split-{strategy}", strategy=strategy, micro_batch_size=2)
    try:
        for step, agg in enumerate(["token-mean", "seq-mean-token-mean"]):
            loss = LossSettings(loss_agg_mode=agg, clip_low=0.2, clip_high=0.28)
            batch = make_batch(1000, n=8, seed=10 + step)
            m1, w1 = one_update(big, batch, loss)
            m2, w2 = one_update(split, batch, loss)
            assert m1["policy/optimizer_steps"] == 1 and m2["policy/optimizer_steps"] == 1, agg
            assert m1["policy/pg_loss"] == pytest.approx(m2["policy/pg_loss"], abs=1e-6), agg
            moved = max_weight_diff(w1, before)
            assert moved > 1e-3, f"{agg}: the update did not move the weights: the comparison would be vacuous"
            assert max_weight_diff(w1, w2) < 1e-4 * moved, f"{agg}: split update differs from the unsplit one"
            before = w1
    finally:
        big.shutdown()
        split.shutdown()


def test_checkpoint_round_trip_resumes_identically(ray_cluster, tiny_model_dir, tmp_path):
    loss = LossSettings()
    b1, b2 = make_batch(1000, seed=1), make_batch(1000, seed=2)
    a = policy_group(tiny_model_dir, 1, "t/ckpt-a", strategy="ddp", micro_batch_size=4)
    try:
        one_update(a, b1, loss)
        a.run("save", str(tmp_path / "ckpt"))
        metrics_a, weights_a = one_update(a, b2, loss)
    finally:
        a.shutdown()
    b = policy_group(tiny_model_dir, 1, "t/ckpt-b", strategy="ddp", micro_batch_size=4)
    try:
        b.run("load", str(tmp_path / "ckpt"))
        metrics_b, weights_b = one_update(b, b2, loss)
    finally:
        b.shutdown()
    assert metrics_a == pytest.approx(metrics_b, abs=1e-7)
    assert max_weight_diff(weights_a, weights_b) == 0.0


def test_too_few_samples_for_mini_batches_is_a_clear_error(ray_cluster, tiny_model_dir):
    g = policy_group(tiny_model_dir, 1, "t/few", strategy="ddp")
    try:
        batch = make_batch(1000, n=2)
        old = g.run_rank0("log_probs", batch)["log_probs"]
        with pytest.raises(ray.exceptions.RayTaskError, match="got 2 samples for 4 mini-batches"):
            g.run_rank0("train", batch.with_tensors(old_log_probs=old), LossSettings(num_mini_batches=4), lr=1.0)
    finally:
        g.shutdown()


def test_on_policy_update_without_old_log_probs_equals_explicit_old(ray_cluster, tiny_model_dir):
    """One pass over one mini-batch: the worker's own detached log-probs are the old ones."""
    batch, loss = make_batch(1000, seed=3), LossSettings()
    g = policy_group(tiny_model_dir, 1, "t/onpolicy-a", strategy="ddp", micro_batch_size=4)
    try:
        _, explicit = one_update(g, batch, loss)
    finally:
        g.shutdown()
    g = policy_group(tiny_model_dir, 1, "t/onpolicy-b", strategy="ddp", micro_batch_size=4)
    try:
        g.run_sharded("train", batch, loss=loss, lr=1.0)
        implicit = dict(g.run("sync_weights")[0])
        with pytest.raises(ray.exceptions.RayTaskError, match="old_log_probs are required"):
            g.run_rank0("train", batch, LossSettings(ppo_epochs=2), lr=1.0)
    finally:
        g.shutdown()
    assert max_weight_diff(explicit, implicit) < 1e-6

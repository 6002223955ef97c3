"""PolicyWorker.train_dpo / ReferenceWorker.pair_log_probs on Ray: what a DPO step computes,
its invariance to ranks and micro-batches (with and without the online merging optimizer),
and clear errors."""

from __future__ import annotations

import pytest
import ray
import torch

from qwen25_rl.actors.policy import DPOSettings, PolicyWorker, ReferenceWorker, TrainSettings, stack_pair_rows
from qwen25_rl.actors.worker_group import WorkerGroup
from qwen25_rl.algorithms.dpo import dpo_loss
from qwen25_rl.batch import TensorBatch


def make_pairs(vocab: int, n: int = 8, seed: int = 0) -> TensorBatch:
    """Pairs with left-padded prompts and ragged right-padded responses of different widths."""
    g = torch.Generator().manual_seed(seed)
    p_len, c_len, r_len = 5, 7, 4
    prompt_mask = torch.ones(n, p_len, dtype=torch.long)
    prompt_mask[::3, :2] = 0
    chosen_mask = torch.zeros(n, c_len, dtype=torch.long)
    rejected_mask = torch.zeros(n, r_len, dtype=torch.long)
    for i in range(n):
        chosen_mask[i, : 1 + (i * 3) % c_len] = 1
        rejected_mask[i, : 1 + (i * 2) % r_len] = 1
    return TensorBatch(
        {
            "prompt_ids": torch.randint(0, vocab, (n, p_len), generator=g),
            "prompt_mask": prompt_mask,
            "chosen_ids": torch.randint(0, vocab, (n, c_len), generator=g),
            "chosen_mask": chosen_mask,
            "rejected_ids": torch.randint(0, vocab, (n, r_len), generator=g),
            "rejected_mask": rejected_mask,
        }
    )


def policy_group(model_dir, n, name, **settings) -> WorkerGroup:
    settings.setdefault("eps", 1.0)  # Adam ~ SGD for small gradients: a mis-scaled gradient shows
    s = TrainSettings(lr=1.0, grad_clip=None, **settings)
    g = WorkerGroup(PolicyWorker, n, name=name, num_cpus=0.5, init_kwargs={"model_path": str(model_dir), "settings": s, "torch_threads": 1})
    g.run("init_model")
    return g


def reference_group(model_dir, name) -> WorkerGroup:
    g = WorkerGroup(ReferenceWorker, 1, name=name, num_cpus=0.5, init_kwargs={"model_path": str(model_dir)}, distributed=False)
    g.run("init_model")
    return g


def with_reference(pairs: TensorBatch, ref: WorkerGroup) -> TensorBatch:
    out = ref.run_rank0("pair_log_probs", pairs)
    return pairs.with_tensors(ref_chosen_logps=out["chosen_logps"], ref_rejected_logps=out["rejected_logps"])


def max_weight_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_pair_log_probs_are_the_masked_sums_of_token_log_probs(local_ray, tiny_model_dir):
    ref = reference_group(tiny_model_dir, "t/dpo-ref-sums")
    try:
        pairs = make_pairs(1000)
        sums = ref.run_rank0("pair_log_probs", pairs, micro_batch_size=3)
        rows = stack_pair_rows(pairs)
        tokens = ref.run_rank0("log_probs", rows)["log_probs"]
        per_row = (tokens * rows["response_mask"]).sum(1)
        assert torch.allclose(sums["chosen_logps"], per_row[:8], atol=1e-5)
        assert torch.allclose(sums["rejected_logps"], per_row[8:], atol=1e-5)
        assert sums["chosen_lengths"].tolist() == pairs["chosen_mask"].sum(1).float().tolist()
    finally:
        ref.shutdown()


def test_dpo_step_loss_is_the_algorithm_core_loss_of_the_pre_update_policy(local_ray, tiny_model_dir):
    ref = reference_group(tiny_model_dir, "t/dpo-ref-loss")
    pol = policy_group(tiny_model_dir, 1, "t/dpo-loss", strategy="ddp", micro_batch_size=3)
    try:
        # A reference that differs from the policy: the policy scored on other pairs' tokens.
        pairs = with_reference(make_pairs(1000, seed=1), ref)
        pairs = pairs.with_tensors(ref_chosen_logps=pairs["ref_chosen_logps"] + 0.3, ref_rejected_logps=pairs["ref_rejected_logps"] - 0.2)
        before = pol.run_rank0("pair_log_probs", pairs)
        settings = DPOSettings(beta=0.5, rpo_alpha=0.7)
        expected = dpo_loss(
            before["chosen_logps"],
            before["rejected_logps"],
            pairs["ref_chosen_logps"],
            pairs["ref_rejected_logps"],
            beta=0.5,
            rpo_alpha=0.7,
            chosen_lengths=pairs["chosen_mask"].sum(1),
        )
        metrics = pol.run_sharded("train_dpo", pairs, settings=settings, lr=0.1)[0]
        assert metrics["dpo/loss"] == pytest.approx(float(expected.loss), abs=1e-5)
        assert metrics["dpo/nll"] == pytest.approx(float(expected.metrics["nll"]), abs=1e-5)
        assert metrics["dpo/reward_accuracy"] == pytest.approx(float(expected.metrics["rewards/accuracy"]), abs=1e-6)
        assert metrics["dpo/reward_margin"] == pytest.approx(float(expected.metrics["rewards/margin"]), abs=1e-5)
        assert metrics["dpo/logps/chosen_minus_ref"] == pytest.approx(
            float((before["chosen_logps"] - pairs["ref_chosen_logps"]).mean()), abs=1e-5
        )
        assert metrics["dpo/pairs"] == 8
        after = pol.run_rank0("pair_log_probs", pairs)
        margin_before = (before["chosen_logps"] - before["rejected_logps"]).mean()
        margin_after = (after["chosen_logps"] - after["rejected_logps"]).mean()
        assert margin_after > margin_before, "one DPO step did not widen the chosen-rejected margin"
    finally:
        ref.shutdown()
        pol.shutdown()


@pytest.mark.parametrize("merge", [None, "ondare", "onties"])
def test_dpo_update_is_invariant_to_ranks_and_micro_batches(local_ray, tiny_model_dir, tiny_tokenizer, tmp_path, merge):
    """8 pairs: 1 rank x 1 micro-batch == 2 ranks x 2 micro-batches of 2, two steps in a row (the
    second with non-empty Adam and merger state); with OnDARE / OnTIES the masks agree too."""
    from qwen25_rl.models import build_model, load_model, save_pretrained
    from qwen25_rl.models.factory import named_weights

    extra = {}
    if merge:
        base = save_pretrained(build_model("tiny", tokenizer=tiny_tokenizer, seed=7), tiny_tokenizer, tmp_path / "base")
        extra["merge"] = {"method": merge, "base_model": str(base), "alpha": 0.3, "keep": 0.5, "rescale": False}
    ref = reference_group(tiny_model_dir, f"t/dpo-ref-{merge}")
    big = policy_group(tiny_model_dir, 1, f"t/dpo-big-{merge}", strategy="ddp", micro_batch_size=8, **extra)
    split = policy_group(tiny_model_dir, 2, f"t/dpo-split-{merge}", strategy="ddp", micro_batch_size=2, **extra)
    before = {k: v.detach() for k, v in named_weights(load_model(tiny_model_dir))}
    try:
        for step in range(2):
            pairs = with_reference(make_pairs(1000, seed=10 + step), ref)
            settings = DPOSettings(beta=0.2, rpo_alpha=0.5, length_normalize=step == 1)
            m1 = big.run_sharded("train_dpo", pairs, settings=settings, lr=0.5)[0]
            m2 = split.run_sharded("train_dpo", pairs, settings=settings, lr=0.5)[0]
            w1, w2 = dict(big.run("sync_weights")[0]), dict(split.run("sync_weights")[0])
            assert m1["dpo/loss"] == pytest.approx(m2["dpo/loss"], abs=1e-6)
            moved = max_weight_diff(w1, before)
            assert moved > 1e-3, "the update did not move the weights: the comparison would be vacuous"
            if merge == "onties":
                # Top-k by magnitude is discontinuous: an entry at the threshold may be kept by
                # one run and trimmed by the other (sums in another order). Everything else agrees.
                differ = sum(int(((w1[k] - w2[k]).abs() > 1e-4 * moved).sum()) for k in w1)
                assert differ <= 1e-3 * sum(v.numel() for v in w1.values()), differ
            else:
                assert max_weight_diff(w1, w2) < 1e-4 * moved
            before = w1
    finally:
        for g in (ref, big, split):
            g.shutdown()


def test_dpo_step_without_reference_log_probs_is_a_clear_error(local_ray, tiny_model_dir):
    pol = policy_group(tiny_model_dir, 1, "t/dpo-noref", strategy="ddp")
    try:
        with pytest.raises(ray.exceptions.RayTaskError, match="needs ref_chosen_logps"):
            pol.run_rank0("train_dpo", make_pairs(1000), DPOSettings(), lr=0.1)
    finally:
        pol.shutdown()

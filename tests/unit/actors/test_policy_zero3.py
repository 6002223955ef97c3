"""The policy worker under DeepSpeed ZeRO-3 trains exactly as under ZeRO-0.

ZeRO-3 keeps every parameter partitioned except around its own module's forward and backward,
but the policy's scoring path applies the output projection (`lm_head.weight`, tied to the
embedding or not) to the hidden states itself, in chunks. The worker's real methods run here
in one spawned process (gloo, one rank) with DeepSpeed told to release every parameter at once
after use (`stage3_max_live_parameters: 0` ...), so that a parameter the hooks do not gather is
really absent: PPO steps, a DPO step and the weights exported afterwards must equal ZeRO-0's.
ZeRO-3 on several gloo ranks has known NaN bugs (DESIGN.md); a GPU run covers that
(bench/gpu_check.py)."""

from __future__ import annotations

import os

import pytest
import torch
from one_rank import run_on_one_rank, small_model

from qwen25_rl.batch import TensorBatch

VOCAB = 2048  # lm_head 2048 x 64: partitioned (above DeepSpeed's default persistence threshold too)
RELEASE_AT_ONCE = {
    "stage3_max_live_parameters": 0,
    "stage3_max_reuse_distance": 0,
    "stage3_param_persistence_threshold": 0,
    "stage3_prefetch_bucket_size": 0,
}


def make_batch(n: int = 6, p_len: int = 5, r_len: int = 7, seed: int = 0) -> TensorBatch:
    g = torch.Generator().manual_seed(seed)
    prompt_mask = torch.ones(n, p_len, dtype=torch.long)
    prompt_mask[::3, :2] = 0
    response_mask = torch.zeros(n, r_len, dtype=torch.long)
    for i in range(n):
        response_mask[i, : 1 + (i * 3) % r_len] = 1
    return TensorBatch(
        {
            "prompt_ids": torch.randint(0, VOCAB, (n, p_len), generator=g),
            "prompt_mask": prompt_mask,
            "response_ids": torch.randint(0, VOCAB, (n, r_len), generator=g),
            "response_mask": response_mask,
            "advantages": torch.randn(n, generator=g),
        }
    )


def make_pairs(n: int = 4, seed: int = 1) -> TensorBatch:
    g = torch.Generator().manual_seed(seed)
    chosen_mask = torch.ones(n, 6, dtype=torch.long)
    chosen_mask[1, 4:] = 0
    rejected_mask = torch.ones(n, 5, dtype=torch.long)
    rejected_mask[2, 3:] = 0
    return TensorBatch(
        {
            "prompt_ids": torch.randint(0, VOCAB, (n, 4), generator=g),
            "prompt_mask": torch.ones(n, 4, dtype=torch.long),
            "chosen_ids": torch.randint(0, VOCAB, (n, 6), generator=g),
            "chosen_mask": chosen_mask,
            "rejected_ids": torch.randint(0, VOCAB, (n, 5), generator=g),
            "rejected_mask": rejected_mask,
            "ref_chosen_logps": -torch.rand(n, generator=g) * 40,
            "ref_rejected_logps": -torch.rand(n, generator=g) * 40,
        }
    )


def _run(_index: int, port: int, model_dir: str, out: str) -> None:
    os.environ["DS_ACCELERATOR"] = "cpu"
    torch.set_num_threads(1)
    from qwen25_rl.actors.policy import DPOSettings, LossSettings, PolicyWorker, TrainSettings

    results = {}
    for stage in (0, 3):
        settings = TrainSettings(
            strategy="deepspeed",
            zero_stage=stage,
            zero_options=RELEASE_AT_ONCE if stage == 3 else None,
            micro_batch_size=4,  # 6 samples: two micro-batches, gradient accumulation included
            # Adam with eps=1 is about SGD here: gradient differences show in the weights
            # unamplified (a tiny eps turns near-zero gradients into +-lr steps).
            lr=0.1,
            eps=1.0,
            grad_clip=None,
        )
        worker = PolicyWorker(model_dir, settings, torch_threads=1)
        worker.init_distributed("127.0.0.1", port, 0, 1, "gloo")
        worker.init_model()
        batch = make_batch()
        ppo = LossSettings(loss_type="ppo", loss_agg_mode="token-mean", ppo_epochs=2, num_mini_batches=1)
        old = worker.log_probs(batch)["log_probs"]
        policy = worker.train(batch.with_tensors(old_log_probs=old), ppo, lr=0.1)
        dpo = worker.train_dpo(make_pairs(), DPOSettings(beta=0.1), lr=0.1)
        results[stage] = {
            "old_log_probs": old,
            "policy_loss": policy["policy/loss"],
            "dpo_loss": dpo["dpo/loss"],
            "log_probs_after": worker.log_probs(batch)["log_probs"],
            "weights": {n: t.clone() for n, t in worker.sync_weights()},
            "head_numel_at_rest": worker.scorer.model.get_output_embeddings().weight.numel(),
        }
    torch.save(results, out)


@pytest.mark.parametrize("tied", [True, False], ids=["tied-head", "untied-head"])
def test_zero3_policy_updates_equal_zero0(tmp_path, tied):
    model = small_model(VOCAB, hidden_size=64, num_hidden_layers=2, tied=tied)
    got = run_on_one_rank(_run, model, tmp_path)
    zero0, zero3 = got[0], got[3]
    # The run really partitioned the head: outside forward/backward this rank holds none of it.
    assert zero3["head_numel_at_rest"] == 0 and zero0["head_numel_at_rest"] == VOCAB * 64
    torch.testing.assert_close(zero3["old_log_probs"], zero0["old_log_probs"], rtol=0, atol=1e-5)
    assert zero3["policy_loss"] == pytest.approx(zero0["policy_loss"], abs=1e-6)
    assert zero3["dpo_loss"] == pytest.approx(zero0["dpo_loss"], abs=1e-6)
    torch.testing.assert_close(zero3["log_probs_after"], zero0["log_probs_after"], rtol=0, atol=1e-4)
    assert set(zero3["weights"]) == set(zero0["weights"])
    moved = max((zero0["weights"][n] - model.state_dict()[n]).abs().max().item() for n in zero0["weights"])
    assert moved > 1e-3, "the updates did not change the weights: the comparison would prove nothing"
    for name, value in zero3["weights"].items():
        torch.testing.assert_close(value, zero0["weights"][name], rtol=0, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")

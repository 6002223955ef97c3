"""Under DeepSpeed, a policy update steps the optimizer once, after the step's LAST micro-batch,
whatever number of micro-batches earlier steps had.

DeepSpeed places the accumulation boundary by a micro-step counter that runs across steps
(`(micro_steps + 1) % gradient_accumulation_steps == 0`). GRPO's steps do not all have the same
number of micro-batches (dynamic sampling keeps a varying number of groups), so after a step with
one micro-batch the next two-micro-batch step hit the boundary on its FIRST micro-batch: the
optimizer stepped in mid-update, the second micro-batch was scored with the new weights (the
sampler-vs-trainer log-prob gap jumped from ~1e-6 to 0.02-0.5 on the chat arithmetic task) and
its gradient was applied one step late. Here: steps of 1, 2 and 2 micro-batches, each scored
against the policy's own log-probs from before the step (what the rollout engine reports), and
the weights compared with the DDP engine's, which steps at the loop's last micro-batch."""

from __future__ import annotations

import os

import torch
from one_rank import run_on_one_rank, small_model

from qwen25_rl.batch import TensorBatch

VOCAB = 256
SIZES = (4, 8, 8)  # samples per step; micro_batch_size 4 -> 1, 2, 2 micro-batches


def make_batch(n: int, seed: int, p_len: int = 5, r_len: int = 6) -> TensorBatch:
    g = torch.Generator().manual_seed(seed)
    response_mask = torch.zeros(n, r_len, dtype=torch.long)
    for i in range(n):
        response_mask[i, : 2 + i % (r_len - 1)] = 1
    return TensorBatch(
        {
            "prompt_ids": torch.randint(0, VOCAB, (n, p_len), generator=g),
            "prompt_mask": torch.ones(n, p_len, dtype=torch.long),
            "response_ids": torch.randint(0, VOCAB, (n, r_len), generator=g),
            "response_mask": response_mask,
            "advantages": torch.randn(n, generator=g),
        }
    )


def _run(_index: int, port: int, model_dir: str, out: str) -> None:
    os.environ["DS_ACCELERATOR"] = "cpu"
    torch.set_num_threads(1)
    from qwen25_rl.actors.policy import LossSettings, PolicyWorker, TrainSettings

    results = {}
    for strategy in ("deepspeed", "ddp"):
        # Adam with eps=1 is about SGD: an optimizer step in mid-update shows in the log-probs.
        settings = TrainSettings(strategy=strategy, zero_stage=2, micro_batch_size=4, lr=0.1, eps=1.0, grad_clip=None)
        worker = PolicyWorker(model_dir, settings, torch_threads=1)
        worker.init_distributed("127.0.0.1", port, 0, 1, "gloo")
        worker.init_model()
        loss = LossSettings(loss_type="ppo", loss_agg_mode="token-mean", ppo_epochs=1, num_mini_batches=1)
        gaps = []
        for step, n in enumerate(SIZES):
            batch = make_batch(n, seed=step)
            # The rollout engine's log-probs: the policy's own, with the weights before the step.
            sampler = worker.log_probs(batch)["log_probs"]
            metrics = worker.train(batch.with_tensors(sampler_logprobs=sampler), loss, lr=0.1)
            gaps.append(metrics["logprob_gap/sampler_trainer_abs_max"])
        results[strategy] = {"gaps": gaps, "weights": {k: v.clone() for k, v in worker.sync_weights()}}
    torch.save(results, out)


def test_deepspeed_steps_at_the_last_micro_batch_of_every_update(tmp_path):
    model = small_model(VOCAB, hidden_size=32, num_hidden_layers=1)
    got = run_on_one_rank(_run, model, tmp_path)
    ds, ddp = got["deepspeed"], got["ddp"]
    # Every micro-batch of a step is scored with the weights the step started from.
    assert max(ddp["gaps"]) < 1e-5, ddp["gaps"]
    assert max(ds["gaps"]) < 1e-5, f"DeepSpeed stepped in mid-update (gap per step {ds['gaps']})"
    moved = max((ddp["weights"][n] - model.state_dict()[n]).abs().max().item() for n in ddp["weights"])
    assert moved > 1e-2, "the updates did not change the weights: the comparison would prove nothing"
    for name, value in ds["weights"].items():
        torch.testing.assert_close(value, ddp["weights"][name], rtol=0, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")

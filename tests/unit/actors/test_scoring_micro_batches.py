"""ReferenceWorker.log_probs over length-sorted, trimmed micro-batches: every sample's log-probs
land back in its own row and columns, equal to scoring that sample alone without padding."""

from __future__ import annotations

import torch

from qwen25_rl.actors.policy import ReferenceWorker
from qwen25_rl.batch import TensorBatch


def ragged_batch(vocab: int, n: int = 7, p_len: int = 6, r_len: int = 9) -> TensorBatch:
    g = torch.Generator().manual_seed(3)
    prompt_mask = torch.ones(n, p_len, dtype=torch.long)
    response_mask = torch.zeros(n, r_len, dtype=torch.long)
    for i in range(n):
        prompt_mask[i, : (i * 2) % p_len] = 0  # left padding, 0..5 columns
        response_mask[i, : 1 + (i * 4) % r_len] = 1  # right padding, ragged
    return TensorBatch(
        {
            "prompt_ids": torch.randint(0, vocab, (n, p_len), generator=g) * prompt_mask,
            "prompt_mask": prompt_mask,
            "response_ids": torch.randint(0, vocab, (n, r_len), generator=g) * response_mask,
            "response_mask": response_mask,
        }
    )


def test_log_probs_of_sorted_trimmed_micro_batches_match_each_sample_scored_alone(tiny_model_dir):
    worker = ReferenceWorker(str(tiny_model_dir), torch_threads=1)
    worker.init_model()
    batch = ragged_batch(worker.scorer.model.config.vocab_size)
    got = worker.log_probs(batch, micro_batch_size=3, with_entropy=True)
    assert got["log_probs"].shape == batch["response_mask"].shape
    for i in range(len(batch)):
        p = batch["prompt_mask"][i].bool()
        r = batch["response_mask"][i].bool()
        alone = TensorBatch(
            {
                "prompt_ids": batch["prompt_ids"][i, p][None],
                "prompt_mask": batch["prompt_mask"][i, p][None],
                "response_ids": batch["response_ids"][i, r][None],
                "response_mask": batch["response_mask"][i, r][None],
            }
        )
        want = worker.log_probs(alone, micro_batch_size=1, with_entropy=True)
        k = int(r.sum())
        torch.testing.assert_close(got["log_probs"][i, :k], want["log_probs"][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got["entropy"][i, :k], want["entropy"][0], atol=1e-5, rtol=1e-5)
        assert not got["log_probs"][i, k:].any() and not got["entropy"][i, k:].any()

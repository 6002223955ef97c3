"""One optimizer step, split 4 ways with the global counts passed in, gives the gradient of the unsplit batch.

The "model" is an embedding plus an output projection, scored through the hidden-state
log-prob path the workers use. Data-parallel ranks are simulated the way DDP combines them:
each rank accumulates its micro-batches with its loss multiplied by the world size, and the
ranks' gradients are averaged (the all-reduce mean). Float64 throughout.
"""

import pytest
import torch

from qwen25_rl.algorithms import (
    LOSS_AGG_MODES,
    bradley_terry_loss,
    compute_advantages,
    dpo_loss,
    lm_loss_from_hidden,
    policy_loss,
    token_and_sequence_counts,
    token_log_probs_and_entropy_from_hidden,
)

VOCAB, HIDDEN, BATCH, LENGTH = 50, 8, 8, 6


class TinyPolicy(torch.nn.Module):
    def __init__(self, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = torch.nn.Parameter(torch.randn(VOCAB, HIDDEN, generator=g, dtype=torch.float64))
        self.head = torch.nn.Parameter(0.5 * torch.randn(VOCAB, HIDDEN, generator=g, dtype=torch.float64))

    def hidden(self, tokens):
        return torch.tanh(self.embed[tokens])


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, VOCAB, (BATCH, LENGTH), generator=g)
    targets = torch.randint(0, VOCAB, (BATCH, LENGTH), generator=g)
    lengths = torch.tensor([6, 1, 4, 0, 5, 2, 6, 3])  # uneven, one empty response
    mask = torch.arange(LENGTH)[None, :] < lengths[:, None]
    old = -3 * torch.rand(BATCH, LENGTH, generator=g, dtype=torch.float64)
    rollout = old + 0.2 * torch.randn(BATCH, LENGTH, generator=g, dtype=torch.float64)
    ref = old + 0.2 * torch.randn(BATCH, LENGTH, generator=g, dtype=torch.float64)
    rewards = torch.randint(0, 2, (BATCH,), generator=g).double()
    adv = compute_advantages("grpo", rewards, [0, 0, 0, 0, 1, 1, 1, 1], mask)  # on the whole batch
    return inputs, targets, mask, old, rollout, ref, adv


def _rl_loss(model, rows, batch, mode, counts):
    inputs, targets, mask, old, rollout, ref, adv = (t[rows] for t in batch)
    log_probs, entropy = token_log_probs_and_entropy_from_hidden(model.hidden(inputs), model.head, targets, temperature=0.9, chunk_size=5)
    out = policy_loss(
        log_probs,
        old,
        adv,
        mask,
        loss_agg_mode=mode,
        clip_low=0.2,
        clip_high=0.28,
        dual_clip=3.0,
        rollout_log_probs=rollout,
        ref_log_probs=ref,
        kl_coef=0.05,
        entropy=entropy,
        entropy_coef=0.01,
        max_response_length=LENGTH,
        **counts,
    )
    return out.loss


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def _step(model, loss_fn, splits, world_size=1):
    """Gradient of one optimizer step: ranks x micro-batches, combined like DDP (mean over ranks)."""
    per_rank = []
    for rank_splits in splits:
        model.zero_grad()
        for rows in rank_splits:
            (loss_fn(rows) * world_size).backward()
        per_rank.append(_grads(model))
    return [sum(g) / len(per_rank) for g in zip(*per_rank)]


def _global_counts(mask):
    tokens, seqs = token_and_sequence_counts(mask)
    return {"num_tokens": tokens, "num_seqs": seqs}


ALL = [list(range(BATCH))]
FOUR_WAYS = [[0, 1], [2, 3], [4, 5], [6, 7]]


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_policy_loss_gradient_is_the_same_split_four_ways(mode):
    model, batch = TinyPolicy(0), _batch()
    counts = _global_counts(batch[2])
    full = _step(model, lambda rows: _rl_loss(model, rows, batch, mode, counts), [ALL])
    split = _step(model, lambda rows: _rl_loss(model, rows, batch, mode, counts), [FOUR_WAYS])
    for a, b in zip(full, split):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_policy_loss_gradient_is_the_same_over_two_ranks_of_two_micro_batches(mode):
    model, batch = TinyPolicy(1), _batch(1)
    counts = _global_counts(batch[2])
    full = _step(model, lambda rows: _rl_loss(model, rows, batch, mode, counts), [ALL])
    ranks = _step(model, lambda rows: _rl_loss(model, rows, batch, mode, counts), [[[0, 1], [2, 3]], [[4, 5], [6, 7]]], world_size=2)
    for a, b in zip(full, ranks):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-10)


def test_without_global_counts_the_split_changes_the_gradient():
    # the control: local normalisation is NOT split-invariant, so the tests above can fail
    model, batch = TinyPolicy(2), _batch(2)
    full = _step(model, lambda rows: _rl_loss(model, rows, batch, "token-mean", {}), [ALL])
    split = _step(model, lambda rows: _rl_loss(model, rows, batch, "token-mean", {}) / 4, [FOUR_WAYS])
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(full, split))


def test_lm_loss_gradient_is_the_same_split_four_ways():
    model, (inputs, targets, mask, *_) = TinyPolicy(3), _batch(3)
    labels = targets.masked_fill(~mask, -100)
    num_tokens = int(mask.sum())

    def loss(rows):
        return lm_loss_from_hidden(model.hidden(inputs[rows]), model.head, labels[rows], num_tokens=num_tokens, chunk_size=4)

    for a, b in zip(_step(model, loss, [ALL]), _step(model, loss, [FOUR_WAYS])):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-10)


def test_dpo_and_reward_model_gradients_are_the_same_split_four_ways():
    model, (inputs, targets, mask, *_) = TinyPolicy(4), _batch(4)
    g = torch.Generator().manual_seed(4)
    ref = -10 * torch.rand(BATCH, generator=g, dtype=torch.float64)
    lengths = mask.sum(-1)
    # pair p = (row p, row p + 4); FOUR_WAYS over pairs = [[0], [1], [2], [3]]
    num_chosen_tokens = int(lengths[:4].sum())

    def loss(pair_rows):
        rows = pair_rows + [p + 4 for p in pair_rows]
        log_p, _ = token_log_probs_and_entropy_from_hidden(model.hidden(inputs[rows]), model.head, targets[rows])
        sums = (log_p * mask[rows]).sum(-1)
        n = len(pair_rows)
        dpo = dpo_loss(
            sums[:n],
            sums[n:],
            ref[rows][:n],
            ref[rows][n:],
            beta=0.3,
            rpo_alpha=0.5,
            chosen_lengths=lengths[pair_rows],
            num_pairs=4,
            num_chosen_tokens=num_chosen_tokens,
        )
        rm = bradley_terry_loss(sums[:n] / 10, sums[n:] / 10, margin=0.1, num_pairs=4)
        return dpo.loss + rm.loss

    full = _step(model, loss, [[[0, 1, 2, 3]]])
    split = _step(model, loss, [[[0], [1], [2], [3]]])
    for a, b in zip(full, split):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-10)

"""aggregate_token_loss: each mode against numbers worked out by hand."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen25_rl.algorithms import aggregate_token_loss, token_and_sequence_counts

# Two sequences: the first has 2 response tokens (losses 1, 3), the second 3 (losses 2, 4, 6).
LOSS = torch.tensor([[1.0, 3.0, 100.0], [2.0, 4.0, 6.0]])
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])


def test_token_mean_divides_the_masked_sum_by_the_token_count():
    # (1 + 3 + 2 + 4 + 6) / 5
    assert aggregate_token_loss(LOSS, MASK, "token-mean").item() == pytest.approx(16 / 5)


def test_seq_mean_token_mean_averages_per_sequence_then_over_sequences():
    # ((1 + 3) / 2 + (2 + 4 + 6) / 3) / 2 = (2 + 4) / 2
    assert aggregate_token_loss(LOSS, MASK, "seq-mean-token-mean").item() == pytest.approx(3.0)


def test_seq_mean_token_sum_sums_per_sequence_then_averages():
    # (4 + 12) / 2
    assert aggregate_token_loss(LOSS, MASK, "seq-mean-token-sum").item() == pytest.approx(8.0)


def test_seq_mean_token_sum_norm_divides_by_sequences_times_max_length():
    # 16 / (2 * 8): a constant normaliser (Dr. GRPO), not the batch's own lengths
    got = aggregate_token_loss(LOSS, MASK, "seq-mean-token-sum-norm", max_response_length=8)
    assert got.item() == pytest.approx(1.0)


def test_seq_mean_token_sum_norm_defaults_to_the_padded_width():
    # 16 / (2 * 3)
    assert aggregate_token_loss(LOSS, MASK, "seq-mean-token-sum-norm").item() == pytest.approx(16 / 6)


def test_global_counts_replace_the_local_ones():
    assert aggregate_token_loss(LOSS, MASK, "token-mean", num_tokens=20).item() == pytest.approx(16 / 20)
    assert aggregate_token_loss(LOSS, MASK, "seq-mean-token-mean", num_seqs=4).item() == pytest.approx(6 / 4)
    assert aggregate_token_loss(LOSS, MASK, "seq-mean-token-sum", num_seqs=4).item() == pytest.approx(16 / 4)
    got = aggregate_token_loss(LOSS, MASK, "seq-mean-token-sum-norm", num_seqs=4, max_response_length=4)
    assert got.item() == pytest.approx(16 / 16)


def test_masked_positions_never_reach_the_loss_even_when_not_finite():
    loss = LOSS.clone()
    loss[0, 2] = float("nan")
    assert aggregate_token_loss(loss, MASK, "token-mean").item() == pytest.approx(16 / 5)


def test_sequence_without_response_tokens_is_not_counted_locally():
    loss = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    mask = torch.tensor([[1, 1], [0, 0]])
    assert aggregate_token_loss(loss, mask, "seq-mean-token-mean").item() == pytest.approx(2.0)
    assert token_and_sequence_counts(mask) == (2, 1)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_all_masked_batch_gives_zero_loss_and_zero_gradient(mode):
    loss = torch.randn(2, 3, requires_grad=True)
    out = aggregate_token_loss(loss, torch.zeros(2, 3), mode)
    out.backward()
    assert out.item() == 0.0
    assert torch.equal(loss.grad, torch.zeros(2, 3))


def test_unknown_mode_is_rejected_with_the_known_modes():
    with pytest.raises(ValueError, match="token-mean"):
        aggregate_token_loss(LOSS, MASK, "seq-mean")


def test_mask_of_another_shape_is_rejected():
    with pytest.raises(ValueError, match="mask has shape"):
        aggregate_token_loss(LOSS, MASK[:, :2], "token-mean")


def test_non_positive_global_count_is_rejected():
    with pytest.raises(ValueError, match="num_tokens must be positive"):
        aggregate_token_loss(LOSS, MASK, "token-mean", num_tokens=0)


def test_batch_wider_than_max_response_length_is_rejected():
    with pytest.raises(ValueError, match="max_response_length=2"):
        aggregate_token_loss(LOSS, MASK, "seq-mean-token-sum-norm", max_response_length=2)


def test_gradient_of_token_mean_is_mask_over_count():
    loss = torch.zeros(2, 3, requires_grad=True)
    aggregate_token_loss(loss, MASK, "token-mean").backward()
    assert torch.allclose(loss.grad, MASK.float() / 5)
    assert not math.isnan(loss.grad.sum().item())


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 8),
    t=st.integers(1, 5),
    parts=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    mode=st.sampled_from(["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]),
)
def test_property_parts_with_global_counts_sum_to_the_whole(b, t, parts, seed, mode):
    g = torch.Generator().manual_seed(seed)
    loss = torch.randn(b, t, generator=g, dtype=torch.float64)
    mask = torch.rand(b, t, generator=g) > 0.4  # rows may be empty
    tokens, seqs = token_and_sequence_counts(mask)
    counts = {"num_tokens": max(tokens, 1), "num_seqs": max(seqs, 1), "max_response_length": t}
    whole = aggregate_token_loss(loss, mask, mode, **counts)
    cuts = sorted(torch.randint(0, b + 1, (parts - 1,), generator=g).tolist())
    bounds = list(zip([0] + cuts, cuts + [b]))
    pieces = sum(aggregate_token_loss(loss[lo:hi], mask[lo:hi], mode, **counts) for lo, hi in bounds if hi > lo)
    assert float(pieces) == pytest.approx(whole.item(), abs=1e-12)

"""Packing token sequences into fixed-length training rows (pure numpy, no I/O).

Every row carries three aligned arrays of length L:

- `input_ids`
- `labels`: the token each position must predict (already shifted: labels[i] is the target
  for logits[i]); IGNORE where nothing is to be learned (padding, prompts, the last token)
- `position_ids`: where each token sits in its own document. When documents must not see
  each other, positions restart at every document; transformers' attention masking reads a
  restart (a position that is not previous + 1) as a new sequence and blocks attention across
  it (block-diagonal causal mask for SDPA/eager, varlen for flash-attention).

Pretraining rows (`pack_documents`) cut one long stream `doc EOS doc EOS ...` into rows;
a document may continue in the next row, and the label of a row's last token is the next
row's first token, so no token and no prediction is lost. SFT rows (`pack_samples`) place
whole samples into rows without splitting any (best-fit decreasing).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IGNORE = -100


@dataclass
class PackedRows:
    input_ids: np.ndarray  # [N, L] int32
    labels: np.ndarray  # [N, L] int32, IGNORE = not trained
    position_ids: np.ndarray  # [N, L] int32
    # Number of real (non-padding) tokens per row; padding is always at the row's end.
    lengths: np.ndarray  # [N] int32

    @property
    def num_rows(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    def stats(self) -> dict[str, int]:
        real = int(self.lengths.sum())
        return {
            "rows": self.num_rows,
            "tokens": real,
            "padding_tokens": self.num_rows * self.seq_len - real,
            "loss_tokens": int((self.labels != IGNORE).sum()),
        }


def _positions_from_starts(starts: np.ndarray) -> np.ndarray:
    """Given a boolean array marking segment starts (index 0 must be a start), the offset of
    every index from the start of its segment."""
    idx = np.arange(starts.size)
    last_start = np.maximum.accumulate(np.where(starts, idx, 0))
    return idx - last_start


def pack_documents(
    docs: Sequence[Sequence[int] | np.ndarray],
    seq_len: int,
    eos_id: int,
    pad_id: int,
    *,
    reset_positions: bool = True,
) -> PackedRows:
    """Concatenate `doc + [eos]` for every document and cut the stream into rows of seq_len.

    The last row is padded (labels IGNORE). With `reset_positions`, positions restart at each
    document start and at each row start (a row never sees the previous row).
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    if len(docs) == 0:
        raise ValueError("no documents to pack")
    parts: list[np.ndarray] = []
    doc_start = []
    for d in docs:
        arr = np.asarray(d, dtype=np.int64)
        parts.append(arr)
        parts.append(np.array([eos_id], dtype=np.int64))
        doc_start.append(arr.size + 1)
    stream = np.concatenate(parts)
    n = stream.size
    rows = -(-n // seq_len)
    total = rows * seq_len

    ids = np.full(total, pad_id, dtype=np.int64)
    ids[:n] = stream
    labels = np.full(total, IGNORE, dtype=np.int64)
    labels[: n - 1] = stream[1:]

    starts = np.zeros(total, dtype=bool)
    starts[::seq_len] = True
    if reset_positions:
        # A document starts at offset 0 and right after each EOS separator we inserted
        # (the boundaries come from the construction, not from token values, so an EOS id
        # inside a document's own text does not split it).
        # Padding (after index n) continues the last segment's positions; real tokens never
        # attend to it (causal) and it carries no labels.
        boundaries = np.cumsum(doc_start)[:-1]
        starts[boundaries] = True
    positions = _positions_from_starts(starts)
    lengths = np.full(rows, seq_len, dtype=np.int32)
    lengths[-1] = n - (rows - 1) * seq_len
    return PackedRows(
        input_ids=ids.reshape(rows, seq_len).astype(np.int32),
        labels=labels.reshape(rows, seq_len).astype(np.int32),
        position_ids=positions.reshape(rows, seq_len).astype(np.int32),
        lengths=lengths,
    )


def sample_labels(input_ids: Sequence[int], train_mask: Sequence[int]) -> np.ndarray:
    """Shifted labels for one sample: labels[i] = input_ids[i+1] where token i+1 is trained
    (train_mask[i+1] true), IGNORE elsewhere; the last position has no target."""
    ids = np.asarray(input_ids, dtype=np.int64)
    mask = np.asarray(train_mask, dtype=bool)
    if ids.shape != mask.shape:
        raise ValueError(f"input_ids and mask lengths differ: {ids.shape} vs {mask.shape}")
    labels = np.full(ids.size, IGNORE, dtype=np.int64)
    labels[:-1] = np.where(mask[1:], ids[1:], IGNORE)
    return labels


def best_fit_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Assign items (by index) to bins of `capacity`: longest first, each into the bin with
    the least room that still fits it. Deterministic (ties broken by index)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (room left, bin index)
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"item {i} has length {n} > capacity {capacity}")
        if n <= 0:
            raise ValueError(f"item {i} is empty")
        pos = bisect.bisect_left(free, (n, -1))
        if pos < len(free):
            room, b = free.pop(pos)
            bins[b].append(i)
            room -= n
        else:
            b = len(bins)
            bins.append([i])
            room = capacity - n
        if room > 0:
            bisect.insort(free, (room, b))
    return bins


def pack_samples(
    samples: Sequence[tuple[np.ndarray, np.ndarray]],
    max_length: int,
    pad_id: int,
    *,
    packing: bool = True,
) -> tuple[PackedRows, list[list[int]]]:
    """Place whole (input_ids, labels) samples into rows of max_length.

    Positions restart at every sample, so samples sharing a row do not attend to each other.
    Returns the rows and, per row, the indices of the samples in it (in row order).
    Without `packing`, each sample gets its own row.
    """
    lengths = [len(s[0]) for s in samples]
    if not samples:
        raise ValueError("no samples to pack")
    for i, (ids, labels) in enumerate(samples):
        if len(ids) != len(labels):
            raise ValueError(f"sample {i}: input_ids and labels lengths differ ({len(ids)} vs {len(labels)})")
        if len(ids) > max_length:
            raise ValueError(f"sample {i} has {len(ids)} tokens > max_length {max_length}; truncate or drop it first")
    bins = best_fit_bins(lengths, max_length) if packing else [[i] for i in range(len(samples))]
    rows = len(bins)
    ids = np.full((rows, max_length), pad_id, dtype=np.int32)
    labels = np.full((rows, max_length), IGNORE, dtype=np.int32)
    positions = np.zeros((rows, max_length), dtype=np.int32)
    row_len = np.zeros(rows, dtype=np.int32)
    for r, members in enumerate(bins):
        at = 0
        for i in members:
            s_ids, s_labels = samples[i]
            n = len(s_ids)
            ids[r, at : at + n] = s_ids
            labels[r, at : at + n] = s_labels
            positions[r, at : at + n] = np.arange(n)
            at += n
        # Padding continues the last sample's positions (see module docstring).
        positions[r, at:] = np.arange(positions[r, at - 1] + 1, positions[r, at - 1] + 1 + max_length - at)
        row_len[r] = at
    return PackedRows(ids, labels, positions, row_len), bins

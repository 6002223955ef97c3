"""`TensorBatch`: the plain container that workers take and return.

A dict of tensors that share their first (sample) dimension, plus per-sample Python lists
(`meta`, e.g. texts or data sources) and batch-level scalars (`info`). It splits by
data-parallel rank and concatenates back, and it pickles cheaply through Ray's object store.

One layout convention: token fields are padded along dim 1, prompts on the LEFT (the fields in
`LEFT_PADDED`, so the last prompt token is always the last column) and everything else on the
right. Concatenating batches of different widths and trimming padding keep it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

# Token fields padded on the left (see the module doc); every other [B, T, ...] field on the right.
LEFT_PADDED = frozenset({"prompt_ids", "prompt_mask"})


@dataclass
class TensorBatch:
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, list[Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sizes = {k: v.shape[0] for k, v in self.tensors.items()} | {k: len(v) for k, v in self.meta.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"TensorBatch fields disagree on the number of samples: {sizes}")

    def __len__(self) -> int:
        for v in self.tensors.values():
            return v.shape[0]
        for v in self.meta.values():
            return len(v)
        return 0

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    def __contains__(self, key: str) -> bool:
        return key in self.tensors or key in self.meta

    def select(self, index: torch.Tensor | list[int] | slice) -> TensorBatch:
        """The samples at `index` (a slice, a list of positions or a bool/long tensor)."""
        if isinstance(index, slice):
            positions = list(range(len(self)))[index]
        elif isinstance(index, torch.Tensor):
            positions = index.nonzero().flatten().tolist() if index.dtype == torch.bool else index.tolist()
        else:
            positions = list(index)
        idx = torch.as_tensor(positions, dtype=torch.long)
        return TensorBatch(
            {k: v.index_select(0, idx) for k, v in self.tensors.items()},
            {k: [v[i] for i in positions] for k, v in self.meta.items()},
            dict(self.info),
        )

    def chunk(self, n: int) -> list[TensorBatch]:
        """Split into `n` contiguous parts whose sizes differ by at most one."""
        if n <= 0:
            raise ValueError(f"cannot split a batch into {n} parts")
        size, rest = divmod(len(self), n)
        out, start = [], 0
        for i in range(n):
            end = start + size + (1 if i < rest else 0)
            out.append(self.select(slice(start, end)))
            start = end
        return out

    @staticmethod
    def cat(parts: list[TensorBatch]) -> TensorBatch:
        """Concatenate along samples; `info` of the first part is kept."""
        parts = [p for p in parts if len(p) > 0] or parts[:1]
        if not parts:
            return TensorBatch()
        keys = set(parts[0].tensors)
        if any(set(p.tensors) != keys for p in parts):
            raise ValueError("cannot concatenate batches with different tensor fields")
        tensors = {k: _cat_padded([p.tensors[k] for p in parts], left=k in LEFT_PADDED) for k in parts[0].tensors}
        meta = {k: [x for p in parts for x in p.meta[k]] for k in parts[0].meta}
        return TensorBatch(tensors, meta, dict(parts[0].info))

    def to(self, device: str | torch.device) -> TensorBatch:
        return TensorBatch({k: v.to(device) for k, v in self.tensors.items()}, self.meta, self.info)

    def with_tensors(self, **tensors: torch.Tensor) -> TensorBatch:
        return TensorBatch({**self.tensors, **tensors}, self.meta, self.info)

    def trimmed(self) -> tuple[TensorBatch, slice]:
        """This batch without columns that are padding in every sample: leading prompt columns
        where `prompt_mask` is all 0, trailing response columns where `response_mask` is all 0
        (every right-padded field as wide as `response_mask` is cut alike). Also returns the
        slice of the original response columns kept, to put per-token results back."""
        tensors = dict(self.tensors)
        if "prompt_mask" in tensors and tensors["prompt_mask"].shape[1]:
            used = tensors["prompt_mask"].any(dim=0).nonzero()
            start = int(used[0]) if len(used) else tensors["prompt_mask"].shape[1] - 1
            for k in LEFT_PADDED & tensors.keys():
                tensors[k] = tensors[k][:, start:]
        keep = slice(None)
        if "response_mask" in tensors:
            width = tensors["response_mask"].shape[1]
            used = tensors["response_mask"].any(dim=0).nonzero()
            end = int(used[-1]) + 1 if len(used) else min(width, 1)
            keep = slice(0, end)
            for k, v in tensors.items():
                if k not in LEFT_PADDED and v.dim() >= 2 and v.shape[1] == width:
                    tensors[k] = v[:, :end]
        return TensorBatch(tensors, self.meta, self.info), keep


def micro_batches(batch: TensorBatch, n: int) -> list[tuple[torch.Tensor, TensorBatch, slice]]:
    """Split `batch` into `n` micro-batches of samples of similar length (sorted by prompt +
    response tokens), each `trimmed` of its all-padding columns, so that short samples do not
    pay for the longest one in the batch. Returns (positions in `batch`, micro-batch, kept
    response columns) per part; the parts' sizes differ by at most one.

    Only for computations that are sums over samples (scoring, or a loss normalised by global
    counts): the grouping changes which samples share a micro-batch, never the result."""
    lengths = torch.zeros(len(batch), dtype=torch.long)
    for k in ("prompt_mask", "response_mask"):
        if k in batch.tensors:
            lengths += batch[k].sum(dim=1).long()
    order = torch.sort(lengths, descending=True, stable=True).indices
    parts = batch.select(order).chunk(n)
    positions = torch.split(order, [len(p) for p in parts])
    return [(pos, *part.trimmed()) for pos, part in zip(positions, parts)]


def _cat_padded(tensors: list[torch.Tensor], left: bool = False) -> torch.Tensor:
    """torch.cat along dim 0, padding dim 1 with zeros (on the left or the right) when sequence
    lengths differ."""
    if tensors[0].dim() >= 2 and len({t.shape[1] for t in tensors}) > 1:
        width = max(t.shape[1] for t in tensors)
        lead = (0, 0) * (tensors[0].dim() - 2)
        tensors = [torch.nn.functional.pad(t, lead + ((width - t.shape[1], 0) if left else (0, width - t.shape[1]))) for t in tensors]
    return torch.cat(tensors, dim=0)

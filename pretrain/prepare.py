"""Turning corpus files into the packed arrays the workers train on.

Tokenisation runs in parallel Ray tasks when Ray is up (in-process otherwise); packing and the
data order are computed once by the driver and written into the run folder:

    <run>/data/<phase>/train/{input_ids,labels,position_ids}.npy, order.npy, meta.json
    <run>/data/<phase>/eval/{input_ids,labels,position_ids}.npy, meta.json

Workers memory-map these files (`RowStore`), so every worker sees the same rows without
copying them, and a resumed run reads the identical data. A folder whose `meta.json` holds
the same fingerprint is reused instead of rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qwen25_rl.checkpointing import staging
from qwen25_rl.pretrain.packing import PackedRows

ARRAYS = ("input_ids", "labels", "position_ids")


# ---------------------------------------------------------------------------------------------
# tokenisation


def _tokenize_texts(tokenizer_dir: str, texts: list[str]) -> list[np.ndarray]:
    from qwen25_rl.models import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    enc = tok(texts, add_special_tokens=False)["input_ids"]
    return [np.asarray(e, dtype=np.int32) for e in enc]


def _tokenize_chats(tokenizer_dir: str, conversations: list[list[dict[str, str]]]) -> list[tuple[list[int], list[int]]]:
    from qwen25_rl.models import load_tokenizer
    from qwen25_rl.pretrain.sft_data import assistant_token_mask

    tok = load_tokenizer(tokenizer_dir)
    return [assistant_token_mask(tok, c) for c in conversations]


def _parallel(fn, tokenizer_dir: str, items: list, batch: int) -> list:
    """fn(tokenizer_dir, chunk) over chunks of `items`, as Ray tasks when Ray is initialised;
    results concatenated in input order."""
    chunks = [items[i : i + batch] for i in range(0, len(items), batch)]
    try:
        import ray

        use_ray = ray.is_initialized() and len(chunks) > 1
    except ImportError:
        use_ray = False
    if use_ray:
        task = ray.remote(num_cpus=1)(fn)
        results = ray.get([task.remote(tokenizer_dir, c) for c in chunks])
    else:
        results = [fn(tokenizer_dir, c) for c in chunks]
    return [x for r in results for x in r]


def tokenize_documents(tokenizer_dir: str | Path, texts: list[str], batch: int = 2000) -> list[np.ndarray]:
    return _parallel(_tokenize_texts, str(tokenizer_dir), texts, batch)


def tokenize_conversations(tokenizer_dir: str | Path, conversations: list, batch: int = 1000) -> list[tuple[list[int], list[int]]]:
    return _parallel(_tokenize_chats, str(tokenizer_dir), conversations, batch)


# ---------------------------------------------------------------------------------------------
# storage


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_meta(folder: str | Path) -> dict | None:
    p = Path(folder) / "meta.json"
    return json.loads(p.read_text()) if p.is_file() else None


def save_rows(folder: str | Path, rows: PackedRows, meta: dict, order: np.ndarray | None = None) -> Path:
    """Write rows (and order) as one folder, published atomically over `folder`."""
    arrays = {name: getattr(rows, name) for name in ARRAYS}
    return save_arrays(folder, arrays, rows.lengths, {**meta, **rows.stats(), "seq_len": rows.seq_len}, order)


def save_arrays(
    folder: str | Path, arrays: dict[str, np.ndarray], lengths: np.ndarray, meta: dict, order: np.ndarray | None = None
) -> Path:
    """Write per-row arrays (same first dimension), each row's token count (`lengths`), the
    step order and `meta.json` as one folder, published atomically over `folder`."""
    with staging(Path(folder)) as tmp:
        for name, value in arrays.items():
            np.save(tmp / f"{name}.npy", value)
        np.save(tmp / "lengths.npy", lengths)
        if order is not None:
            np.save(tmp / "order.npy", order)
        (tmp / "meta.json").write_text(json.dumps({**meta, "arrays": sorted(arrays)}, indent=2) + "\n")
    return Path(folder)


class RowStore:
    """Memory-mapped rows of one prepared folder (packed LM rows by default; `names` lists other
    arrays, e.g. a reward model's pairs); `batch(rows)` gives torch tensors, integer arrays as
    int64, float arrays as they are."""

    def __init__(self, folder: str | Path, names: Sequence[str] = ARRAYS):
        self.folder = Path(folder)
        if not (self.folder / "meta.json").is_file():
            raise FileNotFoundError(f"{self.folder}: no prepared data (meta.json missing)")
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.arrays = {n: np.load(self.folder / f"{n}.npy", mmap_mode="r") for n in names}
        self.key = names[0]
        self.lengths = np.load(self.folder / "lengths.npy", mmap_mode="r")
        order_path = self.folder / "order.npy"
        self.order = np.load(order_path, mmap_mode="r") if order_path.is_file() else None

    @property
    def num_rows(self) -> int:
        return int(self.arrays[self.key].shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.arrays[self.key].shape[1])

    def numpy_batch(self, rows: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        idx = np.asarray(rows, dtype=np.int64)
        return {n: np.asarray(a[idx], dtype=np.int64 if a.dtype.kind in "iu" else a.dtype) for n, a in self.arrays.items()}

    def batch(self, rows: Sequence[int] | np.ndarray, device=None) -> dict:
        import torch

        return {n: torch.from_numpy(v).to(device) if device is not None else torch.from_numpy(v) for n, v in self.numpy_batch(rows).items()}


def batch_fingerprint(input_ids: np.ndarray) -> str:
    """A short hash of a batch's token ids: lets tests and logs compare data order across runs."""
    return hashlib.sha1(np.ascontiguousarray(input_ids, dtype=np.int64).tobytes()).hexdigest()[:16]

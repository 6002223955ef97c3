"""A single-process reference of what the Ray Train workers compute, with nothing around it.

Given a run folder's initial model and prepared rows, `reference_steps` performs the same
optimizer updates as `pretrain.worker` (same rows per step, same token-count normalisation,
same AdamW / clipping / lr schedule) in this process: no Ray, no DeepSpeed, no DDP. The
throughput benchmark uses it as the "plain PyTorch loop" and the multi-worker test as the
oracle the distributed run must match.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from qwen25_rl.pretrain.data_order import step_rows
from qwen25_rl.pretrain.packing import IGNORE
from qwen25_rl.pretrain.prepare import RowStore
from qwen25_rl.training.engines import make_optimizer
from qwen25_rl.training.schedule import PhaseSchedule


@dataclass
class ReferenceResult:
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    step_s: list[float] = field(default_factory=list)
    tokens_per_step: list[int] = field(default_factory=list)


def reference_steps(
    model_dir: str | Path,
    data_dir: str | Path,
    *,
    steps: int,
    global_batch: int,
    micro_batch: int,
    schedule: PhaseSchedule,
    optimizer: dict,
    threads: int | None = None,
) -> ReferenceResult:
    from qwen25_rl.algorithms import lm_loss
    from qwen25_rl.models import load_model

    if threads:
        torch.set_num_threads(threads)
    model = load_model(model_dir, attn_implementation="sdpa")
    model.train()
    opt = make_optimizer(model, optimizer)
    store = RowStore(data_dir)
    out = ReferenceResult()
    for s in range(steps):
        t0 = time.perf_counter()
        rows = step_rows(store.order, s, global_batch)
        n = float((store.arrays["labels"][rows] != IGNORE).sum())
        total = 0.0
        for m in range(global_batch // micro_batch):
            b = store.batch(rows[m * micro_batch : (m + 1) * micro_batch])
            logits = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
            loss = lm_loss(logits, b["labels"], ignore_index=IGNORE, num_tokens=n)
            loss.backward()
            total += float(loss.detach())
        params = [p for p in model.parameters() if p.grad is not None]
        if optimizer.get("grad_clip"):
            norm = torch.nn.utils.clip_grad_norm_(params, optimizer["grad_clip"])
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        for g in opt.param_groups:
            g["lr"] = schedule.lr(s)
        opt.step()
        opt.zero_grad(set_to_none=True)
        out.step_s.append(time.perf_counter() - t0)
        out.losses.append(total)
        out.grad_norms.append(float(norm))
        out.tokens_per_step.append(int(np.asarray(store.lengths[rows]).sum()))
    return out

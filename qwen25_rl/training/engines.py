"""The two ways a worker trains its model replica: DeepSpeed ZeRO or torch DDP.

Both expose the same small interface to the training loop: `module` (the unwrapped model),
`forward(**batch)`, `backward(loss, last_micro)`, `step(lr) -> grad norm`, and checkpoint
`save(dir)` / `load(dir)` of the optimizer state. The loop scales every micro-batch loss as
(sum of token losses) / (tokens in the whole optimizer step) * world size, because both DDP
and DeepSpeed average gradients over ranks; the resulting gradient is the mean over every
trained token of the step, however the step is split.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

ENGINES: dict[str, type] = {}


def register_engine(name: str):
    def deco(cls):
        if name in ENGINES:
            raise ValueError(f"engine {name!r} registered twice")
        ENGINES[name] = cls
        return cls

    return deco


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only (not on biases or norm weights)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, opt: dict) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        param_groups(model, opt["weight_decay"]), lr=opt["lr"], betas=tuple(opt["betas"]), eps=opt["eps"], foreach=True
    )


@register_engine("deepspeed")
class DeepSpeedEngine:
    """DeepSpeed with ZeRO stage 0-3. The engine does gradient accumulation itself: it
    reduces (and under ZeRO partitions) gradients and steps only at the boundary."""

    def __init__(self, model, *, opt: dict, trainer: dict, grad_accumulation: int, bf16: bool, world_size: int):
        import deepspeed

        self.world_size = world_size
        self.micro_batch_size = trainer["micro_batch_size"]
        self.grad_accumulation = grad_accumulation
        optimizer = make_optimizer(model, opt)
        ds_config = {
            "train_micro_batch_size_per_gpu": self.micro_batch_size,
            "gradient_accumulation_steps": grad_accumulation,
            "train_batch_size": self.micro_batch_size * grad_accumulation * world_size,
            "gradient_clipping": opt["grad_clip"] or 0.0,
            "zero_optimization": {"stage": trainer["zero_stage"]},
            "bf16": {"enabled": bf16},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        # torch.distributed is already up (Ray Train's backend); DeepSpeed adopts it.
        deepspeed.init_distributed(dist_backend="nccl" if trainer["use_gpu"] else "gloo")
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
        self.module = self.engine.module

    def set_grad_accumulation(self, grad_accumulation: int) -> None:
        if grad_accumulation != self.grad_accumulation:
            self.engine.set_train_batch_size(self.micro_batch_size * grad_accumulation * self.world_size)
            self.grad_accumulation = grad_accumulation

    def micro_batch(self, last: bool):
        return contextlib.nullcontext()

    def forward(self, **batch):
        return self.engine(**batch)

    def backward(self, loss: torch.Tensor) -> None:
        # The loop already scaled the loss for accumulation (see module docstring).
        self.engine.backward(loss, scale_wrt_gas=False)

    def after_micro_batch(self, last: bool, lr: float) -> float | None:
        """DeepSpeed wants step() after every micro-batch; it updates only at the boundary.
        Returns the pre-clip gradient norm at the boundary."""
        if last:
            for g in self.engine.optimizer.param_groups:
                g["lr"] = lr
        self.engine.step()
        if not last:
            return None
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def export_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Full weights for the HF export. Under ZeRO-3 this is a collective (every rank must
        call it); otherwise None: the module's own state dict is complete."""
        if self.engine.zero_optimization_stage() == 3:
            return self.engine._zero3_consolidated_16bit_state_dict()
        return None

    def save(self, folder: Path, rank: int) -> None:
        # Every rank writes its own optimizer partition; Ray merges the ranks' folders.
        self.engine.save_checkpoint(str(folder / "deepspeed"), tag="state", save_latest=False)

    def load(self, folder: Path) -> None:
        path, _ = self.engine.load_checkpoint(
            str(folder / "deepspeed"), tag="state", load_optimizer_states=True, load_lr_scheduler_states=False
        )
        if path is None:
            raise FileNotFoundError(f"{folder}/deepspeed: DeepSpeed found no checkpoint to resume from")

    def train(self, mode: bool = True) -> None:
        self.engine.train(mode)

    def eval_forward(self, **batch):
        return self.engine(**batch)


@register_engine("ddp")
class DDPEngine:
    """torch DistributedDataParallel; gradients are all-reduced only on the last micro-batch
    (earlier ones run under no_sync, which must cover forward and backward)."""

    def __init__(self, model, *, opt: dict, trainer: dict, grad_accumulation: int, bf16: bool, world_size: int):
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        self.bf16 = bf16
        self.grad_clip = opt["grad_clip"]
        self.module = model
        self.ddp = None
        if dist.is_initialized() and world_size > 1:
            device_ids = [model.device.index] if model.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(model, device_ids=device_ids)
        self.optimizer = make_optimizer(model, opt)

    def set_grad_accumulation(self, grad_accumulation: int) -> None:
        pass  # the loop says which micro-batch is the last one

    def _autocast(self):
        if self.bf16:
            return torch.autocast(device_type=self.module.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def micro_batch(self, last: bool):
        if self.ddp is None or last:
            return contextlib.nullcontext()
        return self.ddp.no_sync()

    def forward(self, **batch):
        with self._autocast():
            return (self.ddp or self.module)(**batch)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def after_micro_batch(self, last: bool, lr: float) -> float | None:
        if not last:
            return None
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        params = [p for p in self.module.parameters() if p.grad is not None]
        if self.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def export_state_dict(self):
        return None

    def save(self, folder: Path, rank: int) -> None:
        if rank == 0:  # the optimizer state is replicated: one copy is enough
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")

    def load(self, folder: Path) -> None:
        path = folder / "optimizer.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: checkpoint has no optimizer state for strategy ddp")
        self.optimizer.load_state_dict(torch.load(path, map_location=self.module.device, weights_only=True))

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)

    def eval_forward(self, **batch):
        with self._autocast():
            return self.module(**batch)

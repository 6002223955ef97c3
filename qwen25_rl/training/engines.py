"""The two ways a worker trains its model replica: DeepSpeed ZeRO or torch DDP.

Both expose the same small interface to the training loop: `module` (the unwrapped model),
`forward(**batch)`, `backward(loss, last_micro)`, `step(lr) -> grad norm`, and checkpoint
`save(dir)` / `load(dir)` of the optimizer state. Either takes an optional `merger`
(qwen25_rl.training.merging.OnlineMerger): the online merging optimizer, which replaces each
optimizer step by its merge with the SFT task vector; its step counter is saved with the
optimizer state (`merger.json`). The loop scales every micro-batch loss as
(sum of token losses) / (tokens in the whole optimizer step) * world size, because both DDP
and DeepSpeed average gradients over ranks; the resulting gradient is the mean over every
trained token of the step, however the step is split.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from qwen25_rl.training.merging import OnlineMerger

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
    reduces (and under ZeRO partitions) gradients and steps only at the boundary.

    With a `merger` (ZeRO stage 0-2 only) the merge works on the weights the optimizer
    steps: its fp32 master copy where it keeps one (see `_master_weights`), and the module's
    parameters are then set from the merged fp32 values."""

    def __init__(
        self,
        model,
        *,
        opt: dict,
        trainer: dict,
        grad_accumulation: int,
        bf16: bool,
        world_size: int,
        merger: OnlineMerger | None = None,
    ):
        if merger is not None and trainer["zero_stage"] not in (0, 1, 2):
            raise ValueError(
                f"online merging needs ZeRO stage 0-2 or ddp (zero_stage is {trainer['zero_stage']}): under ZeRO-3 "
                f"no rank holds whole parameters to merge"
            )
        import deepspeed

        self.merger = merger
        self.world_size = world_size
        self.micro_batch_size = trainer["micro_batch_size"]
        self.grad_accumulation = grad_accumulation
        optimizer = make_optimizer(model, opt)
        ds_config = {
            "train_micro_batch_size_per_gpu": self.micro_batch_size,
            "gradient_accumulation_steps": grad_accumulation,
            "train_batch_size": self.micro_batch_size * grad_accumulation * world_size,
            "gradient_clipping": opt["grad_clip"] or 0.0,
            # `zero_options`: further DeepSpeed zero_optimization keys (e.g. ZeRO-3's
            # stage3_max_live_parameters), for tests and tuning.
            "zero_optimization": {"stage": trainer["zero_stage"], **trainer.get("zero_options", {})},
            "bf16": {"enabled": bf16},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        # torch.distributed is already up (Ray Train's backend); DeepSpeed adopts it.
        deepspeed.init_distributed(dist_backend="nccl" if trainer["use_gpu"] else "gloo")
        if trainer["zero_stage"] == 3:
            # ZeRO-3 gathers a parameter only around its own module's forward and backward; a
            # wrapper that applies the output projection to hidden states itself (the chunked
            # log-prob and fused loss paths) declares it, so that the wrapper's hooks gather it.
            for p in getattr(model, "external_parameters", list)():
                deepspeed.zero.register_external_parameter(model, p)
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
        self.module = self.engine.module
        if merger is not None:
            self._read, self._write = _master_weights(self.engine)

    def set_grad_accumulation(self, grad_accumulation: int) -> None:
        if grad_accumulation != self.grad_accumulation:
            self.engine.set_train_batch_size(self.micro_batch_size * grad_accumulation * self.world_size)
            self.grad_accumulation = grad_accumulation

    def micro_batch(self, last: bool):
        # DeepSpeed on its own places the accumulation boundary by a micro-step counter that
        # runs across steps (`(micro_steps + 1) % gradient_accumulation_steps == 0`); after a
        # step with another number of micro-batches (GRPO's dynamic sampling: 16 samples = 1
        # micro-batch, 24 = 2; a pretraining phase change) it falls on the wrong one: the
        # optimizer steps mid-update, the step's later micro-batches see the new weights and
        # their gradients leak into the next step. The loop knows the boundary: say it.
        self.engine.set_gradient_accumulation_boundary(last)
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
            if self.merger is not None:
                self.merger.snapshot(self.module, read=self._read)
        self.engine.step()
        if not last:
            return None
        if self.merger is not None:
            if self.engine.was_step_applied():
                self.merger.apply(self.module, read=self._read, write=self._write)
            else:  # skipped (an fp16 overflow; not with fp32 or bf16): nothing to merge
                self.merger.discard()
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
        if self.merger is not None and rank == 0:
            self.merger.save(folder)

    def load(self, folder: Path) -> None:
        path, _ = self.engine.load_checkpoint(
            str(folder / "deepspeed"), tag="state", load_optimizer_states=True, load_lr_scheduler_states=False
        )
        if path is None:
            raise FileNotFoundError(f"{folder}/deepspeed: DeepSpeed found no checkpoint to resume from")
        if self.merger is not None:
            self.merger.load(folder)
            self._read, self._write = _master_weights(self.engine)  # loading may rebuild the buffers

    def train(self, mode: bool = True) -> None:
        self.engine.train(mode)

    def eval_forward(self, **batch):
        return self.engine(**batch)


def _master_weights(engine):
    """(read, write) of the weights a DeepSpeed engine's optimizer steps, for the merger.

    read(p) gives parameter p's full fp32 value; write(p, v) sets it, in the master copy and
    in the module parameter (which every rank holds whole under ZeRO 0-2). Where they live:
      ZeRO 1/2: each rank's optimizer steps an fp32 partition (`single_partition_of_fp32_groups`,
        a separate copy even in fp32 training) and copies it into the module parameters after
        the step; the parameters carry DeepSpeed's fragment mapping into it. Writing goes
        through `safe_set_full_fp32_param` (local: each rank sets its own fragment). Reading
        fp32 parameters reads the module (an exact copy after the step); bf16 ones read
        `safe_get_full_fp32_param` (an all-reduce per parameter), so that updates smaller than
        a bf16 step are not rounded away by the merge.
      ZeRO 0 with bf16: FP16_Optimizer keeps the whole fp32 master flat (`fp32_groups_flat`,
        laid out as the bf16 flat buffer the parameters are views of); FP16_UnfusedOptimizer
        (what DeepSpeed picks on CPU) one fp32 tensor per parameter (`fp32_groups`).
      ZeRO 0 in fp32: the optimizer is the torch one, stepping the module parameters.
    """
    stage = engine.zero_optimization_stage()
    opt = engine.optimizer
    if stage in (1, 2):
        from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param

        unlinked = [n for n, p in engine.module.named_parameters() if p.requires_grad and not hasattr(p, "_hp_mapping")]
        if unlinked:
            raise RuntimeError(f"online merging: DeepSpeed linked no fp32 master to the trained parameter {unlinked[0]!r}")

        def read(p):
            return p.detach() if p.dtype == torch.float32 else safe_get_full_fp32_param(p)

        def write(p, value):
            safe_set_full_fp32_param(p, value)  # this rank's fragment (if any) of the master
            p.detach().copy_(value)

        return read, write
    if stage == 0 and isinstance(opt, torch.optim.Optimizer) and not hasattr(opt, "fp16_groups"):

        def write_module(p, value):
            p.detach().copy_(value)

        return (lambda p: p.detach()), write_module
    masters: dict[int, torch.Tensor] = {}
    if stage == 0 and hasattr(opt, "fp16_groups") and hasattr(opt, "fp32_groups_flat"):  # FP16_Optimizer
        for params, flat in zip(opt.fp16_groups, opt.fp32_groups_flat):
            offset = 0
            for p in params:
                masters[id(p)] = flat.detach().narrow(0, offset, p.numel()).view_as(p)
                offset += p.numel()
            if offset != flat.numel():
                raise RuntimeError(f"online merging: DeepSpeed's fp32 master holds {flat.numel()} values, its parameters {offset}")
    elif stage == 0 and hasattr(opt, "fp16_groups") and hasattr(opt, "fp32_groups"):  # FP16_UnfusedOptimizer
        for params, fp32 in zip(opt.fp16_groups, opt.fp32_groups):
            for p, master in zip(params, fp32):
                if master.shape != p.shape:
                    raise RuntimeError(f"online merging: DeepSpeed's fp32 master {tuple(master.shape)} for a {tuple(p.shape)} parameter")
                masters[id(p)] = master.detach()
    if masters:

        def read_master(p):
            return masters[id(p)]

        def write_master(p, value):
            masters[id(p)].copy_(value)
            p.detach().copy_(value)

        return read_master, write_master
    raise ValueError(f"online merging does not know where DeepSpeed's {type(opt).__name__} (ZeRO stage {stage}) keeps its weights")


@register_engine("ddp")
class DDPEngine:
    """torch DistributedDataParallel; gradients are all-reduced only on the last micro-batch
    (earlier ones run under no_sync, which must cover forward and backward). The module's
    parameters are the optimizer's (fp32 also under bf16 autocast): a `merger` merges them in
    place; every rank draws the same masks, so the replicas stay identical."""

    def __init__(
        self,
        model,
        *,
        opt: dict,
        trainer: dict,
        grad_accumulation: int,
        bf16: bool,
        world_size: int,
        merger: OnlineMerger | None = None,
    ):
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        self.merger = merger
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
        if self.merger is not None:
            self.merger.snapshot(self.module)
        self.optimizer.step()
        if self.merger is not None:
            self.merger.apply(self.module)
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def export_state_dict(self):
        return None

    def save(self, folder: Path, rank: int) -> None:
        if rank == 0:  # the optimizer state is replicated: one copy is enough
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
            if self.merger is not None:
                self.merger.save(folder)

    def load(self, folder: Path) -> None:
        path = folder / "optimizer.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: checkpoint has no optimizer state for strategy ddp")
        self.optimizer.load_state_dict(torch.load(path, map_location=self.module.device, weights_only=True))
        if self.merger is not None:
            self.merger.load(folder)

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)

    def eval_forward(self, **batch):
        with self._autocast():
            return self.module(**batch)

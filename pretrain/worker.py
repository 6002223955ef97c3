"""The Ray Train worker loop shared by pretraining and SFT.

`train_loop_per_worker(plan)` runs on every worker of a `TorchTrainer`. The plan (a plain
dict made by `pretrain.driver`) lists the phases to train, each with its prepared data
folder, step count, batch size, lr schedule and RoPE settings. The loop:

1. resumes from `ray.train.get_checkpoint()` when Ray hands one over (worker restart after a
   failure, up to `trainer.max_failures` times in one run, or a rerun of the same run folder),
   else loads the initial model: weights, optimizer, each rank's RNG and the step (so the data
   order position) come back exactly;
2. for every optimizer step takes its rows from the phase's fixed data order (so the order
   after a resume is the order an uninterrupted run would have had), runs the micro-batches,
   scales the loss by the step's global token count, and steps the optimizer;
   At the start of every step each rank records the step it is on in the run folder
   (pretrain.progress; also the chaos tests' seam for killing a worker at a chosen step);
3. records one metrics row per step (loss, lr, grad norm, tokens/s, TFLOP/s, MFU where the
   peak is known) and hands the rows to Ray in batches: `ray.train.report` blocks until the
   controller has taken the previous report, which it polls for every ~2 s, so reporting
   each step of a fast model would stall training; rows are flushed every
   `report_interval_s` instead (all ranks agree on when), and with every checkpoint;
4. every `checkpoint_every` steps and at every phase end reports a checkpoint: HF model +
   tokenizer (rank 0), engine optimizer state, per-rank RNG state and `trainer_state.json`,
   and, written by rank 0 as its last file, the manifest of every rank's files as Ray Train
   assembles them in `checkpoints/step_N/` (`COMPLETE`, qwen25_rl.checkpointing): all ranks'
   uploads are done before Ray registers the checkpoint (and prunes older ones), and a folder
   whose upload was cut short fails verification. A save that runs out of disk space stops
   with an `OutOfSpaceError` naming the folder and the space needed and free.

A resumed worker loads only a checkpoint that verifies: the one the driver chose and verified
(`plan["resume_from"]`, sizes checked again here), or, after a restart inside the run, Ray's
newest, verified here in full (sizes and sha256).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qwen25_rl.checkpointing import (
    CheckpointError,
    checkpoint_step,
    load_rng_state,
    manifest_entries,
    merge_manifest_entries,
    save_rng_state,
    space_code,
    space_error,
    verify,
    write_manifest,
)
from qwen25_rl.pretrain.data_order import step_rows
from qwen25_rl.pretrain.flops import device_peak_tflops, train_flops_per_token
from qwen25_rl.pretrain.packing import IGNORE
from qwen25_rl.pretrain.prepare import RowStore, batch_fingerprint
from qwen25_rl.pretrain.progress import maybe_fail, write_progress
from qwen25_rl.training.engines import ENGINES
from qwen25_rl.training.schedule import PhaseSchedule

STATE_FILE = "trainer_state.json"


def set_rope(model: torch.nn.Module, rope_theta: float | None, max_position_embeddings: int | None) -> None:
    """Set the RoPE base and context length in the model config and rebuild the rotary
    embedding(s) from it (their inverse frequencies are buffers computed at construction)."""
    cfg = model.config
    changed = False
    if rope_theta is not None and float(cfg.rope_parameters.get("rope_theta")) != float(rope_theta):
        cfg.rope_parameters = {**cfg.rope_parameters, "rope_theta": float(rope_theta)}
        changed = True
    if max_position_embeddings is not None and cfg.max_position_embeddings != max_position_embeddings:
        cfg.max_position_embeddings = int(max_position_embeddings)
        changed = True
    if not changed:
        return
    for name, mod in list(model.named_modules()):
        if name.endswith("rotary_emb"):
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            fresh = type(mod)(cfg).to(next(model.parameters()).device)
            setattr(parent, name.rsplit(".", 1)[-1], fresh)


@contextlib.contextmanager
def hidden_states_output(module: torch.nn.Module):
    """Within the block the model's forward returns last hidden states as `.logits` (the
    output projection is skipped) so the loss can apply it in chunks."""
    head = module.lm_head
    module.lm_head = torch.nn.Identity()
    try:
        yield head
    finally:
        module.lm_head = head


def phase_schedule(p: dict) -> PhaseSchedule:
    s = p["schedule"]
    return PhaseSchedule(
        steps=p["steps"], peak_lr=s["peak_lr"], warmup_steps=s["warmup_steps"], decay=s["decay"], min_lr_ratio=s["min_lr_ratio"]
    )


def locate(phases: list[dict], global_step: int) -> tuple[int, int]:
    """(phase index, step within phase) of the 0-based global step; (len, 0) when done."""
    at = global_step
    for i, p in enumerate(phases):
        if at < p["steps"]:
            return i, at
        at -= p["steps"]
    return len(phases), 0


class LossFn:
    """Per micro-batch: (loss to backpropagate, summed token NLL / step tokens)."""

    def __init__(self, chunk_size: int | None):
        from qwen25_rl.algorithms import lm_loss, lm_loss_from_hidden

        self.chunk_size = chunk_size
        self._lm_loss = lm_loss
        self._lm_loss_from_hidden = lm_loss_from_hidden

    def __call__(self, forward, module, batch: dict, num_tokens: float) -> torch.Tensor:
        inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
        if self.chunk_size is None:
            logits = forward(**inputs).logits
            return self._lm_loss(logits, batch["labels"], ignore_index=IGNORE, num_tokens=num_tokens)
        with hidden_states_output(module) as head:
            hidden = forward(**inputs).logits
        return self._lm_loss_from_hidden(
            hidden,
            head.weight,
            batch["labels"],
            bias=head.bias,
            ignore_index=IGNORE,
            num_tokens=num_tokens,
            chunk_size=self.chunk_size,
        )


def _all_gather_object(obj: Any, world: int) -> list[Any]:
    import torch.distributed as dist

    if world == 1 or not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def resume_choice(ray_checkpoint: str | None, resume_from: str | None) -> tuple[str | None, bool]:
    """The checkpoint folder to resume from, and whether the driver verified it in full.

    The driver's choice (`checkpoint.resume`, verified before training started) wins over Ray's
    checkpoint when both are in this run's folder and Ray's is not newer (Ray's snapshot may
    still name a checkpoint the driver set aside, or miss one whose registration was cut
    short); Ray's wins when it is newer (a restart inside this run) or the driver's is another
    run's (which only seeds a fresh run)."""
    if ray_checkpoint is None:
        return resume_from, resume_from is not None
    if resume_from is not None:
        ours, theirs = Path(resume_from).resolve(), Path(ray_checkpoint).resolve()
        with contextlib.suppress(ValueError, IndexError):  # folders not named step_N: not this run's
            if ours.parent == theirs.parent and checkpoint_step(ours) >= checkpoint_step(theirs):
                return resume_from, True
    return ray_checkpoint, False


def _all_reduce_sum(values: list[float], device) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def evaluate(engine, loss_fn: LossFn, store: RowStore, rank: int, world: int, micro_batch: int, max_batches: int | None, device) -> float:
    """Token-mean NLL over the eval rows (sharded by rank). Every rank runs the same number
    of forward passes (short ranks repeat a row with no labels) so collectives stay aligned."""
    rows = np.arange(store.num_rows)
    if max_batches is not None:
        rows = rows[: max_batches * micro_batch * world]
    per_rank = -(-rows.size // world)
    mine = rows[rank::world]
    total = count = 0.0
    engine.train(False)
    with torch.no_grad():
        for start in range(0, per_rank, micro_batch):
            idx = mine[start : start + micro_batch]
            pad = min(micro_batch, per_rank - start) - idx.size
            if idx.size == 0 and pad == 0:
                break
            batch = store.batch(np.concatenate([idx, np.zeros(pad, dtype=np.int64)]) if pad > 0 else idx, device)
            if pad > 0:
                batch["labels"][idx.size :] = IGNORE
            n = float((batch["labels"] != IGNORE).sum())
            total += float(loss_fn(engine.eval_forward, engine.module, batch, 1.0))
            count += n
    engine.train(True)
    total, count = _all_reduce_sum([total, count], device)
    return total / count if count else float("nan")


# ---------------------------------------------------------------------------------------------
# what is trained: a task gives the loop its model, data, loss and evaluation

TRAIN_TASKS: dict[str, str] = {"lm": "qwen25_rl.pretrain.worker", "reward": "qwen25_rl.pretrain.rm_task"}
_TASK_CLASSES: dict[str, type] = {}


def register_task(name: str):
    def deco(cls):
        _TASK_CLASSES[name] = cls
        return cls

    return deco


def make_task(plan: dict[str, Any]):
    """The plan's task (`plan["task"]`, default "lm"), its module imported on demand."""
    import importlib

    name = plan.get("task", "lm")
    if name not in TRAIN_TASKS:
        raise ValueError(f"unknown training task {name!r}; known: {', '.join(TRAIN_TASKS)}")
    importlib.import_module(TRAIN_TASKS[name])
    return _TASK_CLASSES[name](plan)


@register_task("lm")
class LMTask:
    """Pretraining and SFT: next-token loss over packed rows, normalised by the step's trained
    tokens; held-out token-mean NLL."""

    def __init__(self, plan: dict[str, Any]):
        self.plan = plan
        self.loss_fn = LossFn(plan["trainer"]["loss_chunk_size"])

    def load_model(self, path, device):
        from qwen25_rl.models import load_model

        return load_model(path, dtype="float32", attn_implementation=self.plan["model"]["attn_implementation"], device=str(device))

    def store(self, folder: str) -> RowStore:
        return RowStore(folder)

    def step_counts(self, store: RowStore, rows: np.ndarray) -> dict[str, float]:
        # The step's trained-token count over all ranks, read from the data (every rank
        # computes the same number; no communication needed).
        return {"num_tokens": float((store.arrays["labels"][rows] != IGNORE).sum())}

    def micro_loss(self, forward, module, batch: dict, counts: dict[str, float]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss_fn(forward, module, batch, counts["num_tokens"]), {}

    def step_metrics(self, counts: dict[str, float], sums: dict[str, float]) -> dict[str, Any]:
        return {"loss_tokens": int(counts["num_tokens"])}

    def evaluate(
        self, engine, store: RowStore, rank: int, world: int, micro_batch: int, max_batches: int | None, device
    ) -> dict[str, float]:
        return {"eval_loss": evaluate(engine, self.loss_fn, store, rank, world, micro_batch, max_batches, device)}

    def flops_per_token(self, config, seq_len: int) -> float:
        return train_flops_per_token(config, seq_len)

    def save_extra(self, folder: Path) -> None:
        """Rank 0 adds task files to a checkpoint (nothing for a language model)."""


def _quiet_ray_train_reports() -> None:
    """Ray Train logs every report with its whole metrics payload at INFO; ours carries all the
    step rows since the previous report, which the driver already prints one line each."""
    import logging

    try:
        from ray.train.v2._internal.execution import context as report_context  # private: may move

        logging.getLogger(report_context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass


def train_loop_per_worker(plan: dict[str, Any]) -> None:
    import ray.train

    from qwen25_rl.logs import quiet_third_party
    from qwen25_rl.models import load_tokenizer

    quiet_third_party()  # also on a cluster whose runtime env we did not set
    _quiet_ray_train_reports()
    task = make_task(plan)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    trainer = plan["trainer"]
    torch.set_num_threads(trainer["torch_threads"] or trainer["cpus_per_worker"])
    if trainer["use_gpu"]:
        import ray.train.torch

        device = ray.train.torch.get_device()
    else:
        device = torch.device("cpu")
    precision = trainer["precision"]
    bf16 = precision == "bf16" or (precision == "auto" and trainer["use_gpu"])
    phases = plan["phases"]

    # ---- resume or start
    state: dict[str, Any] | None = None
    # Ray's checkpoint (a restart inside this run) or the driver's verified choice (a rerun of
    # this run folder, or an explicit `checkpoint.resume` folder): see resume_choice.
    ckpt = ray.train.get_checkpoint()
    chosen, verified = resume_choice(ckpt.path if ckpt is not None else None, plan.get("resume_from"))
    if chosen is not None and (ckpt is None or chosen != ckpt.path):
        ckpt = ray.train.Checkpoint.from_directory(chosen)
    ckpt_ctx = ckpt.as_directory() if ckpt is not None else contextlib.nullcontext(None)
    with ckpt_ctx as ckpt_dir:
        ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else None
        if ckpt_dir is not None:
            problems = verify(ckpt_dir, hashes=not verified)
            if problems:
                raise CheckpointError(
                    f"checkpoint {ckpt.path} fails verification: {'; '.join(problems)}. Run the stage again "
                    "(checkpoint.resume: auto): it resumes from the newest checkpoint that verifies"
                )
            state = json.loads((ckpt_dir / STATE_FILE).read_text())
            if state["stage"] != plan["stage"]:
                raise ValueError(f"checkpoint {ckpt_dir} is from stage {state['stage']!r}, this run is {plan['stage']!r}")
            if trainer["strategy"] == "deepspeed" and trainer["zero_stage"] > 0 and state["world_size"] != world:
                raise ValueError(
                    f"checkpoint {ckpt_dir} holds ZeRO optimizer partitions for {state['world_size']} workers; "
                    f"resume with trainer.num_workers={state['world_size']} (this run has {world})"
                )
        model = task.load_model(ckpt_dir if ckpt_dir is not None else plan["initial_model"], device)
        if plan["model"]["gradient_checkpointing"]:
            model.gradient_checkpointing_enable()
        global_step = state["step"] if state else 0
        phase_idx, _ = locate(phases, global_step)
        start_phase = phases[min(phase_idx, len(phases) - 1)]
        set_rope(model, start_phase["rope_theta"], start_phase["max_position_embeddings"])
        ga = start_phase["global_batch"] // (trainer["micro_batch_size"] * world)
        engine = ENGINES[trainer["strategy"]](
            model, opt=plan["optimizer"], trainer=trainer, grad_accumulation=ga, bf16=bf16, world_size=world
        )
        if ckpt_dir is not None:
            engine.load(ckpt_dir)
            rng_file = ckpt_dir / f"rng_rank{rank}.pt"
            if rng_file.is_file():
                load_rng_state(rng_file)
        else:
            torch.manual_seed(plan["seed"] + rank)
    module = engine.module
    tokenizer = load_tokenizer(plan["tokenizer_dir"]) if rank == 0 else None
    engine.train(True)
    peak = trainer["peak_tflops"] or device_peak_tflops(
        torch.cuda.get_device_name(device) if device.type == "cuda" else None, "bf16" if bf16 else "fp32"
    )

    pending: list[dict[str, Any]] = []
    last_flush = time.monotonic()
    interval = trainer["report_interval_s"]

    def payload() -> dict[str, Any]:
        nonlocal last_flush
        rows = list(pending)
        pending.clear()
        last_flush = time.monotonic()
        return {**(rows[-1] if rows else {"step": global_step}), "rows": rows}

    def flush_due() -> bool:
        due = 1.0 if time.monotonic() - last_flush >= interval else 0.0
        # Ranks' clocks differ; any rank being due makes all report (same call count).
        return _all_reduce_sum([due], device)[0] > 0 if world > 1 else due > 0

    def save_checkpoint(phase: dict, phase_step: int) -> None:
        name = f"step_{global_step}"
        dest = Path(plan["checkpoints_dir"]) / name if plan.get("checkpoints_dir") else Path(name)
        tmp = Path(tempfile.mkdtemp(prefix=f"qwen25_rl_ckpt_{global_step}_r{rank}_"))
        uploading = False
        try:
            engine.save(tmp, rank)
            export = engine.export_state_dict()  # collective under ZeRO-3
            if rank == 0:
                module.save_pretrained(tmp, state_dict=export, safe_serialization=True)
                tokenizer.save_pretrained(tmp)
                task.save_extra(tmp)
                trainer_state = {
                    "stage": plan["stage"],
                    "step": global_step,
                    "phase": phase["name"],
                    "phase_step": phase_step,
                    "world_size": world,
                    "strategy": trainer["strategy"],
                    "zero_stage": trainer["zero_stage"],
                    "time": time.time(),
                }
                (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n")
            save_rng_state(tmp / f"rng_rank{rank}.pt")
            # The manifest of the folder Ray assembles from every rank's files, rank 0's last file.
            parts = _all_gather_object(manifest_entries(tmp), world)
            if rank == 0:
                write_manifest(tmp, merge_manifest_entries(parts))
            uploading = True
            ray.train.report(
                payload(),
                checkpoint=ray.train.Checkpoint.from_directory(str(tmp)),
                checkpoint_dir_name=name,
                delete_local_checkpoint_after_upload=True,
            )
        except Exception as e:
            code = space_code(e, [tmp, dest])
            if code is None:
                raise
            written = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
            shutil.rmtree(tmp, ignore_errors=True)
            if uploading and dest.is_absolute():
                shutil.rmtree(dest, ignore_errors=True)  # this step's upload, cut short: not registered
            raise space_error(code, dest, written, [tmp.parent]) from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # ---- train
    # The run folder (Ray Train's storage is its checkpoints/): where each rank records the step
    # it is on (pretrain.progress), so a worker killed from outside can be named with its step.
    run_dir = Path(plan["checkpoints_dir"]).parent if plan.get("checkpoints_dir") else None
    mb = trainer["micro_batch_size"]
    every = plan["checkpoint_every"]
    log_every = plan["log_every"]
    eval_every = trainer["eval_every_n_steps"]
    for pi in range(phase_idx, len(phases)):
        phase = phases[pi]
        first_step = global_step - sum(p["steps"] for p in phases[:pi])
        set_rope(module, phase["rope_theta"], phase["max_position_embeddings"])
        B = phase["global_batch"]
        ga = B // (mb * world)
        engine.set_grad_accumulation(ga)
        store = task.store(phase["train_dir"])
        eval_store = task.store(phase["eval_dir"]) if phase.get("eval_dir") else None
        schedule = phase_schedule(phase)
        flops_per_token = task.flops_per_token(module.config, store.seq_len)
        if eval_store is not None and first_step == 0:
            first = task.evaluate(engine, eval_store, rank, world, mb, trainer["eval_max_batches"], device)
            pending.append({"step": global_step, "phase": phase["name"], **first, "wall_time": time.time()})
        # A step's time runs from the end of the previous step's update to the end of its own,
        # so the previous step's report / checkpoint / evaluation cost is counted, not hidden.
        t0 = time.perf_counter()
        for s in range(first_step, phase["steps"]):
            if run_dir is not None:
                write_progress(run_dir, rank, global_step + 1, phase["name"])
                maybe_fail(plan.get("fault"), run_dir, rank, global_step + 1)
            all_rows = step_rows(store.order, s, B)
            # The step's global normalisers (e.g. trained tokens), the same on every rank.
            counts = task.step_counts(store, all_rows)
            mine = step_rows(store.order, s, B, rank, world)
            lr = schedule.lr(s)
            loss_acc = 0.0
            sums: dict[str, float] = {}
            grad_norm = None
            for m in range(ga):
                batch = store.batch(mine[m * mb : (m + 1) * mb], device)
                last = m == ga - 1
                with engine.micro_batch(last):
                    loss, stats = task.micro_loss(engine.forward, module, batch, counts)
                    engine.backward(loss * world)
                loss_acc += float(loss.detach())
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                grad_norm = engine.after_micro_batch(last, lr)
            global_step += 1
            keys = sorted(sums)
            loss_sum, *summed = _all_reduce_sum([loss_acc, *(sums[k] for k in keys)], device)
            sums = dict(zip(keys, summed))
            t_end = time.perf_counter()
            dt, t0 = t_end - t0, t_end
            tokens = int(store.lengths[all_rows].sum())
            metrics: dict[str, Any] = {
                "step": global_step,
                "phase": phase["name"],
                "loss": loss_sum,
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens": tokens,
                **task.step_metrics(counts, sums),
                "step_time_s": dt,
                "tokens_per_s": tokens / dt,
                "tflops": tokens * flops_per_token / dt / 1e12,
                "wall_time": time.time(),
            }
            if peak:
                metrics["mfu"] = metrics["tflops"] / (peak * world)
            if rank == 0:
                metrics["batch_hash"] = batch_fingerprint(store.numpy_batch(all_rows)[store.key])
            if plan.get("epoch_rows"):
                metrics["epoch"] = (s + 1) * B / plan["epoch_rows"]
            last_of_phase = s == phase["steps"] - 1
            if eval_store is not None and ((eval_every and global_step % eval_every == 0) or last_of_phase):
                metrics.update(task.evaluate(engine, eval_store, rank, world, mb, trainer["eval_max_batches"], device))
            if not math.isfinite(loss_sum):
                raise FloatingPointError(f"loss is {loss_sum} at step {global_step} (phase {phase['name']})")
            if global_step % log_every == 0 or any(k.startswith("eval_") for k in metrics):
                pending.append(metrics)
            if (every and global_step % every == 0) or last_of_phase:
                save_checkpoint(phase, s + 1)
            elif flush_due():
                ray.train.report(payload())

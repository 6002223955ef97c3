"""Policy and reference workers: a Qwen2 model scored on (prompt, response) batches.

`PolicyWorker` trains through DeepSpeed ZeRO (or torch DDP) from `qwen25_rl.training.engines`, the same
engines the pretraining workers use; `ReferenceWorker` is a frozen copy that only scores.

The model is wrapped in `ResponseScorer`, whose forward returns per-token log-probs (and
entropy) of the response computed from the last hidden states in chunks, or, in training, the
policy loss itself through the fused path (`policy_loss_from_hidden`: the loss is known up front,
so each chunk's logits are computed once and never again in backward: 3 vocabulary-sized matmuls
instead of 4). The training engine wraps that module, so DDP's and DeepSpeed's gradient hooks
see the whole computation, and full [batch, tokens, vocab] logits never exist.

Loss normalisation: every micro-batch's loss is divided by the GLOBAL token / sequence count of
its mini-batch (all-reduced over ranks) and multiplied by the world size (both engines average
gradients over ranks), so the update is the same however the mini-batch is split into
micro-batches and ranks.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qwen25_rl.actors.base import DistributedWorker, inject_fault
from qwen25_rl.actors.weight_sync import WeightSource
from qwen25_rl.algorithms.fused import policy_loss_from_hidden
from qwen25_rl.batch import TensorBatch, micro_batches
from qwen25_rl.checkpointing import load_rng_state, save_rng_state
from qwen25_rl.errors import UserValueError
from qwen25_rl.models.scoring import response_hidden, response_log_probs

# Metrics of `policy_loss` that are loss terms (sums over the step's tokens), not means.
ADDITIVE_METRICS = {"pg_loss", "kl_loss"}


class ResponseScorer(nn.Module):
    """nn.Module around a causal LM: forward(batch fields) -> (log-probs [B,R], entropy [B,R]),
    or, given `policy_loss_inputs`, the `FusedPolicyLossOutput` of `policy_loss_from_hidden`."""

    def __init__(self, model: nn.Module, chunk_size: int = 1024):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size

    @property
    def device(self) -> torch.device:
        return self.model.device

    def external_parameters(self) -> list[nn.Parameter]:
        """Parameters that this module's forward reads outside their own module's forward: the
        output projection, applied in chunks to the hidden states (ZeRO-3 must gather them
        for this module, see DeepSpeedEngine)."""
        head = self.model.get_output_embeddings()
        return [p for p in (head.weight, getattr(head, "bias", None)) if p is not None]

    def forward(
        self,
        prompt_ids,
        prompt_mask,
        response_ids,
        response_mask,
        temperature: float = 1.0,
        with_entropy: bool = False,
        policy_loss_inputs: dict[str, Any] | None = None,
    ):
        if policy_loss_inputs is not None:
            hidden, weight, bias = response_hidden(self.model, prompt_ids, prompt_mask, response_ids, response_mask)
            # Whole sequences per chunk, about chunk_size scored tokens each (the same scratch
            # memory as the log-prob path's token chunks).
            rows = max(1, self.chunk_size // max(1, response_ids.shape[1]))
            out = policy_loss_from_hidden(
                hidden,
                weight,
                response_ids,
                response_mask=response_mask,
                bias=bias,
                temperature=temperature,
                rows_per_chunk=rows,
                compute_entropy=with_entropy,
                **policy_loss_inputs,
            )
            # ZeRO-3 gathers this module's parameters again for backward through hooks on the
            # tensors its forward returns; it does not look inside a dataclass.
            return out.loss, out
        lp, ent = response_log_probs(
            self.model,
            prompt_ids,
            prompt_mask,
            response_ids,
            response_mask,
            temperature=temperature,
            with_entropy=with_entropy,
            chunk_size=self.chunk_size,
        )
        return lp, ent if ent is not None else torch.zeros_like(lp)


@dataclass
class TrainSettings:
    """How the policy trains; a plain dataclass so it crosses Ray cheaply (built from the
    stage config by the controller)."""

    strategy: str = "deepspeed"  # deepspeed | ddp
    zero_stage: int = 2
    micro_batch_size: int = 8
    lr: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    bf16: bool = False
    gradient_checkpointing: bool = False
    chunk_size: int = 1024
    seed: int = 0
    # Further DeepSpeed zero_optimization keys (e.g. ZeRO-3's stage3_max_live_parameters).
    zero_options: dict[str, Any] | None = None
    # Online Merging Optimizer around AdamW (qwen25_rl.training.merging): None, or
    # {"method": "ondare" | "onties", "base_model": folder, "alpha", "keep", "rescale"}.
    merge: dict[str, Any] | None = None


@dataclass
class DPOSettings:
    """The DPO objective of one update (see qwen25_rl.algorithms.dpo.dpo_loss)."""

    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    rpo_alpha: float = 0.0
    length_normalize: bool = False


@dataclass
class LossSettings:
    """The PPO/GRPO objective of one update (see qwen25_rl.algorithms.policy_loss)."""

    ppo_epochs: int = 1
    num_mini_batches: int = 1
    temperature: float = 1.0
    loss_type: str = "ppo"
    loss_agg_mode: str = "token-mean"
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = None
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    tis: bool = False
    tis_mode: str = "truncate"
    tis_low: float = 0.0
    tis_high: float = 2.0
    max_response_length: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


PAIR_FIELDS = ("chosen", "rejected")


def stack_pair_rows(pairs: TensorBatch) -> TensorBatch:
    """A response batch of 2P rows, chosen responses first, then rejected, each after its
    pair's prompt: one forward pass scores both sides (as TRL's concatenated forward)."""
    width = max(pairs["chosen_ids"].shape[1], pairs["rejected_ids"].shape[1])

    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]))

    return TensorBatch(
        {
            "prompt_ids": pairs["prompt_ids"].repeat(2, 1),
            "prompt_mask": pairs["prompt_mask"].repeat(2, 1),
            "response_ids": torch.cat([pad(pairs["chosen_ids"]), pad(pairs["rejected_ids"])]),
            "response_mask": torch.cat([pad(pairs["chosen_mask"]), pad(pairs["rejected_mask"])]),
        }
    )


def pair_micro_batches(pairs: TensorBatch, n: int) -> list[tuple[torch.Tensor, TensorBatch]]:
    """`n` micro-batches of pairs of similar length (prompt + longer response), each trimmed of
    its all-padding columns; returns (positions in `pairs`, micro-batch) per part."""
    lengths = pairs["prompt_mask"].sum(1) + torch.maximum(pairs["chosen_mask"].sum(1), pairs["rejected_mask"].sum(1))
    order = torch.sort(lengths.long(), descending=True, stable=True).indices
    parts = pairs.select(order).chunk(n)
    positions = torch.split(order, [len(p) for p in parts])
    return [(pos, _trim_pairs(part)) for pos, part in zip(positions, parts)]


def _trim_pairs(mb: TensorBatch) -> TensorBatch:
    if len(mb) == 0:
        return mb
    tensors = dict(mb.tensors)
    used = tensors["prompt_mask"].any(0).nonzero()
    start = int(used[0]) if len(used) else tensors["prompt_mask"].shape[1] - 1
    tensors["prompt_ids"], tensors["prompt_mask"] = tensors["prompt_ids"][:, start:], tensors["prompt_mask"][:, start:]
    for side in PAIR_FIELDS:
        used = tensors[f"{side}_mask"].any(0).nonzero()
        end = int(used[-1]) + 1 if len(used) else 1
        tensors[f"{side}_ids"], tensors[f"{side}_mask"] = tensors[f"{side}_ids"][:, :end], tensors[f"{side}_mask"][:, :end]
    return TensorBatch(tensors, mb.meta, mb.info)


class ReferenceWorker(DistributedWorker):
    """A frozen model that scores responses (the KL anchor)."""

    fault_name = "reference"  # the worker kind in the chaos tests' fault seam (inject_fault)

    def __init__(self, model_path: str, *, torch_threads: int | None = None, chunk_size: int = 1024, dtype: str = "float32"):
        super().__init__(torch_threads=torch_threads)
        self.model_path = model_path
        self.chunk_size = chunk_size
        self.dtype = dtype
        self.scorer: ResponseScorer | None = None

    def init_model(self) -> int:
        from qwen25_rl.models import load_model

        model = load_model(self.model_path, dtype=self.dtype)
        model.requires_grad_(False)
        self.scorer = ResponseScorer(model.eval(), self.chunk_size)
        return sum(p.numel() for p in model.parameters())

    def _forward(self, mb: TensorBatch, temperature: float, with_entropy: bool):
        return self.scorer(mb["prompt_ids"], mb["prompt_mask"], mb["response_ids"], mb["response_mask"], temperature, with_entropy)

    @torch.no_grad()
    def log_probs(
        self, batch: TensorBatch, *, temperature: float = 1.0, micro_batch_size: int = 8, with_entropy: bool = False
    ) -> TensorBatch:
        """Per-token log-probs (and entropy) of the responses; zero outside the response mask."""
        width = batch["response_mask"].shape[1]
        log_probs = torch.zeros(len(batch), width, dtype=torch.float32)
        entropy = torch.zeros(len(batch), width, dtype=torch.float32) if with_entropy else None
        for positions, mb, keep in micro_batches(batch, max(1, math.ceil(len(batch) / micro_batch_size))):
            if len(mb) == 0:
                continue
            lp, ent = self._forward(mb, temperature, with_entropy)
            mask = mb["response_mask"].to(lp.device, lp.dtype)
            log_probs[positions, keep] = (lp * mask).float().cpu()
            if with_entropy:
                entropy[positions, keep] = (ent * mask).float().cpu()
        out = {"log_probs": log_probs}
        if with_entropy:
            out["entropy"] = entropy
        return TensorBatch(out)

    @torch.no_grad()
    def pair_log_probs(self, pairs: TensorBatch, *, micro_batch_size: int = 8) -> TensorBatch:
        """Summed log-probs (temperature 1) of each pair's chosen and rejected responses:
        `chosen_logps`, `rejected_logps` [P] (float32), plus the response lengths."""
        inject_fault(self.fault_name, "pair_log_probs")  # a no-op unless a chaos test set its env var
        chosen = torch.zeros(len(pairs), dtype=torch.float32)
        rejected = torch.zeros(len(pairs), dtype=torch.float32)
        for positions, mb in pair_micro_batches(pairs, max(1, math.ceil(len(pairs) / micro_batch_size))):
            if len(mb) == 0:
                continue
            c, r = self._pair_sums(mb)
            chosen[positions], rejected[positions] = c.float().cpu(), r.float().cpu()
        return TensorBatch(
            {
                "chosen_logps": chosen,
                "rejected_logps": rejected,
                "chosen_lengths": pairs["chosen_mask"].sum(1).float(),
                "rejected_lengths": pairs["rejected_mask"].sum(1).float(),
            }
        )

    def _pair_sums(self, mb: TensorBatch, *, temperature: float = 1.0):
        """One forward pass over the chosen and rejected responses of `mb` stacked as 2m rows
        (the prompt repeated): summed response log-probs [m] of each."""
        rows = stack_pair_rows(mb)
        lp, _ = self._forward(rows, temperature, False)
        mask = rows["response_mask"].to(lp.device, lp.dtype)
        sums = (lp * mask).sum(1)
        m = len(mb)
        return sums[:m], sums[m:]

    def reload(self, model_path: str) -> int:
        """Score with the weights of another checkpoint folder from now on (the reference of a
        DPO round that starts from the previous round's policy)."""
        self.model_path = model_path
        return self.init_model()


class PolicyWorker(ReferenceWorker, WeightSource):
    """The trained policy: DeepSpeed ZeRO / DDP engine, PPO updates, checkpoints, weight export."""

    fault_name = "policy"

    def __init__(self, model_path: str, settings: TrainSettings | dict, *, torch_threads: int | None = None):
        settings = settings if isinstance(settings, TrainSettings) else TrainSettings(**settings)
        super().__init__(model_path, torch_threads=torch_threads, chunk_size=settings.chunk_size)
        self.settings = settings
        self.engine = None

    def init_model(self) -> int:
        """Build the model and the training engine (after init_distributed: engines need the group)."""
        import os

        from qwen25_rl.models import load_model
        from qwen25_rl.training.engines import ENGINES

        s = self.settings
        if s.strategy not in ENGINES:
            raise ValueError(f"unknown training strategy {s.strategy!r}; known: {', '.join(ENGINES)}")
        torch.manual_seed(s.seed + self.rank)
        use_gpu = torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES", "") != ""
        model = load_model(self.model_path, dtype="float32", device="cuda" if use_gpu else None)
        if s.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        merger = None
        if s.merge:
            from qwen25_rl.training.merging import build_merger

            m = s.merge
            merger = build_merger(
                model, method=m["method"], base_model=m["base_model"], alpha=m["alpha"], keep=m["keep"], seed=s.seed, rescale=m["rescale"]
            )
        self.engine = ENGINES[s.strategy](
            ResponseScorer(model, s.chunk_size),
            opt={"lr": s.lr, "betas": s.betas, "eps": s.eps, "weight_decay": s.weight_decay, "grad_clip": s.grad_clip},
            trainer={
                "micro_batch_size": s.micro_batch_size,
                "zero_stage": s.zero_stage,
                "zero_options": s.zero_options or {},
                "use_gpu": use_gpu,
                "strategy": s.strategy,
            },
            grad_accumulation=1,
            bf16=s.bf16,
            world_size=self.world_size,
            merger=merger,
        )
        self.scorer = self.engine.module
        self.device = next(self.scorer.parameters()).device
        return sum(p.numel() for p in model.parameters())

    def _forward(self, mb: TensorBatch, temperature: float, with_entropy: bool):
        mb = mb.to(self.device)
        return self.engine.forward(
            prompt_ids=mb["prompt_ids"],
            prompt_mask=mb["prompt_mask"],
            response_ids=mb["response_ids"],
            response_mask=mb["response_mask"],
            temperature=temperature,
            with_entropy=with_entropy,
        )

    # -- training ------------------------------------------------------------------------

    def _all_reduce(self, values: list[float], op: str = "sum") -> list[float]:
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64)
        if self.world_size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return t.tolist()

    def train(self, batch: TensorBatch, loss: LossSettings | dict, *, lr: float, seed: int = 0) -> dict[str, float]:
        """PPO epochs over `num_mini_batches` mini-batches of this rank's shard; one optimizer
        step per mini-batch. `batch` needs prompt/response ids+masks, `advantages`
        ([B] or [B,R]) and `old_log_probs`; `ref_log_probs` when kl_coef > 0;
        `sampler_logprobs` when tis is on. Returns metrics averaged over all ranks."""
        inject_fault("policy", "train")  # a no-op unless a chaos test set its env var
        loss = loss if isinstance(loss, LossSettings) else LossSettings(**loss)
        if "old_log_probs" not in batch.tensors and (loss.ppo_epochs > 1 or loss.num_mini_batches > 1):
            raise ValueError("old_log_probs are required unless the update is one pass over one mini-batch (on-policy)")
        if len(batch) < loss.num_mini_batches:
            raise ValueError(
                f"policy rank {self.rank} got {len(batch)} samples for {loss.num_mini_batches} mini-batches; "
                f"each rank needs at least one sample per mini-batch"
            )
        self.engine.train(True)
        width = batch["response_mask"].shape[1]  # before micro-batches are trimmed
        # Loss terms are already normalised by the mini-batch's global counts: they add up over
        # micro-batches and ranks. Per-token statistics are averaged weighted by tokens.
        added: dict[str, float] = {}
        weighted: dict[str, float] = {}
        gap_max = 0.0
        weight_total = 0.0
        grad_norms = []
        generator = torch.Generator().manual_seed(seed * 1000 + self.rank)
        for _epoch in range(loss.ppo_epochs):
            order = torch.randperm(len(batch), generator=generator)
            for mini in batch.select(order).chunk(loss.num_mini_batches):
                n_tok, n_seq = self._all_reduce([float(mini["response_mask"].sum()), float(len(mini))])
                local_micro = max(1, math.ceil(len(mini) / self.settings.micro_batch_size))
                # Every rank must run the same number of backward passes (the engines' gradient
                # collectives); a rank with fewer micro-batches repeats one with its mask zeroed.
                n_micro = int(self._all_reduce([float(local_micro)], op="max")[0])
                # Similar lengths together, padding columns trimmed: the loss is a sum over
                # samples with global normalisers, so the grouping does not change the update.
                micros = [mb for _, mb, _ in micro_batches(mini, local_micro)]
                while len(micros) < n_micro:
                    micros.append(micros[0].with_tensors(response_mask=torch.zeros_like(micros[0]["response_mask"])))
                self.engine.set_grad_accumulation(n_micro)
                for i, mb in enumerate(micros):
                    last = i == n_micro - 1
                    with self.engine.micro_batch(last):
                        out, gap = self._micro_loss(mb, loss, n_tok, n_seq, width)
                        self.engine.backward(out.loss * self.world_size)
                    if gap is not None:
                        gap_max = max(gap_max, gap)
                    norm = self.engine.after_micro_batch(last, lr)
                    w = float(out.metrics["response_tokens"])
                    weight_total += w
                    added["loss"] = added.get("loss", 0.0) + float(out.loss.detach())
                    for k, v in out.metrics.items():
                        if k in ADDITIVE_METRICS:
                            added[k] = added.get(k, 0.0) + float(v)
                        elif k != "response_tokens":
                            weighted[k] = weighted.get(k, 0.0) + float(v) * w
                    if norm is not None:
                        grad_norms.append(norm)
        updates = loss.ppo_epochs * loss.num_mini_batches
        a_keys, w_keys = sorted(added), sorted(weighted)
        reduced = self._all_reduce([added[k] for k in a_keys] + [weighted[k] for k in w_keys] + [weight_total])
        total_w = max(reduced[-1], 1.0)
        metrics = {f"policy/{k}": v / updates for k, v in zip(a_keys, reduced[: len(a_keys)])}
        metrics |= {f"policy/{k}": v / total_w for k, v in zip(w_keys, reduced[len(a_keys) : -1])}
        if "sampler_logprobs" in batch.tensors:
            metrics["logprob_gap/sampler_trainer_abs_max"] = self._all_reduce([gap_max], op="max")[0]
        metrics["policy/grad_norm"] = float(np.mean(grad_norms)) if grad_norms else float("nan")
        metrics["policy/lr"] = lr
        metrics["policy/optimizer_steps"] = float(len(grad_norms))
        return metrics

    def train_dpo(self, pairs: TensorBatch, settings: DPOSettings | dict, *, lr: float) -> dict[str, float]:
        """One optimizer step on this rank's shard of the step's pairs. `pairs` (see
        qwen25_rl.data.pairs.pair_batch) needs prompt/chosen/rejected ids+masks and the stored
        or freshly computed `ref_chosen_logps` / `ref_rejected_logps` [P]. The loss is the sum of
        per-pair losses over the GLOBAL pair count (and the RPO term over the global chosen
        tokens), so the update does not depend on how pairs fall into micro-batches and ranks.
        Returns metrics averaged over every pair of the step (all ranks)."""
        from qwen25_rl.algorithms.dpo import dpo_loss

        s = settings if isinstance(settings, DPOSettings) else DPOSettings(**settings)
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key not in pairs.tensors:
                raise ValueError(f"train_dpo needs {key} in the pair batch (stored or computed by the reference workers)")
        self.engine.train(True)
        # Tokens the step's forward passes read: the prompt twice (once per side) + both responses.
        tokens = 2 * pairs["prompt_mask"].sum() + pairs["chosen_mask"].sum() + pairs["rejected_mask"].sum()
        n_pairs, n_chosen_tok, n_tokens = self._all_reduce([float(len(pairs)), float(pairs["chosen_mask"].sum()), float(tokens)])
        local_micro = max(1, math.ceil(len(pairs) / self.settings.micro_batch_size))
        # Every rank runs the same number of backward passes (see train); a rank with fewer
        # pairs repeats one micro-batch with zero weight.
        n_micro = int(self._all_reduce([float(local_micro)], op="max")[0])
        micros = [(mb, 1.0) for _, mb in pair_micro_batches(pairs, local_micro) if len(mb)]
        while len(micros) < n_micro:
            micros.append((micros[0][0], 0.0))
        self.engine.set_grad_accumulation(n_micro)
        sums: dict[str, float] = {}
        added: dict[str, float] = {}
        norm = None
        for i, (mb, weight) in enumerate(micros):
            last = i == n_micro - 1
            with self.engine.micro_batch(last):
                mb = mb.to(self.device)
                chosen, rejected = self._pair_sums(mb)
                out = dpo_loss(
                    chosen,
                    rejected,
                    mb["ref_chosen_logps"],
                    mb["ref_rejected_logps"],
                    beta=s.beta,
                    loss_type=s.loss_type,
                    label_smoothing=s.label_smoothing,
                    length_normalize=s.length_normalize,
                    chosen_lengths=mb["chosen_mask"].sum(1),
                    rejected_lengths=mb["rejected_mask"].sum(1),
                    rpo_alpha=s.rpo_alpha,
                    num_pairs=n_pairs,
                    num_chosen_tokens=max(n_chosen_tok, 1.0),
                )
                self.engine.backward(out.loss * self.world_size * weight)
            norm = self.engine.after_micro_batch(last, lr)
            if not weight:
                continue
            with torch.no_grad():
                d_chosen = chosen.detach() - mb["ref_chosen_logps"]
                d_rejected = rejected.detach() - mb["ref_rejected_logps"]
                margins = s.beta * (d_chosen - d_rejected)
                stats = {
                    # Per-pair means, weighted by the micro-batch's pairs; loss terms add up.
                    "reward_accuracy": float((margins > 0).float().sum()),
                    "reward_margin": float(margins.sum()),
                    "reward_chosen": float(s.beta * d_chosen.sum()),
                    "reward_rejected": float(s.beta * d_rejected.sum()),
                    "logps/chosen": float(chosen.detach().sum()),
                    "logps/rejected": float(rejected.detach().sum()),
                    "logps/chosen_minus_ref": float(d_chosen.sum()),
                    "logps/rejected_minus_ref": float(d_rejected.sum()),
                }
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            # Loss terms are already normalised by the step's global counts: they add up.
            added["loss"] = added.get("loss", 0.0) + float(out.loss.detach())
            for k in ("loss/preference", "nll"):
                if k in out.metrics:
                    added[k] = added.get(k, 0.0) + float(out.metrics[k])
        s_keys, a_keys = sorted(sums), sorted(added)
        reduced = self._all_reduce([sums[k] for k in s_keys] + [added[k] for k in a_keys])
        metrics = {f"dpo/{k}": v / max(n_pairs, 1.0) for k, v in zip(s_keys, reduced)}
        metrics |= {f"dpo/{k}": v for k, v in zip(a_keys, reduced[len(s_keys) :])}
        metrics["dpo/pairs"] = n_pairs
        metrics["dpo/tokens"] = n_tokens
        metrics["policy/grad_norm"] = float(norm) if norm is not None else float("nan")
        metrics["policy/lr"] = lr
        return metrics

    def _micro_loss(self, mb: TensorBatch, loss: LossSettings, n_tok: float, n_seq: float, width: int):
        mb = mb.to(self.device)
        old = mb["old_log_probs"] if "old_log_probs" in mb.tensors else None
        inputs = dict(
            # None = on-policy (one pass, one mini-batch): the policy before this update IS the
            # current one, so its log-probs are the ones computed here, detached; no separate
            # scoring pass is needed (TRL skips it the same way).
            old_log_probs=old,
            advantages=mb["advantages"],
            loss_type=loss.loss_type,
            loss_agg_mode=loss.loss_agg_mode,
            num_tokens=n_tok,
            num_seqs=n_seq,
            max_response_length=loss.max_response_length or width,
            rollout_log_probs=mb["sampler_logprobs"] if loss.tis else None,
            tis_mode=loss.tis_mode,
            tis_low=loss.tis_low,
            tis_high=loss.tis_high,
            ref_log_probs=mb["ref_log_probs"] if "ref_log_probs" in mb.tensors else None,
            kl_coef=loss.kl_coef,
            kl_estimator=loss.kl_estimator,
            entropy_coef=loss.entropy_coef,
            clip_low=loss.clip_low,
            clip_high=loss.clip_high,
            dual_clip=loss.dual_clip,
            **loss.extra,
        )
        loss_value, out = self.engine.forward(
            prompt_ids=mb["prompt_ids"],
            prompt_mask=mb["prompt_mask"],
            response_ids=mb["response_ids"],
            response_mask=mb["response_mask"],
            temperature=loss.temperature,
            with_entropy=True,  # entropy is reported every step; no gradient unless entropy_coef > 0
            policy_loss_inputs=inputs,
        )
        out.loss = loss_value
        gap = None
        if "sampler_logprobs" in mb.tensors and bool(mb["response_mask"].any()):
            # Sampler vs trainer log-probs of the same tokens (before the first update of the
            # step): the weight-sync consistency check, for free.
            trainer = out.log_probs if old is None else old
            gap = float((trainer - mb["sampler_logprobs"]).abs()[mb["response_mask"].bool()].max())
        return out, gap

    # -- weights and checkpoints -----------------------------------------------------------

    def sync_weights(self) -> list[tuple[str, torch.Tensor]]:
        from qwen25_rl.models.factory import named_weights

        gathered = self.engine.export_state_dict()  # collective under ZeRO-3, else None
        if gathered is not None:
            return [(k.removeprefix("model."), v.detach()) for k, v in gathered.items()]
        # detach(): plain tensors, without the engine's attributes (DeepSpeed hangs process
        # groups on parameters, which cannot be pickled to other actors).
        return [(n, t.detach()) for n, t in named_weights(self.scorer.model)]

    def save(self, folder: str, tokenizer_path: str | None = None, extra_state: dict | None = None) -> None:
        """Write this rank's part of a checkpoint: HF model (rank 0), engine/optimizer state
        (every rank), RNG (every rank).

        Each rank writes from the node it runs on, into the same `folder` (under the run's
        storage root): with ranks on several machines that folder must be on a filesystem all
        of them and the driver share (README, "On a cluster"; RLCluster.save checks it)."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        self.engine.save(out, self.rank)
        self.save_model(str(out / "model"), tokenizer_path)
        if self.rank == 0:
            (out / "policy_worker.json").write_text(
                json.dumps({"world_size": self.world_size, "settings": asdict(self.settings), **(extra_state or {})})
            )
        save_rng_state(out / f"rng_rank{self.rank}.pt")

    def save_model(self, folder: str, tokenizer_path: str | None = None) -> None:
        """The policy in Hugging Face format (+ tokenizer). Every rank calls it (ZeRO-3 gathers
        the full weights onto rank 0); rank 0 alone writes, on its own node."""
        state = self.engine.export_state_dict()
        if self.rank != 0:
            return
        if state is not None:
            state = {k.removeprefix("model."): v for k, v in state.items()}
        self.scorer.model.save_pretrained(folder, state_dict=state, safe_serialization=True)
        if tokenizer_path:
            from qwen25_rl.models import load_tokenizer

            load_tokenizer(tokenizer_path).save_pretrained(folder)

    def load(self, folder: str) -> None:
        """Restore weights, optimizer and RNG from `save`'s folder (same world size)."""
        from safetensors.torch import load_file

        src = Path(folder)
        meta = json.loads((src / "policy_worker.json").read_text())
        if meta["world_size"] != self.world_size:
            raise UserValueError(f"checkpoint {src} was written by {meta['world_size']} policy workers; this run has {self.world_size}")
        self.engine.load(src)
        # The engine restores its own (possibly partitioned) copy; the HF weights are the
        # authoritative full copy for engines without a module state in their checkpoint.
        if self.settings.strategy == "ddp":  # DDP's engine state is the optimizer only
            state = {}
            for f in sorted((src / "model").glob("*.safetensors")):
                state.update(load_file(str(f)))
            missing, unexpected = self.scorer.model.load_state_dict(state, strict=False)
            tied = {"lm_head.weight"} if self.scorer.model.config.tie_word_embeddings else set()
            if unexpected or set(missing) - tied:
                raise UserValueError(
                    f"checkpoint {src}/model does not match the policy: missing {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)}"
                )
        load_rng_state(src / f"rng_rank{self.rank}.pt")

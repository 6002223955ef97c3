"""Reward-model training as a task of the Ray Train loop (`pretrain.worker`).

A step's rows are preference pairs (prepared by `pretrain.driver.prepare_rm_data` from
`qwen25_rl.data.preferences`): the prompt + chosen and prompt + rejected token sequences,
a preference per criterion (+1 chosen better, -1 rejected better, 0 none: a tie or a missing
label), optional ratings per response and criterion, and a margin. Chosen and rejected rows go
through the model in one forward pass; the score head gives one output per criterion at each
sequence's last token. The loss is the multi-criterion Bradley-Terry loss over labelled
(pair, criterion) entries plus `rating_weight` x the squared error on given ratings, each
normalised by the step's GLOBAL label counts, so micro-batches and ranks add up to the same
gradient. Held-out: pairwise accuracy per criterion (a tie in scores counts as wrong) and the
mean / std of every criterion's and the combined score, which the checkpoint's
reward_model.json keeps for normalisation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qwen25_rl.algorithms.reward_model import multi_criterion_bt_loss, pairwise_accuracy, rating_loss
from qwen25_rl.pretrain.flops import matmul_params
from qwen25_rl.pretrain.prepare import RowStore
from qwen25_rl.pretrain.worker import _all_reduce_sum, register_task
from qwen25_rl.reward.learned import COMBINED, RewardModelInfo, combined_scores

PAIR_ARRAYS = (
    "chosen_ids",
    "rejected_ids",
    "chosen_len",
    "rejected_len",
    "preference",
    "labelled",
    "chosen_rating",
    "rejected_rating",
    "margin",
)


@register_task("reward")
class RewardTask:
    def __init__(self, plan: dict[str, Any]):
        rm = plan["reward_model"]
        self.plan = plan
        self.criteria: list[str] = list(rm["criteria"])
        self.weights = torch.tensor([float(rm["weights"][c]) for c in self.criteria], dtype=torch.float32)
        self.centering_coef = float(rm["centering_coef"])
        self.rating_weight = float(rm["rating_weight"])
        self.use_margin = bool(rm["use_margin"])
        self.info = RewardModelInfo(
            criteria=self.criteria, weights=dict(rm["weights"]), max_length=int(rm["max_length"]), source=rm.get("source")
        )

    # -- model and data -----------------------------------------------------------------------

    def load_model(self, path, device):
        from transformers import AutoModelForSequenceClassification

        from qwen25_rl.models.factory import choose_attn_implementation

        model = AutoModelForSequenceClassification.from_pretrained(
            str(path),
            dtype=torch.float32,
            attn_implementation=choose_attn_implementation(self.plan["model"]["attn_implementation"], device),
            local_files_only=True,
        )
        if model.config.num_labels != len(self.criteria):
            raise ValueError(f"{path}: the score head has {model.config.num_labels} outputs, the config {len(self.criteria)} criteria")
        return model.to(device)

    def store(self, folder: str) -> RowStore:
        return RowStore(folder, names=PAIR_ARRAYS)

    def step_counts(self, store: RowStore, rows: np.ndarray) -> dict[str, float]:
        """Global normalisers of the step: labelled (pair, criterion) entries with a preference,
        and given ratings (both read from the data: every rank computes the same numbers)."""
        pref = np.asarray(store.arrays["preference"][rows])
        ratings = np.asarray(store.arrays["chosen_rating"][rows]), np.asarray(store.arrays["rejected_rating"][rows])
        return {"bt_labels": float((pref != 0).sum()), "rating_labels": float(sum(np.isfinite(r).sum() for r in ratings))}

    # -- scoring and loss ---------------------------------------------------------------------

    def scores(self, forward, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen scores [m, C], rejected scores [m, C]) from one forward pass over 2m rows,
        right padded and trimmed to the micro-batch's longest sequence."""
        m = batch["chosen_ids"].shape[0]
        lengths = torch.cat([batch["chosen_len"], batch["rejected_len"]])
        width = int(lengths.max())
        ids = torch.cat([batch["chosen_ids"][:, :width], batch["rejected_ids"][:, :width]])
        mask = (torch.arange(width, device=ids.device).unsqueeze(0) < lengths.unsqueeze(1)).long()
        logits = forward(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return logits[:m], logits[m:]

    def micro_loss(self, forward, module, batch: dict, counts: dict[str, float]) -> tuple[torch.Tensor, dict[str, float]]:
        chosen, rejected = self.scores(forward, batch)
        pref = batch["preference"].to(chosen.dtype)
        bt = multi_criterion_bt_loss(
            chosen,
            rejected,
            pref,
            margin=batch["margin"].to(chosen.dtype) if self.use_margin else None,
            num_labels=max(counts["bt_labels"], 1.0),
            centering_coef=self.centering_coef,
        )
        loss = bt.loss
        stats = {"loss/preference": float(bt.loss.detach())}
        if counts["rating_labels"] > 0:
            target = torch.cat([batch["chosen_rating"], batch["rejected_rating"]]).to(chosen.dtype)
            given = torch.isfinite(target)
            rl = rating_loss(torch.cat([chosen, rejected]), torch.nan_to_num(target), given, num_labels=counts["rating_labels"])
            loss = loss + self.rating_weight * rl.loss
            stats["loss/rating"] = float(rl.loss.detach())
        correct, labelled = pairwise_accuracy(chosen.detach(), rejected.detach(), pref)
        for i, c in enumerate(self.criteria):
            stats[f"correct/{c}"] = float(correct[i])
            stats[f"labelled/{c}"] = float(labelled[i])
        return loss, stats

    def step_metrics(self, counts: dict[str, float], sums: dict[str, float]) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in sums.items() if k.startswith("loss/")}
        out |= _accuracies(self.criteria, sums, prefix="accuracy")
        out["labels"] = int(counts["bt_labels"])
        if counts["rating_labels"]:
            out["ratings"] = int(counts["rating_labels"])
        return out

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(
        self, engine, store: RowStore, rank: int, world: int, micro_batch: int, max_batches: int | None, device
    ) -> dict[str, float]:
        """Held-out pairwise accuracy per criterion and overall, Bradley-Terry loss per labelled
        entry, and the mean / std of every criterion's and the combined score over all held-out
        responses. Every rank runs the same number of forward passes (a short rank repeats a
        pair with no labels), so collectives stay aligned."""
        rows = np.arange(store.num_rows)
        if max_batches is not None:
            rows = rows[: max_batches * micro_batch * world]
        per_rank = -(-rows.size // world)
        mine = rows[rank::world]
        c = len(self.criteria)
        sums: dict[str, float] = {}
        moments = torch.zeros(3, c + 1, dtype=torch.float64)  # count, sum, sum of squares
        engine.train(False)
        with torch.no_grad():
            for start in range(0, per_rank, micro_batch):
                idx = mine[start : start + micro_batch]
                pad = min(micro_batch, per_rank - start) - idx.size
                if idx.size == 0 and pad == 0:
                    break
                batch = store.batch(np.concatenate([idx, np.zeros(pad, dtype=np.int64)]) if pad > 0 else idx, device)
                real = torch.zeros(len(batch["chosen_ids"]), dtype=torch.bool, device=device)
                real[: idx.size] = True
                batch["preference"] = batch["preference"] * real.unsqueeze(1)
                chosen, rejected = self.scores(engine.eval_forward, batch)
                pref = batch["preference"].to(chosen.dtype)
                n = float((pref != 0).sum())
                if n:
                    bt = multi_criterion_bt_loss(chosen, rejected, pref, num_labels=1.0)
                    sums["loss"] = sums.get("loss", 0.0) + float(bt.loss)
                correct, labelled = pairwise_accuracy(chosen, rejected, pref)
                for i, name in enumerate(self.criteria):
                    sums[f"correct/{name}"] = sums.get(f"correct/{name}", 0.0) + float(correct[i])
                    sums[f"labelled/{name}"] = sums.get(f"labelled/{name}", 0.0) + float(labelled[i])
                both = torch.cat([chosen[real], rejected[real]]).float().cpu()
                both = torch.cat([both, combined_scores(both, self.weights).unsqueeze(1)], dim=1).double()
                moments += torch.stack([torch.full((c + 1,), float(len(both)), dtype=torch.float64), both.sum(0), (both**2).sum(0)])
        engine.train(True)
        keys = sorted(sums)
        reduced = _all_reduce_sum([*(sums[k] for k in keys), *moments.flatten().tolist()], device)
        sums = dict(zip(keys, reduced[: len(keys)]))
        count, total, squares = torch.tensor(reduced[len(keys) :], dtype=torch.float64).view(3, c + 1)
        mean = (total / count.clamp(min=1)).tolist()
        std = ((squares / count.clamp(min=1)) - (total / count.clamp(min=1)) ** 2).clamp(min=0).sqrt().tolist()
        names = [*self.criteria, COMBINED]
        self.info.score_mean, self.info.score_std = dict(zip(names, mean)), dict(zip(names, std))
        labelled_total = sum(sums.get(f"labelled/{n}", 0.0) for n in self.criteria)
        out = {"eval_loss": sums.get("loss", 0.0) / labelled_total if labelled_total else math.nan}
        out |= _accuracies(self.criteria, sums, prefix="eval_accuracy")
        out |= {f"eval_score_mean/{n}": m for n, m in self.info.score_mean.items()}
        out |= {f"eval_score_std/{n}": s for n, s in self.info.score_std.items()}
        return out

    def flops_per_token(self, config, seq_len: int) -> float:
        """6 x (matmul parameters without the vocabulary head: the score head is C outputs,
        negligible) + the attention term, per scored token."""
        body = matmul_params(config) - config.vocab_size * config.hidden_size
        return 6.0 * body + 12.0 * config.num_hidden_layers * config.hidden_size * seq_len

    def save_extra(self, folder: Path) -> None:
        self.info.save(folder)


def _accuracies(criteria: list[str], sums: dict[str, float], *, prefix: str) -> dict[str, float]:
    """Per-criterion accuracy (criteria with no labelled pair are left out) and the overall one."""
    out = {}
    correct = labelled = 0.0
    for c in criteria:
        n = sums.get(f"labelled/{c}", 0.0)
        if n:
            out[f"{prefix}/{c}"] = sums.get(f"correct/{c}", 0.0) / n
            correct += sums.get(f"correct/{c}", 0.0)
            labelled += n
    if labelled:
        out[prefix] = correct / labelled
    return out

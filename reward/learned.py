"""Learned reward models: reading an RM folder and scoring (prompt, response) texts with it.

An RM folder (what `qwen25-rl rm` writes) is a Hugging Face checkpoint that
`AutoModelForSequenceClassification` loads: a Qwen2 backbone with a score head of one output
per criterion (labelled in `id2label`), its tokenizer, and `reward_model.json`:

    {"criteria": [...], "weights": {criterion: w}, "max_length": int,
     "score_mean": {criterion: m, "combined": m}, "score_std": {...}, "source": policy folder}

A response is scored as the RM was trained on it (qwen25_rl.data.pairs): the prompt rendered
by the RM's OWN chat template as one user turn with the assistant turn opened, then the
response's tokens and the end-of-turn token. Its score on criterion c is the head's output c
at the sequence's last token (Hugging Face's own pooling: rows are right padded); the combined
reward is sum_c weight_c * score_c. `RewardModelScorer` is the one scoring path: the RM worker
group in the RL stages and the Serve endpoint both use it, so they give the same numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qwen25_rl.errors import UserPathError

RM_FILE = "reward_model.json"
COMBINED = "combined"


@dataclass
class RewardModelInfo:
    criteria: list[str]
    weights: dict[str, float]
    max_length: int
    score_mean: dict[str, float] = field(default_factory=dict)
    score_std: dict[str, float] = field(default_factory=dict)
    source: str | None = None

    def weight_list(self) -> list[float]:
        return [float(self.weights.get(c, 0.0)) for c in self.criteria]

    def weight_vector(self):
        import torch

        return torch.tensor(self.weight_list(), dtype=torch.float32)

    def save(self, folder: str | Path) -> None:
        (Path(folder) / RM_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")


def combined_scores(scores, weights):
    """sum_c weight_c * scores[..., c]: the one reward of a multi-criterion RM."""
    return (scores.float() * weights.to(scores.device)).sum(-1)


def read_info(folder: str | Path) -> RewardModelInfo:
    """The RM's criteria, weights and score statistics; a clear error for a folder that is not an RM.
    A sequence-classification checkpoint without reward_model.json (e.g. a third-party RM) gets
    its criteria from id2label and weight 1 each."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise UserPathError(f"{folder} is not a model folder (no config.json)")
    config = json.loads((folder / "config.json").read_text())
    archs = config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise UserPathError(
            f"{folder} has no score head: its model is {', '.join(archs) or 'of unknown architecture'}, not a "
            f"*ForSequenceClassification reward model (train one with `qwen25-rl rm`)"
        )
    path = folder / RM_FILE
    if not path.is_file():
        labels = config.get("id2label") or {}
        n = int(config.get("num_labels") or len(labels) or 1)
        criteria = [labels.get(str(i), f"score_{i}") for i in range(n)] if n > 1 else ["reward"]
        return RewardModelInfo(
            criteria=criteria, weights=dict.fromkeys(criteria, 1.0), max_length=int(config.get("max_position_embeddings", 2048))
        )
    try:
        info = RewardModelInfo(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise UserPathError(f"{path}: not a valid reward-model description ({exc})") from None
    unknown = sorted(set(info.weights) - set(info.criteria))
    if unknown:
        raise UserPathError(f"{path}: weights name criteria {unknown} that the head does not have ({info.criteria})")
    return info


def load_reward_model(folder: str | Path, *, dtype: str = "float32", device: str | None = None):
    """(model, info) of an RM folder, in eval mode; a folder without a score head (or whose head
    does not match its reward_model.json) is a user error naming the folder."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    info = read_info(folder)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), dtype=getattr(torch, dtype), attn_implementation="sdpa", local_files_only=True
        )
    finally:
        hf_logging.set_verbosity(level)
    if model.config.num_labels != len(info.criteria):
        raise UserPathError(
            f"{folder}: the score head has {model.config.num_labels} outputs but {RM_FILE} names {len(info.criteria)} criteria"
        )
    model.eval()
    return (model.to(device) if device else model), info


def score_statistics(scores, weights, criteria: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """(mean, std) per criterion and of the combined score, over scores [N, C]."""
    import torch

    scores = scores.float()
    both = torch.cat([scores, combined_scores(scores, weights).unsqueeze(-1)], dim=-1)
    names = [*criteria, COMBINED]
    if not len(both):
        return dict.fromkeys(names, math.nan), dict.fromkeys(names, math.nan)
    return dict(zip(names, both.mean(0).tolist())), dict(zip(names, both.std(0, unbiased=False).tolist()))


@dataclass
class ScoredBatch:
    scores: Any  # torch.Tensor [N, C] float32, in input order
    combined: Any  # torch.Tensor [N]
    truncated: int  # sequences cut to max_length (their end kept: the score is read there)
    tokens: int


class RewardModelScorer:
    """An RM folder ready to score (prompt, response) pairs: its own tokenizer and chat
    template, length-sorted micro-batches, right padding, truncation from the left past
    `max_length` (the end, where the score is read, is kept; counted)."""

    def __init__(
        self,
        folder: str | Path,
        *,
        micro_batch_size: int = 16,
        max_length: int | None = None,
        template: str = "chat",
        dtype: str = "float32",
        device: str | None = None,
    ):
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        self.model, self.info = load_reward_model(self.folder, dtype=dtype, device=device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
        if self.tokenizer.pad_token_id is None:
            raise UserPathError(f"the tokenizer in {self.folder} has no pad token; batched scoring needs one")
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        if template not in ("chat", "plain"):
            raise ValueError(f"template must be 'chat' or 'plain', got {template!r}")
        if template == "chat" and not getattr(self.tokenizer, "chat_template", None):
            raise UserPathError(f"the tokenizer in {self.folder} has no chat template (use template: plain)")
        if self.tokenizer.eos_token_id is None:
            raise UserPathError(f"the tokenizer in {self.folder} has no end-of-turn (EOS) token")
        self.template = template
        self.micro_batch_size = micro_batch_size
        self.max_length = max_length or self.info.max_length
        self.device = device or "cpu"
        self.weights = self.info.weight_vector()

    @property
    def criteria(self) -> list[str]:
        return self.info.criteria

    def token_ids(self, prompt: str | list[dict[str, str]], response: str) -> list[int]:
        """The sequence the RM scores, as `qwen25_rl.data.pairs` builds training pairs. `prompt`:
        the user's text, or a conversation ending with the user's turn (chat template only)."""
        tok = self.tokenizer
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        if self.template == "chat":
            prompt_text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        elif len(messages) == 1:
            prompt_text = messages[0]["content"]
        else:
            raise ValueError("a multi-turn prompt needs the reward model's chat template (template: chat)")
        return tok.encode(prompt_text, add_special_tokens=False) + tok.encode(response, add_special_tokens=False) + [tok.eos_token_id]

    def score(self, prompts: list[str] | list[list[dict[str, str]]], responses: list[str]) -> ScoredBatch:
        import torch

        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        seqs = [self.token_ids(p, r) for p, r in zip(prompts, responses)]
        truncated = sum(len(s) > self.max_length for s in seqs)
        seqs = [s[-self.max_length :] for s in seqs]
        scores = torch.zeros(len(seqs), len(self.criteria), dtype=torch.float32)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # similar lengths together: little padding
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode():
            for start in range(0, len(order), self.micro_batch_size):
                idx = order[start : start + self.micro_batch_size]
                width = max(len(seqs[i]) for i in idx)
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    ids[row, : len(seqs[i])] = torch.tensor(seqs[i])
                    mask[row, : len(seqs[i])] = 1
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
                scores[idx] = logits.float().cpu()
        return ScoredBatch(scores, combined_scores(scores, self.weights), truncated, sum(len(s) for s in seqs))

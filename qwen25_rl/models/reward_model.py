"""Building a reward model from a policy checkpoint: its backbone and a new score head of one
output per criterion. Reading, loading and scoring an RM folder is `qwen25_rl.reward.learned`
(the reward layer, where the Serve endpoint and the RL stages' RM workers find it)."""

from __future__ import annotations

from pathlib import Path

import torch


def build_reward_model(
    policy_path: str | Path,
    criteria: list[str],
    *,
    pad_token_id: int,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    device: str | None = None,
):
    """A sequence-classification model with `policy_path`'s backbone (a causal LM checkpoint)
    and a new score head of len(criteria) outputs, labelled with them, drawn from the model's
    initializer under `seed` (so every rank and every rerun starts from the same head)."""
    from transformers import AutoModelForSequenceClassification

    from qwen25_rl.models.factory import choose_attn_implementation, quiet_transformers

    torch.manual_seed(seed)
    with quiet_transformers():  # "newly initialized: score.weight" and "unused: lm_head" are the point here
        model = AutoModelForSequenceClassification.from_pretrained(
            str(policy_path),
            num_labels=len(criteria),
            id2label=dict(enumerate(criteria)),
            label2id={c: i for i, c in enumerate(criteria)},
            dtype=torch.float32,
            attn_implementation=choose_attn_implementation(attn_implementation, device),
            local_files_only=True,
        )
    model.config.pad_token_id = pad_token_id
    model.config.problem_type = "regression"  # our losses, not HF's; keeps HF from guessing
    return model.to(device) if device else model


def save_new_reward_model(
    folder: str | Path,
    policy_path: str | Path,
    tokenizer,
    criteria: list[str],
    weights: dict[str, float],
    *,
    max_length: int,
    seed: int = 0,
    attn_implementation: str = "sdpa",
) -> None:
    """Write an RM folder with a new head of one output per criterion (`build_reward_model`): the
    model, `tokenizer`, and reward_model.json (weights, a criterion left out weighing 0;
    max_length; source)."""
    from qwen25_rl.errors import UserValueError
    from qwen25_rl.reward.learned import RewardModelInfo

    if tokenizer.pad_token_id is None:
        raise UserValueError(f"the tokenizer of {policy_path} has no pad token; the reward is read at the last non-padding token")
    criteria = list(criteria)
    model = build_reward_model(
        policy_path, criteria, pad_token_id=tokenizer.pad_token_id, seed=seed, attn_implementation=attn_implementation
    )
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    RewardModelInfo(criteria=criteria, weights=dict(weights), max_length=max_length, source=str(policy_path)).save(folder)

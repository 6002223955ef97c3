"""Reward-model folders: a causal LM's backbone with a multi-criterion score head, saved so that
transformers' AutoModelForSequenceClassification loads it, and read back with its criteria."""

from __future__ import annotations

import json

import pytest
import torch

from qwen25_rl.models.reward_model import build_reward_model, save_new_reward_model

CRITERIA = ["truthfulness", "conciseness", "harmlessness"]


@pytest.fixture(scope="module")
def rm_dir(tiny_model_dir, tiny_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("rm") / "rm"
    save_new_reward_model(out, tiny_model_dir, tiny_tokenizer, CRITERIA, {"truthfulness": 1.0, "conciseness": 0.5}, max_length=64, seed=3)
    return out


def test_the_head_has_one_labelled_output_per_criterion_and_the_policy_backbone(rm_dir, tiny_model_dir):
    from safetensors.torch import load_file

    config = json.loads((rm_dir / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForSequenceClassification"]
    assert len(config["id2label"]) == 3
    assert [config["id2label"][str(i)] for i in range(3)] == CRITERIA
    rm = load_file(str(rm_dir / "model.safetensors"))
    lm = load_file(str(tiny_model_dir / "model.safetensors"))
    assert rm["score.weight"].shape[0] == 3
    name = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(rm[name], lm[name])


def test_the_same_seed_draws_the_same_head(tiny_model_dir, tiny_tokenizer):
    a = build_reward_model(tiny_model_dir, CRITERIA, pad_token_id=tiny_tokenizer.pad_token_id, seed=3)
    b = build_reward_model(tiny_model_dir, CRITERIA, pad_token_id=tiny_tokenizer.pad_token_id, seed=3)
    assert torch.equal(a.score.weight, b.score.weight)

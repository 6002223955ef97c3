"""The DPO stage config: the shipped YAML files validate, cross-field rules name the keys."""

from __future__ import annotations

import pytest

from qwen25_rl.config import ConfigError, load_config
from qwen25_rl.paths import REPO_ROOT
from qwen25_rl.stages.dpo_config import DPOConfig

TINY = REPO_ROOT / "configs" / "tiny" / "dpo.yaml"


def test_defaults_follow_the_report_where_it_is_specific():
    cfg = DPOConfig(data={"train_files": ["x.jsonl"]})
    assert cfg.optimizer.lr == 7e-7 and cfg.algorithm.epochs_per_round == 1
    assert cfg.rollout.samples_per_prompt == 8 and cfg.algorithm.reference_mode == "stored"


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.name=onties", "optimizer.name 'onties' needs optimizer.base_model"),
        ("optimizer.name=sgd", "optimizer.name: expected one of 'adamw', 'ondare' or 'onties'"),
        ("data.mode=pairs", "algorithm.rounds > 1 needs data.mode: sample"),
        ("algorithm.loss_type=kto", "algorithm.loss_type 'kto' is not a registered DPO loss (hinge, ipo, sigmoid)"),
        ("algorithm.label_smoothing=0.1", None),
        ("algorithm.pairs_per_step=1", None),
        ("rollout.samples_per_prompt=1", "data.mode sample needs rollout.samples_per_prompt >= 2"),
        ("algorithm.accuracy_reward=nope", "algorithm.accuracy_reward 'nope' is not a reward function label"),
        ("data.train_files=[]", "data.train_files: give at least one prompt file"),
    ],
)
def test_invalid_settings_are_named(override, message):
    if message is None:  # valid on their own
        load_config(TINY, [override], schema=DPOConfig)
        return
    with pytest.raises(ConfigError) as e:
        load_config(TINY, [override], schema=DPOConfig)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["algorithm.loss_type=ipo", "algorithm.label_smoothing=0.1"], "label_smoothing applies to loss_type sigmoid only"),
        (["policy.num_workers=4", "algorithm.pairs_per_step=2"], "algorithm.pairs_per_step=2 is fewer than policy.num_workers=4"),
        (["optimizer.name=ondare", "optimizer.base_model=b", "policy.zero_stage=3"], "needs policy.zero_stage 0-2 or strategy ddp"),
    ],
)
def test_inconsistent_combinations_are_named(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(TINY, overrides, schema=DPOConfig)
    assert message in str(e.value)


def test_gpu_configs_follow_the_report_recipe():
    for name in ("qwen2.5-0.5b", "qwen2.5-7b"):
        cfg = load_config(REPO_ROOT / "configs" / name / "dpo.yaml", schema=DPOConfig)
        assert cfg.optimizer.lr == 7e-7 and cfg.algorithm.epochs_per_round == 1
        assert cfg.algorithm.pairing.rule == "correct_vs_incorrect"
        assert cfg.rollout.num_gpus_per_worker > 0 and cfg.policy.num_gpus_per_worker > 0
    assert load_config(REPO_ROOT / "configs" / "qwen2.5-0.5b" / "dpo.yaml", schema=DPOConfig).optimizer.name == "ondare"

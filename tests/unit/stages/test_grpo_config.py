"""The GRPO stage config: the shipped YAML files validate, cross-field rules name the keys."""

from __future__ import annotations

import pytest

from qwen25_rl.config import ConfigError, load_config
from qwen25_rl.paths import REPO_ROOT
from qwen25_rl.stages.grpo_config import GRPOConfig

TINY = REPO_ROOT / "configs" / "tiny" / "grpo.yaml"


def test_tiny_config_loads_with_the_report_defaults_where_unset():
    cfg = load_config(TINY, schema=GRPOConfig)
    assert cfg.stage == "grpo" and cfg.rollout.engine == "vllm" and cfg.policy.strategy == "deepspeed"
    assert GRPOConfig.model_fields["rollout"].default_factory().samples_per_prompt == 8  # Qwen2.5: 8 per prompt


@pytest.mark.parametrize(
    "override, message",
    [
        ("algorithm.kl_coeff=0.1", "did you mean 'algorithm.kl_coef'"),
        ("algorithm.num_mini_batches=64", "algorithm.num_mini_batches=64 needs at least that many samples per policy worker"),
        ("rollout.samples_per_prompt=1", "advantage_estimator 'grpo' needs rollout.samples_per_prompt >= 2"),
        ("algorithm.kl_mode=reward", "algorithm.kl_mode 'reward' needs an estimator that takes token rewards"),
        ("algorithm.accuracy_reward=nope", "algorithm.accuracy_reward 'nope' is not a reward function label"),
        ("data.train_files=[]", "data.train_files: give at least one prompt file"),
        ("eval.pass_k=[1,8]", "pass_k [8] must lie in 1..samples_per_prompt"),
        ("policy.zero_stage=4", "policy.zero_stage: expected one of 0, 1, 2 or 3"),
    ],
)
def test_invalid_settings_are_named(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(TINY, [override], schema=GRPOConfig)
    assert message in str(e.value)


def test_reward_plugin_that_does_not_exist_fails_at_load(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.py"):
        load_config(TINY, ["reward.functions=[{type: custom, params: {path: nowhere.py:f}}]"], schema=GRPOConfig)


def test_gpu_configs_follow_the_report_recipe():
    for name in ("qwen2.5-0.5b", "qwen2.5-7b"):
        cfg = load_config(REPO_ROOT / "configs" / name / "grpo.yaml", schema=GRPOConfig)
        assert cfg.rollout.samples_per_prompt == 8
        assert cfg.rollout.num_gpus_per_worker > 0 and cfg.policy.num_gpus_per_worker > 0

"""`qwen25-rl filter` config: what it refuses at load, each with a message naming the key."""

from __future__ import annotations

import pytest

from qwen25_rl.config import load_config
from qwen25_rl.config.loader import ConfigError
from qwen25_rl.paths import REPO_ROOT

CONFIG = REPO_ROOT / "configs" / "tiny" / "filter.yaml"


def test_the_tiny_config_samples_and_ranks_verified_answers_by_the_reward_model():
    cfg = load_config(CONFIG)
    assert cfg.sampling and cfg.selection.min_components == {"math": 1.0} and cfg.reward_models[0].name == "rm"
    assert [g.name for g in cfg.worker_groups()] == ["reward pool", "rollout", "reward model rm"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.responses_files=[r.jsonl]"], "give data.train_files .* or data.responses_files .*, not both or neither"),
        (["data.train_files=[]"], "not both or neither"),
        (["model.path=null", "model.preset=tiny"], "sampling responses needs model.path"),
        (["selection.keep=threshold"], "selection.keep 'threshold' needs selection.threshold"),
        (["selection.min_components={verifier: 1}"], r"selection.min_components names \['verifier'\]"),
        (["reward_models=[{name: math, path: x}]"], r"reward_models: names \['math'\] repeat or clash"),
    ],
)
def test_inconsistent_settings_are_refused_at_load(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIG, overrides)

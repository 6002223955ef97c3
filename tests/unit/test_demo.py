"""`make demo`'s pipeline wiring (the stages themselves are tested in integration/)."""

from __future__ import annotations

import pytest

from qwen25_rl.config.loader import ConfigError
from qwen25_rl.demo import STAGES, split_overrides, stage_config


def test_each_stage_reads_the_previous_stages_output_under_the_demo_folder(tmp_path):
    cfgs = {s: stage_config(s, tmp_path, [], dashboard=False) for s in STAGES}
    assert cfgs["pretrain"].data.synthetic.out_dir == str(tmp_path / "data")
    assert all(f.startswith(str(tmp_path / "data")) for src in cfgs["pretrain"].data.sources for f in src.files)
    assert cfgs["sft"].model.path == str(tmp_path / "pretrain" / "final")
    assert cfgs["dpo"].model.path == str(tmp_path / "sft" / "final")
    assert cfgs["rm"].model.path == str(tmp_path / "sft" / "final")
    assert cfgs["rm"].data.synthetic.out_dir == str(tmp_path / "preferences")
    assert cfgs["rm"].data.train_files == [str(tmp_path / "preferences" / "preferences_train.jsonl")]
    assert [(m.name, m.path) for m in cfgs["grpo"].reward_models] == [("rm", str(tmp_path / "rm" / "final"))]
    assert cfgs["grpo"].model.path == str(tmp_path / "dpo" / "final")
    assert cfgs["dpo"].data.train_files == [str(tmp_path / "data" / "arithmetic_train.jsonl")]
    assert cfgs["grpo"].data.train_files == [str(tmp_path / "data" / "arithmetic_train.jsonl")]
    for stage, cfg in cfgs.items():
        assert (cfg.logging.output_dir, cfg.logging.run_name) == (str(tmp_path), stage)
    # The baseline rows make the demo's before/after accuracy of each RL stage.
    assert cfgs["grpo"].eval.at_start and cfgs["dpo"].eval.at_start


def test_overrides_go_to_the_stage_they_name(tmp_path):
    by_stage = split_overrides(["grpo.algorithm.total_steps=3", "pretrain.seed=7"])
    assert stage_config("grpo", tmp_path, by_stage["grpo"], dashboard=False).algorithm.total_steps == 3
    assert stage_config("pretrain", tmp_path, by_stage["pretrain"], dashboard=False).seed == 7
    assert by_stage["sft"] == []


@pytest.mark.parametrize("bad", ["algorithm.total_steps=3", "ppo.beta=0.1", "grpo.total_steps"])
def test_an_override_without_a_known_stage_prefix_is_refused(bad):
    with pytest.raises(SystemExit, match="expected STAGE.key=value"):
        split_overrides([bad])


def test_a_misspelled_key_fails_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="algorithm.total_step"):
        stage_config("grpo", tmp_path, ["algorithm.total_step=3"], dashboard=False)

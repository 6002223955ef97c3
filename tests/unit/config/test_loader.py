"""Config loading: round trip, overrides, and every error message a user can hit."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qwen25_rl.cli import main as cli_main
from qwen25_rl.config import ConfigError, StageConfig, dump_config, load_config, parse_override


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def problems_of(excinfo) -> str:
    return "\n".join(excinfo.value.problems)


def test_round_trip_dump_then_load_gives_same_config(tmp_path):
    cfg = load_config(write(tmp_path, "optimizer: {lr: 3.0e-4, betas: [0.8, 0.95]}\nscheduler: {name: cosine, warmup_steps: 5}\n"))
    again = load_config(write(tmp_path, dump_config(cfg), "dumped.yaml"))
    assert again == cfg
    assert again.optimizer.lr == 3e-4 and again.optimizer.betas == (0.8, 0.95)


def test_defaults_come_from_schema_when_file_omits_a_section(tmp_path):
    cfg = load_config(write(tmp_path, "seed: 7\n"))
    assert cfg.seed == 7
    assert cfg.optimizer == StageConfig().optimizer


def test_override_sets_nested_value_parsed_as_yaml(tmp_path):
    cfg = load_config(
        write(tmp_path, "optimizer: {lr: 1.0e-5}\n"),
        ["optimizer.lr=3e-4", "logging.tensorboard=false", "data.train_files=[a.jsonl, b.jsonl]"],
    )
    assert cfg.optimizer.lr == pytest.approx(3e-4)
    assert cfg.logging.tensorboard is False
    # relative paths come back resolved against the storage root (here: the current directory)
    assert cfg.data.train_files == [str(Path.cwd() / "a.jsonl"), str(Path.cwd() / "b.jsonl")]


def test_unknown_nested_key_names_path_file_and_closest_name(tmp_path):
    path = write(tmp_path, "optimizer:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert str(path) in msg
    assert "unknown key 'optimizer.lrr'" in msg
    assert "did you mean 'optimizer.lr'" in msg
    assert "valid keys here:" in msg and "weight_decay" in msg


def test_key_in_wrong_section_suggests_where_it_belongs(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "warmup_steps: 10\n"))
    assert "did you mean 'scheduler.warmup_steps'" in problems_of(e)


def test_unknown_top_level_section_suggests_closest(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "optimiser: {lr: 0.1}\n"))
    assert "unknown key 'optimiser'" in problems_of(e)
    assert "did you mean 'optimizer'" in problems_of(e)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("optimizer: {lr: fast}\n", "optimizer.lr: expected a number, got 'fast' (str)"),
        ("scheduler: {warmup_steps: 2.5}\n", "scheduler.warmup_steps: expected an integer"),
        ("data: {shuffle: maybe}\n", "data.shuffle: expected a boolean (true or false)"),
        ("data: {train_files: a.jsonl}\n", "data.train_files: expected a list"),
        ("optimizer: 5\n", "optimizer: expected a mapping (a config section)"),
        ("scheduler: {name: exponential}\n", "scheduler.name: expected one of 'constant', 'cosine' or 'linear'"),
    ],
)
def test_wrong_type_names_expected_type(tmp_path, text, expected):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert expected in problems_of(e)


def test_bad_override_value_is_attributed_to_the_command_line(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "{}\n"), ["optimizer.lr=abc"])
    assert "from command-line override 'optimizer.lr=abc'" in problems_of(e)


def test_misspelled_override_key_gets_suggestion(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "{}\n"), ["optimizer.weight_decy=0.1"])
    assert "did you mean 'optimizer.weight_decay'" in problems_of(e)


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="not of the form key.sub=value"):
        parse_override("optimizer.lr")


def test_override_into_a_scalar_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="seed is a value, not a section"):
        load_config(write(tmp_path, "seed: 1\n"), ["seed.x=2"])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="file not found") as e:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(e.value)


def test_yaml_syntax_error_reports_line(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML") as e:
        load_config(write(tmp_path, "optimizer:\n  lr: [1, 2\n"))
    assert "line" in str(e.value)


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_unknown_stage_lists_known_stages(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "stage: bsae\n"))
    assert "unknown stage 'bsae'" in problems_of(e) and "did you mean 'base'" in problems_of(e)


def test_model_needs_exactly_one_of_path_or_preset(tmp_path):
    with pytest.raises(ConfigError, match="exactly one of model.path"):
        load_config(write(tmp_path, "model: {path: /x, preset: tiny}\n"))


def test_several_problems_are_all_reported(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "optimizer: {lr: x, lrr: 1}\nseedd: 3\n"))
    assert len(e.value.problems) == 3


def test_cli_config_show_prints_resolved_yaml(tmp_path, capsys):
    path = write(tmp_path, "optimizer: {lr: 0.5}\n")
    assert cli_main(["config", "show", str(path), "seed=3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["optimizer"]["lr"] == 0.5 and shown["seed"] == 3
    assert shown["scheduler"]["name"] == "constant"  # defaults are filled in


def test_cli_config_show_reports_error_without_traceback(tmp_path, capsys):
    path = write(tmp_path, "optimizer: {lrr: 0.5}\n")
    assert cli_main(["config", "show", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'optimizer.lrr'" in err and "Traceback" not in err

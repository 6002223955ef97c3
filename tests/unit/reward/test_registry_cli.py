"""`qwen25-rl reward score | list | check` (in-process, no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen25_rl.cli import main
from qwen25_rl.config import load_config
from qwen25_rl.paths import REPO_ROOT


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_reward_score_math_prints_the_result_as_json(capsys):
    rc, out, _ = run_cli(capsys, "reward", "score", "--reward", "math", "--response", r"so \boxed{\frac{6}{4}}", "--answer", "1.5")
    result = json.loads(out)
    assert rc == 0 and result["reward"] == 1.0 and result["details"]["math"]["extracted"] == r"\frac{6}{4}"


def test_reward_score_wrong_answer_is_reward_zero_with_exit_zero(capsys):
    rc, out, _ = run_cli(capsys, "reward", "score", "--reward", "math", "--response", "#### 5", "--answer", "6")
    assert rc == 0 and json.loads(out)["reward"] == 0.0


def test_reward_score_with_params(capsys):
    rc, out, _ = run_cli(
        capsys,
        "reward",
        "score",
        "--reward",
        "length",
        "--response",
        "x",
        "--response-length",
        "90",
        "--param",
        "max_length=100",
        "--param",
        "buffer=20",
    )
    assert rc == 0 and json.loads(out)["reward"] == pytest.approx(-0.5)


def test_reward_score_custom_function_by_path(capsys, tmp_path):
    (tmp_path / "mine.py").write_text(
        "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n    return len(solution_str) / 10\n"
    )
    rc, out, _ = run_cli(capsys, "reward", "score", "--reward", f"{tmp_path}/mine.py:compute_score", "--response", "abcde")
    assert rc == 0 and json.loads(out)["reward"] == 0.5


def test_reward_score_failed_reward_exits_one_with_the_error(capsys, tmp_path):
    (tmp_path / "raises.py").write_text("def f(sample):\n    raise RuntimeError('no gold')\n")
    rc, out, _ = run_cli(capsys, "reward", "score", "--reward", f"{tmp_path}/raises.py:f", "--response", "x")
    result = json.loads(out)
    assert rc == 1 and result["status"] == "error" and "no gold" in result["error"]


def test_reward_score_unknown_reward_is_a_clear_error(capsys):
    rc, _, err = run_cli(capsys, "reward", "score", "--reward", "mathh", "--response", "x")
    assert rc == 2 and "unknown reward 'mathh'; did you mean 'math'" in err


def test_reward_score_with_the_example_config_combines_weighted_terms(capsys):
    cfg = str(REPO_ROOT / "configs/tiny/rewards_example.yaml")
    rc, out, _ = run_cli(
        capsys,
        "reward",
        "score",
        "--config",
        cfg,
        "--data-source",
        "gsm8k",
        "--response",
        r"So the answer is \boxed{18}.",
        "--answer",
        "18",
        "--response-length",
        "12",
    )
    result = json.loads(out)
    # math 1.0 x 1 + boxed 1.0 x 0.1 + overlong 0 + concise 1.0 x 0.05; code does not apply to gsm8k
    assert result["breakdown"] == {"math": 1.0, "boxed": 1.0, "overlong": 0.0, "concise": 1.0}
    assert rc == 0 and result["reward"] == pytest.approx(1.15)


def test_reward_score_picks_one_function_of_a_config(capsys):
    cfg = str(REPO_ROOT / "configs/tiny/rewards_example.yaml")
    rc, out, _ = run_cli(
        capsys, "reward", "score", "--config", cfg, "--reward", "boxed", "--response", r"\boxed{1}", "--data-source", "math500"
    )
    assert rc == 0 and json.loads(out)["breakdown"] == {"boxed": 1.0}
    # The function keeps its data_sources: another source gets no reward from it, and says so.
    rc, out, _ = run_cli(capsys, "reward", "score", "--config", cfg, "--reward", "boxed", "--response", r"\boxed{1}")
    assert rc == 1 and "no reward function applies to data_source ''" in json.loads(out)["error"]


def test_reward_list_shows_params_and_defaults(capsys):
    rc, out, _ = run_cli(capsys, "reward", "list")
    assert rc == 0
    assert "length: DAPO overlong shaping" in out and "max_length (required)" in out and "penalty_factor = 1.0" in out


def test_reward_check_starts_every_function_of_the_example(capsys):
    cfg = str(REPO_ROOT / "configs/tiny/rewards_example.yaml")
    rc, out, _ = run_cli(capsys, "reward", "check", cfg)
    assert rc == 0 and [line.split()[1] for line in out.splitlines()] == ["math:", "code:", "boxed:", "overlong:", "concise:"]


def test_reward_check_reports_a_bad_param_with_its_key(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("reward:\n  functions:\n    - type: length\n      params: {max_length: 10, bufer: 2}\n")
    rc, _, err = run_cli(capsys, "reward", "check", str(bad))
    assert rc == 2 and str(bad) in err and "reward.functions.0" in err and "did you mean 'buffer'?" in err


def test_serve_reward_config_loads_and_validates():
    from qwen25_rl.commands.reward import ServeRewardConfig

    cfg = load_config(REPO_ROOT / "configs/tiny/serve_reward.yaml", schema=ServeRewardConfig)
    assert cfg.serve.host == "127.0.0.1" and [f.label for f in cfg.reward.functions] == ["math", "format"]


def test_serve_reward_config_requires_the_reward_model_section_for_that_target():
    from qwen25_rl.commands.reward import ServeRewardConfig
    from qwen25_rl.config import ConfigError

    with pytest.raises(ConfigError, match="reward_model section"):
        load_config(Path(REPO_ROOT / "configs/tiny/serve_reward.yaml"), ["target=reward_model"], schema=ServeRewardConfig)

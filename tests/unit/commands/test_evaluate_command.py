"""`qwen25-rl eval` flags (qwen25_rl/commands/evaluate.py): what they set, and the errors that stop
a run before any worker starts."""

from __future__ import annotations

import json

from qwen25_rl.cli import build_parser, main
from qwen25_rl.commands.evaluate import flag_overrides


def _overrides(*argv: str) -> list[str]:
    return flag_overrides(build_parser().parse_args(["eval", *argv]))


def test_flags_become_config_overrides_with_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    (tmp_path / "prompts.jsonl").write_text("{}\n")
    got = _overrides(
        "--model", "model", "--data", "prompts.jsonl", "--n", "8", "--k", "1,4", "--temperature", "0.7",
        "--max-new-tokens", "256", "--limit", "10", "--out", "runs/e1",
    )  # fmt: skip
    assert got == [
        f'model.path="{tmp_path / "model"}"',
        "model.preset=null",
        "data.name=null",
        f'data.eval_files=["{tmp_path / "prompts.jsonl"}"]',
        "rollout.samples_per_prompt=8",
        "eval.pass_k=[1, 4]",
        "rollout.temperature=0.7",
        "rollout.max_new_tokens=256",
        "data.limit=10",
        f'logging.output_dir="{tmp_path / "runs"}"',
        'logging.run_name="e1"',
    ]


def test_a_named_set_replaces_the_configs_files_and_n_samples_report_pass_at_1_and_n():
    assert _overrides("--data", "mbpp", "--n", "4") == [
        "data.name=mbpp",
        "data.eval_files=[]",
        "rollout.samples_per_prompt=4",
        "eval.pass_k=[1, 4]",
    ]


def test_bad_flags_are_one_line_errors(tmp_path, capsys):
    for argv, message in [
        (["--data", "gsm9k"], "--data gsm9k: neither a named set (gsm8k, math500, humaneval, mbpp) nor a file"),
        (["--data", "gsm8k", "--k", "1,x"], "--k '1,x': expected comma-separated integers"),
        (["--data", "gsm8k", "--responses", str(tmp_path / "none.jsonl")], f"--responses {tmp_path / 'none.jsonl'}: file not found"),
        (["--data", "gsm8k", "--model", str(tmp_path / "none")], f"--model {tmp_path / 'none'}: folder not found"),
    ]:
        assert main(["eval", *argv]) == 2
        assert message in capsys.readouterr().err


def test_a_bad_responses_row_stops_the_run_with_file_line_and_key_and_leaves_no_run_folder(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "1+1?", "answer": "2"}) + "\n")
    responses = tmp_path / "r.jsonl"
    responses.write_text(json.dumps({"index": 0, "response": "2"}) + "\n" + json.dumps({"id": "3", "response": "4"}) + "\n")
    rc = main(["eval", "--data", str(prompts), "--responses", str(responses), "--out", str(tmp_path / "run")])
    assert rc == 2
    assert f"{responses}:2: key 'id': no item '3'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_given_responses_fewer_than_k_for_an_item_stop_the_run_naming_the_item(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": "1+1?", "answer": "2"}) + "\n" for i in range(2)))
    responses = tmp_path / "r.jsonl"
    responses.write_text(json.dumps({"id": "q0", "responses": ["2", "3"]}) + "\n" + json.dumps({"id": "q1", "response": "2"}) + "\n")
    assert main(["eval", "--data", str(prompts), "--responses", str(responses), "--k", "1,2", "--out", str(tmp_path / "run")]) == 2
    assert f"{responses}: item 'q1' has 1 response(s), fewer than k=2" in capsys.readouterr().err

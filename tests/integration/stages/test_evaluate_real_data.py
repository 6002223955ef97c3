"""`qwen25-rl eval --responses` on the real evaluation sets (../shared/data, $QWEN25_RL_DATA): each
set's reference solutions, given as the responses, go the eval command's whole way (set loader,
prompt and gold builders, responses file, reward pool on the session's Ray, math verifier or
code sandbox, results.jsonl, summary.json) and must all score as solved.

These are the only checks of the reference solutions against the rewards: the reference halves
of tests/unit/reward/test_math_data.py and the canonical/reference-solution tests of
tests/unit/reward/test_code_real_data.py moved here, so each 1,319 / 500 / 164 / 974-row pass
runs once. Those files keep what does not go through eval (golds against themselves, the
symbolic stage on its own, the one-token mutants).

No exceptions: all 1,319 GSM8K and all 500 MATH-500 reference solutions verify, and all 164
HumanEval canonical solutions and all 974 MBPP reference programs pass. HumanEval/81's
canonical solution starts with a blank line; the code reward reads such a body as a
continuation of the prompt (reward/code.py, score_code).
"""

from __future__ import annotations

import json

import pytest
from environment import needs_root

from qwen25_rl.cli import main


def _rows(folder, name: str) -> list[dict]:
    with open(folder / name) as f:
        return [json.loads(line) for line in f]


def eval_responses(tmp_path, capsys, name: str, responses: list[dict], *overrides: str) -> tuple[dict, list[dict]]:
    given = tmp_path / f"{name}_responses.jsonl"
    given.write_text("".join(json.dumps(r) + "\n" for r in responses))
    out = tmp_path / f"eval-{name}"
    rc = main(["eval", "--data", name, "--responses", str(given), "--out", str(out), "logging.tensorboard=false", *overrides])
    assert rc == 0, capsys.readouterr().err[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return summary, results


def unsolved(results: list[dict]) -> list[tuple[str, list[str]]]:
    return [(r["id"], r["statuses"]) for r in results if r["passes"] != r["n"]]


def test_gsm8k_reference_solutions_score_as_correct_through_eval(local_ray, eval_data_dir, tmp_path, capsys):
    """Each reference solution (worked steps, then `#### N`) against the text after its `####`."""
    rows = _rows(eval_data_dir, "gsm8k_test.jsonl")
    summary, results = eval_responses(tmp_path, capsys, "gsm8k", [{"index": i, "response": r["answer"]} for i, r in enumerate(rows)])
    assert unsolved(results) == []
    assert [r["id"] for r in results] == [str(i) for i in range(1319)]
    assert (summary["items"], summary["accuracy"], summary["pass@1"], summary["statuses"]) == (1319, 1.0, 1.0, {"correct": 1319})


def test_math500_reference_solutions_score_as_correct_through_eval(local_ray, eval_data_dir, tmp_path, capsys):
    """Each reference solution (ending in its \\boxed answer) against the `answer` field."""
    rows = _rows(eval_data_dir, "math500_test.jsonl")
    summary, results = eval_responses(tmp_path, capsys, "math500", [{"id": r["unique_id"], "response": r["solution"]} for r in rows])
    assert unsolved(results) == []
    assert (summary["items"], summary["accuracy"], summary["statuses"]) == (500, 1.0, {"correct": 500})


@needs_root
def test_humaneval_canonical_solutions_pass_through_eval(local_ray, eval_data_dir, tmp_path, capsys):
    """Each canonical solution (a function body continuing the prompt) against `check(entry_point)`."""
    rows = _rows(eval_data_dir, "humaneval.jsonl")
    responses = [{"id": r["task_id"], "response": r["canonical_solution"]} for r in rows]
    summary, results = eval_responses(tmp_path, capsys, "humaneval", responses, "reward.pool.num_workers=2")
    assert unsolved(results) == []
    assert (summary["items"], summary["accuracy"], summary["statuses"]) == (164, 1.0, {"passed": 164})


@pytest.mark.slow
@needs_root
def test_mbpp_reference_programs_pass_through_eval(local_ray, eval_data_dir, tmp_path, capsys):
    """All 974 tasks (data.mbpp_split=all), each reference `code` against its `test_list` with its
    `test_setup_code`. 30 s per test instead of eval's 10: task 123's reference
    (amicable_numbers_sum(9999)) takes ~2.5 s alone and shares 2 cores with 7 other sandboxes."""
    rows = _rows(eval_data_dir, "mbpp.jsonl")
    summary, results = eval_responses(
        tmp_path,
        capsys,
        "mbpp",
        [{"id": r["task_id"], "response": r["code"]} for r in rows],
        "data.mbpp_split=all",
        "reward.pool.num_workers=2",
        "reward.functions=[{type: code, params: {mode: all, per_test_timeout_s: 30}}]",
    )
    assert unsolved(results) == []
    assert (summary["items"], summary["accuracy"], summary["statuses"]) == (974, 1.0, {"passed": 974})

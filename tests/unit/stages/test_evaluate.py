"""`qwen25-rl eval` without Ray or a model: the prompt and gold of each named set, your prompt
files, given-response files (their errors name file:line and key), prompt rendering, the status
of a scored response, the summary's pass@k and the config's rules."""

from __future__ import annotations

import json
import re

import pytest

from qwen25_rl.algorithms.pass_at_k import pass_at_k
from qwen25_rl.config import ConfigError, load_config
from qwen25_rl.data.prompts import DatasetError
from qwen25_rl.reward.types import RewardResult
from qwen25_rl.stages.eval_config import EvalConfig, EvalDataConfig
from qwen25_rl.stages.evaluate import (
    HUMANEVAL_STOP,
    MATH_INSTRUCTION,
    cut_at_stop,
    gsm8k_item,
    humaneval_item,
    load_file_items,
    load_named_set,
    math500_item,
    mbpp_item,
    read_responses,
    render_prompts,
    response_status,
    reward_for,
    summarize,
)

GSM8K_ROW = {
    "question": "Tom has 3 apples and buys 2,000 more. How many apples does he have?",
    "answer": "He has 3 + 2000 = <<3+2000=2003>>2003 apples.\n#### 2,003",
}
MATH500_ROW = {
    "problem": "What is $\\frac{1}{2} + \\frac{1}{3}$?",
    "solution": "The sum is $\\boxed{\\frac{5}{6}}$.",
    "answer": "\\frac{5}{6}",
    "subject": "Prealgebra",
    "level": 1,
    "unique_id": "test/prealgebra/1.json",
}
HUMANEVAL_ROW = {
    "task_id": "HumanEval/7",
    "prompt": 'def add(a, b):\n    """Sum of a and b."""\n',
    "canonical_solution": "    return a + b\n",
    "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
    "entry_point": "add",
}
MBPP_ROW = {
    "task_id": 11,
    "text": "Write a function to add two numbers.",
    "code": "def add(a, b):\n    return a + b",
    "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"],
    "test_setup_code": "",
    "challenge_test_list": [],
}


# -- the named sets ---------------------------------------------------------------------------


def test_gsm8k_gold_is_the_text_after_the_last_hashes_and_the_prompt_asks_for_a_boxed_answer():
    it = gsm8k_item("gsm.jsonl:5", 4, GSM8K_ROW)
    assert (it.id, it.answer, it.data_source) == ("4", "2,003", "gsm8k")
    assert it.messages == [{"role": "user", "content": f"{GSM8K_ROW['question']}\n{MATH_INSTRUCTION}"}]
    assert it.plain_prompt.startswith("Question: Tom has") and it.plain_prompt.endswith("\nAnswer:")


def test_gsm8k_row_without_hashes_is_an_error_naming_file_line_and_key():
    with pytest.raises(DatasetError, match=re.escape("gsm.jsonl:5: key 'answer' has no '#### <answer>' line")):
        gsm8k_item("gsm.jsonl:5", 4, {"question": "q", "answer": "42"})


def test_math500_gold_is_its_answer_field_and_the_id_its_unique_id():
    it = math500_item("m.jsonl:1", 0, MATH500_ROW)
    assert (it.id, it.answer, it.extra) == ("test/prealgebra/1.json", "\\frac{5}{6}", {"subject": "Prealgebra", "level": 1})
    assert it.messages[0]["content"] == f"{MATH500_ROW['problem']}\n{MATH_INSTRUCTION}"
    assert "\\boxed{}" in MATH_INSTRUCTION


def test_humaneval_prompt_is_the_code_to_complete_and_the_gold_leaves_out_the_solution():
    it = humaneval_item("h.jsonl:8", 7, HUMANEVAL_ROW)
    assert it.id == "HumanEval/7"
    assert f"```python\n{HUMANEVAL_ROW['prompt']}```" in it.messages[0]["content"]
    assert it.plain_prompt == HUMANEVAL_ROW["prompt"] and it.plain_stop == HUMANEVAL_STOP
    assert it.answer == {k: HUMANEVAL_ROW[k] for k in ("task_id", "prompt", "test", "entry_point")}


def test_mbpp_prompt_is_the_text_plus_its_first_test_and_the_gold_its_asserts():
    it = mbpp_item("mbpp.jsonl:11", 0, MBPP_ROW)
    content = it.messages[0]["content"]
    assert content.startswith(MBPP_ROW["text"]) and "assert add(1, 2) == 3" in content and "assert add(0, 0)" not in content
    assert it.answer == {"test_list": MBPP_ROW["test_list"], "test_setup_code": ""}
    assert it.id == "11" and it.plain_prompt.endswith("```python\n") and it.plain_stop == ("\n```",)


def test_a_missing_or_mistyped_field_of_a_real_set_row_names_file_line_and_key():
    with pytest.raises(DatasetError, match=re.escape("mbpp.jsonl:3: missing key 'test_list'")):
        mbpp_item("mbpp.jsonl:3", 0, {k: v for k, v in MBPP_ROW.items() if k != "test_list"})
    with pytest.raises(DatasetError, match=re.escape("h.jsonl:2: key 'entry_point' must be str, got int")):
        humaneval_item("h.jsonl:2", 0, {**HUMANEVAL_ROW, "entry_point": 3})


def test_mbpp_split_selects_googles_task_id_ranges(tmp_path, monkeypatch):
    rows = [{**MBPP_ROW, "task_id": t} for t in (1, 10, 11, 510, 511, 600, 601, 974)]
    (tmp_path / "mbpp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("QWEN25_RL_DATA", str(tmp_path))
    assert [it.id for it in load_named_set("mbpp", "test")] == ["11", "510"]
    assert [it.id for it in load_named_set("mbpp", "validation")] == ["511", "600"]
    assert len(load_named_set("mbpp", "all")) == 8


def test_a_missing_named_set_file_names_the_data_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN25_RL_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match=r"data.name gsm8k: .*gsm8k_test.jsonl not found: set QWEN25_RL_DATA"):
        load_named_set("gsm8k")


# -- your files -------------------------------------------------------------------------------


def _write(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_file_items_use_the_prompt_loader_keys_and_ids_from_the_id_column_or_position(tmp_path):
    f = _write(
        tmp_path / "p.jsonl",
        [
            {"question": "1+1?", "answer": "2", "id": "a", "family": "add"},
            {"messages": [{"role": "user", "content": "2+2?"}], "answer": 4, "data_source": "arith"},
        ],
    )
    items = load_file_items(EvalDataConfig(eval_files=[f], prompt_key="question"))
    assert [(it.id, it.messages[-1]["content"], it.answer) for it in items] == [("a", "1+1?", "2"), ("1", "2+2?", 4)]
    assert items[0].extra == {"family": "add"} and items[1].data_source == "arith"


def test_file_row_without_the_answer_key_is_an_error_naming_file_line_and_key(tmp_path):
    f = _write(tmp_path / "p.jsonl", [{"prompt": "1+1?", "answer": "2"}, {"prompt": "2+2?", "solution": "4"}])
    with pytest.raises(DatasetError, match=re.escape(f"{f}:2: missing key 'answer'")):
        load_file_items(EvalDataConfig(eval_files=[f]))


def test_file_rows_with_the_same_id_are_an_error_naming_both_lines(tmp_path):
    f = _write(tmp_path / "p.jsonl", [{"prompt": "a", "answer": "1", "id": 7}, {"prompt": "b", "answer": "2", "id": "7"}])
    with pytest.raises(DatasetError, match=re.escape(f"{f}:2: key 'id': id '7' repeats (first at {f}:1)")):
        load_file_items(EvalDataConfig(eval_files=[f]))


# -- given responses --------------------------------------------------------------------------


@pytest.fixture
def items():
    return [gsm8k_item(f"gsm.jsonl:{i + 1}", i, GSM8K_ROW) for i in range(3)]


def test_responses_accumulate_per_item_by_id_or_index(tmp_path, items):
    f = _write(
        tmp_path / "r.jsonl",
        [
            {"id": "0", "response": "a"},
            {"index": 2, "responses": ["b", "c"]},
            {"id": 0, "responses": ["d"], "scores": [1.0]},  # integer ids and extra keys (results.jsonl) are fine
            {"id": "2", "index": 2, "response": "e"},
        ],
    )
    assert read_responses(f, items, "gsm8k") == {0: ["a", "d"], 2: ["b", "c", "e"]}


@pytest.mark.parametrize(
    "row, message",
    [
        ({"id": "9", "response": "x"}, "key 'id': no item '9' in gsm8k (its ids look like '0', '1', '2')"),
        ({"index": 3, "response": "x"}, "key 'index': 3 is outside 0..2 (gsm8k has 3 items)"),
        ({"index": "1", "response": "x"}, "key 'index' must be an integer, got str"),
        ({"id": ["0"], "response": "x"}, "key 'id' must be a string or integer, got list"),
        ({"id": "1", "index": 2, "response": "x"}, "key 'index': item 2 is '2', but key 'id' names '1'"),
        ({"response": "x"}, "missing key 'id' (or 'index')"),
        ({"id": "1"}, "missing key 'response' (one text) or 'responses' (a list of texts)"),
        ({"id": "1", "response": 5}, "key 'response' must be a string, got int"),
        ({"id": "1", "responses": "x"}, "key 'responses' must be a non-empty list of strings"),
        ({"id": "1", "responses": []}, "key 'responses' must be a non-empty list of strings"),
        ({"id": "1", "responses": ["a", None]}, "key 'responses': entry 1 must be a string, got NoneType"),
        ({"id": "1", "response": "a", "responses": ["b"]}, "key 'responses': give 'response' (one text) or 'responses'"),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_bad_response_row_is_an_error_naming_file_line_and_key(tmp_path, items, row, message):
    f = _write(tmp_path / "r.jsonl", [{"id": "0", "response": "fine"}, row])
    with pytest.raises(DatasetError, match=re.escape(f"{f}:2: ") + ".*" + re.escape(message)):
        read_responses(f, items, "gsm8k")


# -- prompts for the model --------------------------------------------------------------------


def test_prompts_go_through_the_chat_template_when_the_tokenizer_has_one(tiny_tokenizer, items):
    render_prompts(items, tiny_tokenizer, EvalDataConfig(name="gsm8k"))
    expected = tiny_tokenizer.apply_chat_template(items[0].messages, tokenize=False, add_generation_prompt=True)
    assert items[0].prompt_text == expected and items[0].chat
    assert items[0].prompt_ids == tiny_tokenizer.encode(expected, add_special_tokens=False)


def test_prompts_are_the_plain_form_without_a_chat_template(tiny_tokenizer, items):
    render_prompts(items, tiny_tokenizer, EvalDataConfig(name="gsm8k", apply_chat_template=False))
    assert items[0].prompt_text == items[0].plain_prompt and not items[0].chat


def test_a_prompt_over_max_prompt_length_is_an_error_naming_the_item_or_dropped_and_counted(tiny_tokenizer, items):
    with pytest.raises(DatasetError, match=re.escape("gsm.jsonl:1: item '0': the prompt has")):
        render_prompts(list(items), tiny_tokenizer, EvalDataConfig(name="gsm8k", max_prompt_length=8))
    assert render_prompts(items, tiny_tokenizer, EvalDataConfig(name="gsm8k", max_prompt_length=8, on_long_prompt="drop")) == 3
    assert items == []


def test_plain_text_completion_is_cut_at_the_first_stop_sequence():
    body = "    return a + b\n\n\ndef other():\n    pass\n#"
    assert cut_at_stop(body, HUMANEVAL_STOP) == "    return a + b\n\n"
    assert cut_at_stop("    return 1", HUMANEVAL_STOP) == "    return 1"


# -- scoring ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "result, status",
    [
        (RewardResult(1.0, {"math": 1.0}, function_status={"math": "ok"}, details={"math": {"status": "correct"}}), "correct"),
        (RewardResult(0.0, {"math": 0.0}, function_status={"math": "ok"}, details={"math": {"status": "no_answer"}}), "no_answer"),
        (RewardResult(1.0, {"code": 1.0}, function_status={"code": "ok"}, details={"code": {"status": "graded"}}), "passed"),
        (RewardResult(0.0, {"code": 0.0}, function_status={"code": "ok"}, details={"code": {"status": "graded"}}), "failed"),
        (RewardResult(0.0, {"code": None}, "error", "boom", function_status={"code": "error"}), "error"),
        (RewardResult(None, {"math": None}, "timeout", dropped=True, function_status={"math": "timeout"}), "dropped"),
        (RewardResult(1.0, {"mine": 1.0}, function_status={"mine": "ok"}), "correct"),
        (RewardResult(0.5, {"mine": 0.5}, function_status={"mine": "ok"}), "incorrect"),
        (RewardResult(0.0, {}, function_status={}), "skipped"),
    ],
)
def test_a_response_status_is_the_verifiers_own_or_why_there_is_no_verdict(result, status):
    label = next(iter(result.function_status), "mine")
    assert response_status(result, label) == status


def test_summary_pass_at_k_and_accuracy_come_from_each_items_counts():
    rows = [
        {"n": 4, "passes": 0, "scores": [0.0] * 4, "statuses": ["wrong"] * 4},
        {"n": 4, "passes": 1, "scores": [1.0, 0, 0, 0], "statuses": ["correct"] + ["wrong"] * 3},
        {"n": 4, "passes": 4, "scores": [1.0] * 4, "statuses": ["correct"] * 4},
    ]
    s = summarize(rows, [1, 2, 4])
    for k in (1, 2, 4):
        assert s[f"pass@{k}"] == pytest.approx(sum(pass_at_k(4, r["passes"], k) for r in rows) / 3)
    assert s["accuracy"] == pytest.approx((0 + 0.25 + 1) / 3) == pytest.approx(s["pass@1"])
    assert (s["items"], s["responses"], s["n"], s["items_solved"]) == (3, 12, 4, 2)
    assert s["statuses"] == {"correct": 5, "wrong": 7}


def test_a_named_set_runs_only_its_own_reward_with_the_configs_params_for_that_type():
    cfg = EvalConfig.model_validate(
        {
            "data": {"name": "mbpp", "responses_file": "/r.jsonl"},
            "reward": {"functions": [{"type": "math"}, {"type": "code", "weight": 0.3, "params": {"per_test_timeout_s": 20}}]},
        }
    )
    reward, label = reward_for(cfg)
    assert label == "code" and [f.type for f in reward.functions] == ["code"]
    assert reward.functions[0].params["per_test_timeout_s"] == 20 and reward.functions[0].weight == 1.0
    default, _ = reward_for(EvalConfig.model_validate({"data": {"name": "humaneval", "responses_file": "/r.jsonl"}}))
    assert default.functions[0].params["mode"] == "all" and default.functions[0].params["per_test_timeout_s"] == 10.0


# -- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.name=gsm8k", "data.eval_files=[a.jsonl]"], "give a named set"),
        (["data.name=null"], "give a named set"),
        (["data.name=gsm8k", "model.path=null", "model.preset=tiny"], "sampling responses needs model.path"),
        (["data.name=gsm8k", "rollout.samples_per_prompt=4"], "greedy decoding gives the same answer every time"),
        (["data.name=gsm8k", "rollout.samples_per_prompt=4", "rollout.temperature=1.0", "eval.pass_k=[1,8]"], "eval.pass_k [8]"),
        (["data.name=gsm8k", "data.name=gsm9k"], "data.name"),
    ],
)
def test_config_rejects_what_cannot_be_evaluated(tmp_path, overrides, message):
    model = ["model.path=" + str(tmp_path), "model.preset=null"]
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, model + overrides, schema=EvalConfig)

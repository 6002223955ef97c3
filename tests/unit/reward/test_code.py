"""The code reward against the real sandbox: scoring rules, test formats, per-test limits."""

from __future__ import annotations

import pytest
from environment import needs_root

from qwen25_rl.reward.code import check_asserts, check_humaneval, check_io, grade_asserts, grade_io, score_code

pytestmark = needs_root

PROBLEM = {
    "task_id": "Toy/0",
    "prompt": 'from typing import List\n\n\ndef evens(xs: List[int]) -> List[int]:\n    """Even numbers of xs, in order."""\n',
    "entry_point": "evens",
    "canonical_solution": "    return [x for x in xs if x % 2 == 0]\n",
    "test": "\n\ndef check(candidate):\n    assert candidate([1, 2, 3, 4]) == [2, 4]\n    assert candidate([]) == []\n    assert candidate([5]) == []\n    assert candidate([0, -2]) == [0, -2]\n",
}


def test_humaneval_canonical_completion_scores_one():
    assert check_humaneval(PROBLEM, PROBLEM["canonical_solution"]) == 1.0


def test_humaneval_wrong_completion_scores_zero():
    assert check_humaneval(PROBLEM, "    return []\n") == 0.0


def test_humaneval_fraction_mode_counts_asserts():
    # passes the two asserts whose answer is [] and fails the others
    assert check_humaneval(PROBLEM, "    return []\n", mode="fraction") == 0.5


def test_humaneval_completion_may_be_a_whole_function_using_the_prompts_imports():
    full = "def evens(xs: List[int]) -> List[int]:\n    return list(filter(lambda x: x % 2 == 0, xs))\n"
    assert check_humaneval(PROBLEM, full) == 1.0


def test_humaneval_tests_use_helpers_from_the_prompt_not_from_the_completion():
    problem = dict(PROBLEM)
    problem["prompt"] = "def helper(x):\n    return x * 10\n\n\n" + PROBLEM["prompt"]
    problem["test"] = "\n\ndef check(candidate):\n    assert helper(candidate([2])[0]) == 20\n"
    # The completion redefines helper so that any answer would pass: the prompt's helper is used.
    cheat = "    return [7]\n\ndef helper(x):\n    return 20\n"
    assert check_humaneval(problem, cheat) == 0.0
    assert check_humaneval(problem, PROBLEM["canonical_solution"]) == 1.0


def test_humaneval_problem_with_missing_keys_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="entry_point"):
        check_humaneval({"prompt": "", "test": ""}, "pass")


def test_asserts_fraction_and_all_or_nothing():
    code = "def add(a, b):\n    return a + b if a < 10 else 0"
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(10, 1) == 11"]
    assert check_asserts(code, tests) == pytest.approx(2 / 3)
    assert check_asserts(code, tests, mode="all") == 0.0
    assert check_asserts("def add(a, b):\n    return a + b", tests, mode="all") == 1.0


def test_a_slow_test_fails_alone_and_the_next_test_runs_in_a_fresh_process():
    code = "import time\ndef f(x):\n    if x == 2:\n        time.sleep(60)\n    return x"
    s = grade_asserts(code, ["assert f(1) == 1", "assert f(2) == 2", "assert f(3) == 3"], timeout_s=1)
    assert [t["passed"] for t in s.tests] == [True, False, True]
    assert "timed out" in s.tests[1]["error"]


def test_a_program_that_fails_to_load_fails_every_test_with_the_reason():
    s = grade_asserts("def f(:\n", ["assert f(1) == 1", "assert f(2) == 2"])
    assert s.score == 0.0 and s.status == "graded"
    assert all("SyntaxError" in t["error"] for t in s.tests)


def test_expected_exceptions_reach_the_tests_with_their_type():
    code = "def div(a, b):\n    return a // b"
    tests = ["try:\n    div(1, 0)\n    raise AssertionError('no error')\nexcept ZeroDivisionError:\n    pass"]
    assert check_asserts(code, tests) == 1.0


def test_classes_of_the_program_are_usable_through_handles():
    code = (
        "class Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n"
        "def longest(pairs):\n    return max(p.b - p.a for p in pairs)\n"
    )
    setup = "p = Pair(1, 5)\np.b = 9\n"
    assert check_asserts(code, ["assert longest([p, Pair(2, 3)]) == 8", "assert p.b == 9"], setup_code=setup) == 1.0


def test_a_function_shadowing_a_builtin_is_the_function_under_test_when_it_is_the_only_one():
    code = "def sum(a, b):\n    return a * b"
    assert check_asserts(code, ["assert sum(3, 4) == 12"]) == 1.0


def test_a_program_cannot_replace_builtins_the_tests_use_to_check():
    code = "def f(x):\n    return [3, 1]\ndef sorted(x):\n    return [1, 2, 3]\ndef set(x):\n    return 'same'"
    tests = ["assert sorted(f(0)) == [1, 2, 3]", "assert set(f(0)) == set([1, 2, 3])"]
    assert check_asserts(code, tests) == 0.0


def test_a_program_cannot_replace_a_stdlib_module_the_tests_use():
    code = "class math:\n    isclose = staticmethod(lambda *a, **k: True)\ndef area(r):\n    return 0"
    assert check_asserts(code, ["assert math.isclose(area(1), 3.14159, rel_tol=1e-3)"]) == 0.0
    good = "import math\ndef area(r):\n    return math.pi * r * r"
    assert check_asserts(good, ["assert math.isclose(area(1), 3.14159, rel_tol=1e-3)"]) == 1.0


def test_io_fraction_with_whitespace_normalised():
    code = "a, b = map(int, input().split())\nprint(a + b, end='  \\n\\n')"
    cases = [{"input": "1 2\n", "output": "3"}, {"input": "5 5", "output": "10\n"}, {"input": "1 1", "output": "3"}]
    assert check_io(code, cases) == pytest.approx(2 / 3)
    assert check_io(code, cases, mode="all") == 0.0


def test_io_case_that_crashes_or_hangs_fails_alone():
    code = "n = int(input())\nif n == 0:\n    raise SystemExit(1)\nif n == 1:\n    while True: pass\nprint(n)"
    s = grade_io(code, [{"input": "0", "output": ""}, {"input": "1", "output": "1"}, {"input": "2", "output": "2"}], timeout_s=1)
    assert [t["passed"] for t in s.tests] == [False, False, True]
    assert s.tests[1]["error"].startswith("timeout")


def test_io_cases_must_be_well_formed():
    with pytest.raises(ValueError, match="case 1"):
        check_io("print(1)", [{"input": "", "output": "1"}, {"input": ""}])
    with pytest.raises(ValueError, match="non-empty"):
        check_io("print(1)", [])


def test_score_code_reads_every_test_format():
    resp = "```python\ndef add(a, b):\n    return a + b\n```"
    io_resp = "```python\nprint(sum(map(int, input().split())))\n```"
    assert score_code(resp, ["assert add(1, 2) == 3"]).score == 1.0
    assert score_code(resp, {"test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 1"], "test_setup_code": ""}).score == 0.5
    assert score_code(resp, {"inputs": [[1, 2], [3, 4]], "outputs": [3, 7], "fn_name": "add"}).score == 1.0
    assert score_code(io_resp, {"inputs": ["1 2\n"], "outputs": ["3\n"]}).score == 1.0
    assert score_code(io_resp, [{"input": "1 2", "output": "3"}]).score == 1.0
    he = score_code("```python\ndef evens(xs):\n    return [x for x in xs if not x % 2]\n```", PROBLEM)
    assert (he.score, he.kind) == (1.0, "humaneval")


def test_score_code_without_code_is_no_code():
    s = score_code("I don't know.", ["assert f(1) == 1"])
    assert (s.score, s.status) == (0.0, "no-code")


def test_score_code_reads_a_humaneval_body_that_starts_with_blank_lines():
    s = score_code("\n   \n" + PROBLEM["canonical_solution"], PROBLEM)
    assert (s.score, s.status) == (1.0, "graded")


def test_score_code_rejects_unknown_test_formats():
    with pytest.raises(ValueError, match="tests must be"):
        score_code("x = 1", {"foo": 1})
    with pytest.raises(ValueError, match="mode"):
        score_code("x = 1", ["assert x == 1"], mode="half")

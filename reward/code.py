"""Code-execution reward: run a program against tests in the sandbox and count what passed.

Entry points (kept stable):
    check_humaneval(problem, completion) -> float   HumanEval row + completion (prompt continuation)
    check_io(code, cases) -> float                  stdin/stdout cases [{"input", "output"}, ...]
    check_asserts(code, tests, setup_code="")        MBPP-style assert lines
    score_code(response, tests, mode=...) -> CodeScore   model response in, score + details out

Grading is done from positive evidence outside the untrusted code (sandboxes/harness.py):
the tests run in a grader process, the program in another, and only a verdict the grader writes
on its private channel, tagged with this run's nonce, counts. What that rules out: `sys.exit(0)`
or `os._exit(0)` before the asserts, a printed "passed" line, objects whose `__eq__` is always
true, reading the tests (they never enter the program's process), tampering with the grader
through the interpreter (gc, frames, ctypes act only on the program's own process), and making
the grader run something of the program's choosing (an entry point bound to `pdb.run` runs in
the program's process; files it plants are never read by the grader): see "Trust boundary" in
sandboxes/README.md.

Time: each test has its limit (`timeout_s`); a program that exceeds it fails that test, and
the grader's verdict arrives within `max_grading_seconds(tests)` however slow the program is,
so a slow program is a 0, never a missing verdict.

What the grader does NOT protect against:
- Programs that special-case the visible test inputs (a lookup table of the asserts' answers
  passes): the reward is only as good as the tests.
- Tests that use names the program defines other than the function under test (MBPP tests that
  call a helper the reference solution happened to import): such names come from the program,
  and calls to them run there.
- Tests that check mutation of their own arguments: arguments are copied to the program's
  process, so in-place changes are not seen (none of HumanEval/MBPP does this).
- Values of the program that are not plain data (instances of its own classes) reach the tests
  as opaque handles: equal only to themselves, no truth value, attribute access and calls go
  back to the program. A test comparing such objects by value fails.
- Nondeterminism and timing: a solution that is slow only under load may fail a time limit;
  stdout/stdin comparison is exact after stripping trailing whitespace per line and trailing
  blank lines (no float tolerance).
- Kernel exploits and hardware side channels: bounded by the sandbox layers (seccomp,
  namespaces, unprivileged uid), not eliminated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qwen25_rl.reward.code_extract import called_names, defines, extract_code
from qwen25_rl.sandboxes import Sandbox, Status, run_calls, run_io
from qwen25_rl.sandboxes.graded import HOST_OVERHEAD_S, CallsVerdict, IOVerdict, calls_budget_s, io_budget_s

DEFAULT_TEST_TIMEOUT_S = 5.0


@dataclass
class CodeScore:
    """The outcome of grading one program.

    status: "graded" (a verdict came back; `score` is meaningful), "no-code" (nothing to run
    was found in the response), "no-verdict" (the program took the grader down with it, e.g.
    killed it or ran past the total time: scored 0, the program's fault), or "sandbox-error"
    (the sandbox itself failed: not the program's fault, callers should report, not score 0).
    """

    score: float
    passed: int
    total: int
    status: str
    kind: str = ""  # humaneval / asserts / io
    code: str | None = None
    error: str | None = None
    tests: list[dict[str, Any]] = field(default_factory=list)  # per test: passed, error, seconds
    exec_status: str = ""
    wall_s: float = 0.0

    @property
    def failed_to_grade(self) -> bool:
        return self.status == "sandbox-error"

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "passed": self.passed,
            "total": self.total,
            "status": self.status,
            "kind": self.kind,
            "error": self.error,
            "tests": self.tests,
            "exec_status": self.exec_status,
            "wall_s": self.wall_s,
        }


def _check_mode(mode: str) -> None:
    if mode not in ("fraction", "all"):
        raise ValueError(f"mode must be 'fraction' or 'all', got {mode!r}")


def _no_verdict(kind: str, total: int, code: str | None, v: CallsVerdict | IOVerdict) -> CodeScore:
    res = v.exec_result
    status = "sandbox-error" if res.status == Status.SANDBOX_ERROR else "no-verdict"
    return CodeScore(0.0, 0, total, status, kind, code, v.error, [], res.status, res.wall_s)


def _from_calls(kind: str, v: CallsVerdict, mode: str, code: str | None, split: bool) -> CodeScore:
    res = v.exec_result
    if not v.valid:
        return _no_verdict(kind, max(1, len(v.units)), code, v)
    tests: list[dict[str, Any]] = []
    if split:
        # Units are whole test functions whose asserts were recorded one by one: the tests
        # counted are the asserts (not reached = failed unless the unit completed).
        for u in v.units:
            for i, a in enumerate(u.asserts or []):
                ok = a is True or (a is None and u.completed)
                tests.append({"passed": ok, "error": None if ok else (u.error or f"assert #{i + 1} failed"), "seconds": u.seconds})
            if not u.asserts:
                tests.append({"passed": u.passed, "error": u.error, "seconds": u.seconds})
    else:
        tests = [{"passed": u.passed, "error": u.error, "seconds": u.seconds} for u in v.units]
    passed = sum(t["passed"] for t in tests)
    total = len(tests)
    all_ok = total > 0 and passed == total and all(u.passed for u in v.units)
    score = (1.0 if all_ok else 0.0) if mode == "all" else (passed / total if total else 0.0)
    return CodeScore(score, passed, total, "graded", kind, code, v.load_error, tests, res.status, res.wall_s)


# --------------------------------------------------------------------------------------------
# HumanEval


def humaneval_program(problem: dict, completion: str) -> str:
    """HumanEval's convention: the program is the prompt followed by the completion. A completion
    that is a whole program (it defines the entry point itself) is appended on a new line, so
    its definitions replace the prompt's stub and keep the prompt's imports."""
    prompt = problem["prompt"]
    if defines(completion, problem["entry_point"]) and not completion.startswith((" ", "\t")):
        return prompt.rstrip("\n") + "\n\n" + completion
    return prompt + completion


def _humaneval_unit(problem: dict) -> str:
    return problem["test"] + f"\n\ncheck({problem['entry_point']})\n"


def _validate_humaneval(problem: Any) -> None:
    if not isinstance(problem, dict):
        raise TypeError(f"HumanEval problem must be a dict, got {type(problem).__name__}")
    for key in ("prompt", "test", "entry_point"):
        if not isinstance(problem.get(key), str):
            raise ValueError(f"HumanEval problem {problem.get('task_id', '?')!r}: key {key!r} missing or not a string")


def grade_humaneval(
    problem: dict,
    completion: str,
    *,
    mode: str = "all",
    timeout_s: float = DEFAULT_TEST_TIMEOUT_S,
    sandbox: Sandbox | None = None,
    code_for_report: str | None = None,
) -> CodeScore:
    _validate_humaneval(problem)
    _check_mode(mode)
    split = mode == "fraction"
    entry = problem["entry_point"]
    v = run_calls(
        humaneval_program(problem, completion),
        [_humaneval_unit(problem)],
        prelude=problem["prompt"],  # trusted: the helpers the tests use come from the prompt
        expose=[entry],
        split_asserts=split,
        unit_timeout_s=timeout_s,
        sandbox=sandbox,
    )
    return _from_calls("humaneval", v, mode, code_for_report if code_for_report is not None else completion, split)


def check_humaneval(problem: dict, completion: str, *, mode: str = "all", timeout_s: float = DEFAULT_TEST_TIMEOUT_S) -> float:
    """1.0 if `prompt + completion` passes the problem's `check(entry_point)`, else 0.0.

    mode="fraction" counts the asserts of `check` one by one instead."""
    return grade_humaneval(problem, completion, mode=mode, timeout_s=timeout_s).score


# --------------------------------------------------------------------------------------------
# assert lists (MBPP)


def grade_asserts(
    code: str,
    tests: list[str],
    *,
    setup_code: str = "",
    mode: str = "fraction",
    timeout_s: float = DEFAULT_TEST_TIMEOUT_S,
    sandbox: Sandbox | None = None,
) -> CodeScore:
    _check_mode(mode)
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise ValueError("tests must be a non-empty list of Python statements (strings)")
    if not isinstance(setup_code, str):
        raise TypeError("setup_code must be a string")
    v = run_calls(code, list(tests), setup=setup_code, expose=None, unit_timeout_s=timeout_s, sandbox=sandbox)
    return _from_calls("asserts", v, mode, code, split=False)


def check_asserts(
    code: str, tests: list[str], setup_code: str = "", *, mode: str = "fraction", timeout_s: float = DEFAULT_TEST_TIMEOUT_S
) -> float:
    """Fraction of the assert statements in `tests` that hold for `code` (MBPP style)."""
    return grade_asserts(code, tests, setup_code=setup_code, mode=mode, timeout_s=timeout_s).score


# --------------------------------------------------------------------------------------------
# stdin / stdout


def normalize_output(text: str) -> list[str]:
    """Lines with trailing whitespace removed, without trailing blank lines."""
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _validate_cases(cases: Any) -> list[tuple[str, str]]:
    if not isinstance(cases, list) or not cases:
        raise ValueError("cases must be a non-empty list of {'input': str, 'output': str}")
    out = []
    for i, c in enumerate(cases):
        if not isinstance(c, dict) or "input" not in c or "output" not in c:
            raise ValueError(f"case {i}: expected a dict with 'input' and 'output', got {c!r:.80}")
        inp, exp = c["input"], c["output"]
        if isinstance(inp, list):
            inp = "\n".join(map(str, inp)) + "\n"
        if isinstance(exp, list):
            exp = "\n".join(map(str, exp)) + "\n"
        if not isinstance(inp, str) or not isinstance(exp, str):
            raise ValueError(f"case {i}: 'input' and 'output' must be strings (or lists of lines)")
        out.append((inp, exp))
    return out


def grade_io(
    code: str,
    cases: list[dict],
    *,
    mode: str = "fraction",
    timeout_s: float = DEFAULT_TEST_TIMEOUT_S,
    sandbox: Sandbox | None = None,
) -> CodeScore:
    _check_mode(mode)
    pairs = _validate_cases(cases)
    v = run_io(code, [inp for inp, _ in pairs], case_timeout_s=timeout_s, sandbox=sandbox)
    if not v.valid:
        return _no_verdict("io", len(pairs), code, v)
    tests = []
    for (_, expected), case in zip(pairs, v.cases):
        ok = case.status == Status.OK and normalize_output(case.stdout) == normalize_output(expected)
        err = None
        if not ok:
            err = f"{case.status} (exit {case.exit_code})" if case.status != Status.OK else "wrong output"
        tests.append({"passed": ok, "error": err, "seconds": case.seconds})
    passed = sum(t["passed"] for t in tests)
    score = (1.0 if passed == len(tests) else 0.0) if mode == "all" else passed / len(tests)
    res = v.exec_result
    return CodeScore(score, passed, len(tests), "graded", "io", code, None, tests, res.status, res.wall_s)


def check_io(code: str, cases: list[dict], *, mode: str = "fraction", timeout_s: float = DEFAULT_TEST_TIMEOUT_S) -> float:
    """Fraction of stdin/stdout `cases` ({"input": ..., "output": ...}) that `code` gets right."""
    return grade_io(code, cases, mode=mode, timeout_s=timeout_s).score


# --------------------------------------------------------------------------------------------
# one entry point for rewards


def _apps_tests(tests: dict) -> tuple[str, Any]:
    """APPS / LiveCodeBench style {"inputs": [...], "outputs": [...], "fn_name"?: str}."""
    inputs, outputs = tests["inputs"], tests["outputs"]
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
        raise ValueError("tests: 'inputs' and 'outputs' must be lists of the same length")
    fn = tests.get("fn_name")
    if fn:
        if not isinstance(fn, str) or not fn.isidentifier():
            raise ValueError(f"tests: fn_name {fn!r} is not an identifier")
        lines = []
        for args, out in zip(inputs, outputs):
            args = args if isinstance(args, list) else [args]
            lines.append(f"assert {fn}(*{args!r}) == {out!r}")
        return "asserts", lines
    return "io", [{"input": i, "output": o} for i, o in zip(inputs, outputs)]


def _test_plan(tests: dict | list) -> tuple[str, Any, str]:
    """(kind, payload, setup code) for any supported form of `tests` (see score_code)."""
    if isinstance(tests, dict) and "entry_point" in tests and "test" in tests:
        _validate_humaneval(tests)
        return "humaneval", tests, ""
    if isinstance(tests, dict) and "test_list" in tests:
        return "asserts", list(tests["test_list"]), tests.get("test_setup_code") or ""
    if isinstance(tests, dict) and "inputs" in tests and "outputs" in tests:
        kind, payload = _apps_tests(tests)
        return kind, payload, ""
    if isinstance(tests, list) and tests and all(isinstance(t, str) for t in tests):
        return "asserts", tests, ""
    if isinstance(tests, list) and tests and all(isinstance(t, dict) for t in tests):
        return "io", tests, ""
    raise ValueError(
        "tests must be a HumanEval problem, an MBPP row (test_list), an APPS dict (inputs/outputs), "
        f"a list of {{'input','output'}} cases or a list of assert strings; got {type(tests).__name__}"
    )


def max_grading_seconds(tests: dict | list, *, mode: str = "fraction", timeout_s: float = DEFAULT_TEST_TIMEOUT_S) -> float:
    """The longest `score_code(response, tests, mode=, timeout_s=)` can take for any response:
    the sandbox's wall-clock limit for these tests (every test at its time limit) plus the
    host's clean-up. A reward that waits this long always gets a verdict: a slow program then
    scores 0 on the tests it was too slow for instead of turning into a reward timeout."""
    _check_mode(mode)
    kind, payload, _ = _test_plan(tests)
    if kind == "humaneval":
        budget = calls_budget_s([_humaneval_unit(payload)], timeout_s, split_asserts=mode == "fraction")
    elif kind == "asserts":
        budget = calls_budget_s(payload, timeout_s)
    else:
        budget = io_budget_s(len(payload), timeout_s)
    return budget + HOST_OVERHEAD_S


def score_code(
    response: str,
    tests: dict | list,
    *,
    mode: str = "fraction",
    timeout_s: float = DEFAULT_TEST_TIMEOUT_S,
    sandbox: Sandbox | None = None,
) -> CodeScore:
    """Extract the program from a model `response` and grade it against `tests`.

    tests may be: a HumanEval problem (dict with prompt/test/entry_point), an MBPP row (dict
    with test_list, optional test_setup_code), an APPS-style dict ({"inputs", "outputs",
    "fn_name"?}), a list of {"input", "output"} cases, or a list of assert statements.
    """
    _check_mode(mode)
    kind, payload, setup = _test_plan(tests)
    if kind == "humaneval":
        code = extract_code(response, entry_point=tests["entry_point"])
        if code is None:
            # HumanEval completions are often a bare function body continuing the prompt; its
            # first line with code is indented (blank lines may come first: HumanEval/81's
            # canonical solution starts with one).
            first = next((line for line in response.splitlines() if line.strip()), "")
            body = response if first.startswith((" ", "\t")) else None
            if body is None:
                return CodeScore(0.0, 0, 1, "no-code", "humaneval", None, "no code found in the response")
            code = body
        return grade_humaneval(tests, code, mode=mode, timeout_s=timeout_s, sandbox=sandbox)
    code = extract_code(response, entry_point=called_names(payload) if kind == "asserts" else None)
    n = len(payload)
    if code is None:
        return CodeScore(0.0, 0, n, "no-code", kind, None, "no code found in the response")
    if kind == "io":
        return grade_io(code, payload, mode=mode, timeout_s=timeout_s, sandbox=sandbox)
    return grade_asserts(code, payload, setup_code=setup, mode=mode, timeout_s=timeout_s, sandbox=sandbox)

"""Graded executions: tests that call into a program, and stdin/stdout cases.

The verdict is built on the host from the grader's channel message, accepted only if it carries
this execution's nonce (see harness.py for why the program cannot produce it). Anything else —
no verdict, a wrong nonce, a malformed verdict, a killed grader — is "not passed".
"""

from __future__ import annotations

import ast
import secrets
from dataclasses import dataclass

from qwen25_rl.sandboxes.config import Limits
from qwen25_rl.sandboxes.executor import Sandbox, default_sandbox
from qwen25_rl.sandboxes.result import ExecResult


@dataclass
class UnitResult:
    passed: bool
    error: str | None = None
    # Per-assert outcome when asserts were split: True held, False failed, None not reached.
    asserts: list[bool | None] | None = None
    completed: bool = False
    seconds: float = 0.0


@dataclass
class CallsVerdict:
    """Outcome of calls-mode grading; `units` is empty when no trustworthy verdict came back."""

    units: list[UnitResult]
    exec_result: ExecResult
    load_error: str | None = None
    restarts: int = 0
    error: str | None = None  # why there is no verdict

    @property
    def valid(self) -> bool:
        return self.error is None


@dataclass
class CaseRun:
    status: str  # ok / failed / timeout / output-limit / killed
    stdout: str
    exit_code: int | None
    seconds: float


@dataclass
class IOVerdict:
    cases: list[CaseRun]
    exec_result: ExecResult
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.error is None


# Wall-clock allowance of an execution beyond its tests: interpreter and namespace start-up,
# the grader's set-up and the verdict (seconds).
STARTUP_S = 5.0
# How long before the wall-clock kill the grader sends its verdict: tests not started by then
# fail instead of the whole execution ending without a verdict.
VERDICT_MARGIN_S = 2.0
# What an execution may take on the host beyond its wall-clock limit: waiting for the process
# tree to exit and killing what is left (Sandbox cleanup waits up to 5 s), and spawning it.
HOST_OVERHEAD_S = 8.0


def count_asserts(source: str) -> int:
    """`assert` statements in a test's source (what split_asserts records one by one)."""
    try:
        return sum(isinstance(n, ast.Assert) for n in ast.walk(ast.parse(source)))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return 0


def calls_budget_s(units: list[str], unit_timeout_s: float, load_timeout_s: float | None = None, split_asserts: bool = False) -> float:
    """The wall-clock limit run_calls gives an execution: start-up, the first load, and for each
    test its limit plus a reload (a test that times out kills the program's process, the next
    one starts a fresh one). With split_asserts every assert of a test has its own limit."""
    load_t = unit_timeout_s if load_timeout_s is None else load_timeout_s
    per_unit = [(max(1, count_asserts(u)) if split_asserts else 1) * unit_timeout_s for u in units]
    return STARTUP_S + load_t + sum(t + load_t for t in per_unit)


def io_budget_s(n_inputs: int, case_timeout_s: float) -> float:
    """The wall-clock limit run_io gives an execution: start-up and every case's limit."""
    return STARTUP_S + n_inputs * (case_timeout_s + 0.5)


def verdict_by_s(budget_s: float) -> float:
    """When, after start, the grader must send its verdict for an execution of `budget_s`."""
    return budget_s - min(VERDICT_MARGIN_S, budget_s / 4)


def _verdict(res: ExecResult, nonce: str, mode: str) -> tuple[dict | None, str | None]:
    msgs = [m for m in res.channel if m.get("event") == "verdict"]
    if not msgs:
        why = f"no verdict from the grader ({res.status}"
        why += f": {res.error})" if res.error else ")"
        return None, why
    if len(msgs) != 1:
        return None, "more than one verdict on the grader channel"
    v = msgs[0]
    if v.get("nonce") != nonce or v.get("mode") != mode:
        return None, "verdict does not carry this execution's nonce"
    return v, None


def run_calls(
    program: str,
    units: list[str],
    *,
    prelude: str = "",
    setup: str = "",
    expose: list[str] | None = None,
    split_asserts: bool = False,
    unit_timeout_s: float = 5.0,
    load_timeout_s: float | None = None,
    total_timeout_s: float | None = None,
    limits: Limits | None = None,
    sandbox: Sandbox | None = None,
) -> CallsVerdict:
    """Run test `units` (Python source, each a test) against `program`.

    prelude: trusted code run in the grader's namespace first (e.g. HumanEval's prompt, whose
        helper functions the tests use). setup: trusted code run after the program's names are
        bound (e.g. MBPP's test_setup_code). expose: the names of the program the tests may use
        (None: every name it defines, except builtins and names the prelude defined).
    split_asserts: record each `assert` of a unit separately (it does not stop the unit), each
        with its own `unit_timeout_s` for the calls it makes.
    total_timeout_s: wall clock of the whole execution (default: calls_budget_s). The grader
        sends its verdict shortly before it; tests it had no time left for fail.
    """
    if not isinstance(units, list) or not all(isinstance(u, str) for u in units):
        raise TypeError("units must be a list of Python source strings")
    sb = sandbox or default_sandbox()
    base = limits or sb.config.limits
    load_t = load_timeout_s if load_timeout_s is not None else unit_timeout_s
    budget = total_timeout_s or calls_budget_s(units, unit_timeout_s, load_t, split_asserts)
    lim = (limits or base).replace(timeout_s=budget) if (limits is None or total_timeout_s) else limits
    nonce = secrets.token_hex(16)
    job = {
        "program": program,
        "prelude": prelude,
        "setup": setup,
        "expose": list(expose) if expose is not None else None,
        "split_asserts": bool(split_asserts),
        "unit_timeout_s": float(unit_timeout_s),
        "load_timeout_s": float(load_t),
        "verdict_by_s": verdict_by_s(lim.timeout_s),
    }
    res = sb.execute("calls", job, {"nonce": nonce, "units": units}, limits=lim)
    v, why = _verdict(res, nonce, "calls")
    if v is None:
        return CallsVerdict(units=[], exec_result=res, error=why)
    raw = v.get("units")
    if not isinstance(raw, list) or len(raw) != len(units):
        return CallsVerdict(units=[], exec_result=res, error="verdict has the wrong number of units")
    out = []
    for u in raw:
        if not isinstance(u, dict):
            return CallsVerdict(units=[], exec_result=res, error="malformed unit in verdict")
        asserts = u.get("asserts")
        out.append(
            UnitResult(
                passed=u.get("ok") is True,
                error=u.get("error"),
                asserts=list(asserts) if isinstance(asserts, list) else None,
                completed=u.get("completed") is True,
                seconds=float(u.get("seconds") or 0.0),
            )
        )
    return CallsVerdict(units=out, exec_result=res, load_error=v.get("load_error"), restarts=int(v.get("restarts") or 0))


def run_io(
    program: str,
    inputs: list[str],
    *,
    case_timeout_s: float = 5.0,
    max_case_output_bytes: int = 1 << 20,
    limits: Limits | None = None,
    sandbox: Sandbox | None = None,
) -> IOVerdict:
    """Run `program` once per stdin input (fresh process each); return each case's stdout.

    Expected outputs never enter the sandbox: the caller compares."""
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise TypeError("inputs must be a list of strings")
    sb = sandbox or default_sandbox()
    base = limits or sb.config.limits
    lim = base if limits is not None else base.replace(timeout_s=io_budget_s(len(inputs), case_timeout_s))
    nonce = secrets.token_hex(16)
    job = {
        "program": program,
        "inputs": inputs,
        "case_timeout_s": float(case_timeout_s),
        "max_output_bytes": int(max_case_output_bytes),
        "verdict_by_s": verdict_by_s(lim.timeout_s),
    }
    res = sb.execute("io", job, {"nonce": nonce}, limits=lim)
    v, why = _verdict(res, nonce, "io")
    if v is None:
        return IOVerdict(cases=[], exec_result=res, error=why)
    raw = v.get("cases")
    if not isinstance(raw, list) or len(raw) != len(inputs):
        return IOVerdict(cases=[], exec_result=res, error="verdict has the wrong number of cases")
    cases = []
    for c in raw:
        if not isinstance(c, dict) or not isinstance(c.get("stdout"), str):
            return IOVerdict(cases=[], exec_result=res, error="malformed case in verdict")
        cases.append(
            CaseRun(status=str(c.get("status")), stdout=c["stdout"], exit_code=c.get("exit_code"), seconds=float(c.get("seconds") or 0.0))
        )
    return IOVerdict(cases=cases, exec_result=res)

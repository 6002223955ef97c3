"""The built-in rewards `custom`, `math` and `code`, each beside its parameters (the YAML
`params:` of a function of that type). `format` and `length` live in reward.shaping,
`reward_model` in reward.rm_client; reward.catalog imports them all.

`math` and `code` are thin: the verifier (reward.math) and the code grader (reward.code with
sandboxes/) do the work and enforce their own deadlines; they are imported when such a
reward is built, so loading the catalog stays cheap.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Literal

from pydantic import Field, field_validator

from qwen25_rl.reward.deadlines import TimedOut, run_with_deadlines
from qwen25_rl.reward.registry import Section, ThreadedRewardFunction, register_reward_factory
from qwen25_rl.reward.types import FunctionOutcome, RewardFunction, RewardOutput, RewardSample
from qwen25_rl.sandboxes.config import SandboxConfig

# ---------------------------------------------------------------------------------------------
# custom


class CustomParams(Section):
    """`custom`: your own function, `path/to/file.py:fn` or `package.module:fn`.

    style: auto (from parameter names) | sample | verl | trl | openrlhf (see reward.plugins).
    isolation: process (default) runs it in child processes killed at the per-sample deadline
    (hard limit, survives infinite loops); thread runs it in the reward worker itself (faster,
    but a hung call only gets marked as timed out, never stopped).
    """

    path: str
    style: Literal["auto", "sample", "verl", "trl", "openrlhf"] = "auto"
    # Name under which `sample.answer` reaches trl-style functions as a column.
    answer_column: str = "answer"
    # trl style: pass prompts/completions as chat messages (TRL's conversational format,
    # what trl.rewards functions expect) instead of plain strings.
    conversational: bool = False
    isolation: Literal["process", "thread"] = "process"
    processes: int = Field(default=1, ge=1)
    # Samples per call for the batch styles (trl, openrlhf); per-sample styles get one.
    batch_size: int = Field(default=16, ge=1)

    @field_validator("path")
    @classmethod
    def _resolvable(cls, v: str) -> str:
        # Existence is checked now and the path made absolute, so workers whose current
        # folder differs (Ray actors, Serve replicas) find the same file. Nothing is imported
        # yet: that happens when the scorer starts (still before the first step). On a
        # multi-node cluster the file must exist at that path on every node (a shared
        # folder), or use the 'package.module:fn' form with the package installed there.
        from qwen25_rl.reward.plugins import resolve_spec

        return resolve_spec(v)


class InlinePluginFunction:
    """A custom reward run inside this process (isolation: thread): soft deadlines only."""

    def __init__(self, p: CustomParams):
        from qwen25_rl.reward.plugins import load_plugin

        self.plugin = load_plugin(p.path, p.style, p.answer_column, p.conversational)
        self.batch_size = p.batch_size if self.plugin.batched else 1
        self.name = self.plugin.name
        # Threads so a call that overruns can be reported as a timeout while it keeps running.
        self._runner = ThreadedRewardFunction(lambda batch: batch, self.name, p.processes)

    def score_batch(self, samples: list[RewardSample], timeout_s: float) -> list[FunctionOutcome]:
        bs = self.batch_size
        chunks = [samples[i : i + bs] for i in range(0, len(samples), bs)]
        jobs = [functools.partial(self.plugin.score, chunk, timeout_s) for chunk in chunks]
        out: list[FunctionOutcome] = []
        for chunk, result in zip(
            chunks, run_with_deadlines(self._runner.pool(), self._runner.concurrency, jobs, [timeout_s * len(c) for c in chunks])
        ):
            if isinstance(result, TimedOut):
                msg = f"custom reward {self.name!r} did not finish within {timeout_s:g} s per sample (isolation: thread, so it still runs)"
                result = [FunctionOutcome.failed("timeout", msg)] * len(chunk)
            out.extend(result)
        return out

    def close(self) -> None:
        self._runner.close()


@register_reward_factory("custom", params=CustomParams)
def build_custom(p: CustomParams) -> RewardFunction:
    """Your own function: 'file.py:fn' or 'package.module:fn', in the sample/verl/trl/openrlhf call style."""
    if p.isolation == "thread":
        return InlinePluginFunction(p)
    from qwen25_rl.reward.isolation import ProcessRewardFunction
    from qwen25_rl.reward.plugins import PluginSpec

    # The first child loads the plugin now; its import or signature error is raised here.
    spec = PluginSpec(p.path, p.style, p.answer_column, p.conversational)
    return ProcessRewardFunction(spec, p.path.rpartition(":")[2], processes=p.processes, batch_size=p.batch_size)


# ---------------------------------------------------------------------------------------------
# math


class MathParams(Section):
    """`math`: verify the response's final answer against the gold answer (reward.math).

    1.0 when equivalent, 0.0 when not. The per-sample deadline is the function's `timeout_s`;
    verification runs in `processes` worker processes that are killed at that deadline and
    replaced (sympy can run for minutes on hostile input), and an answer that hits it scores 0
    (see MathRewardFunction for why).
    """

    # "the last number in the text" as a last-resort extraction (opt-in: it rewards guessing).
    fallback_last_number: bool = False
    # Verification processes per reward worker (MathVerifierPool num_workers).
    processes: int = Field(default=1, ge=1)
    # Address-space cap of one verification process (MathVerifierPool memory_mb); null: none.
    memory_mb: int | None = Field(default=2048, gt=0)


class MathRewardFunction:
    """reward.math's MathVerifierPool: fast exact/numeric paths in this process, sympy in
    worker processes killed at the per-sample deadline.

    An answer that exhausts the deadline is wrong (0.0, details say "timeout"): otherwise a
    policy could turn any answer into a failed sample, and under `drop_group` remove its whole
    group's signal, just by making it slow to check. A verifier error (a bad gold answer) is a
    failed outcome for the pool's policy, never a silent 0."""

    def __init__(self, p: MathParams):
        from qwen25_rl.reward.math import MathVerifierPool

        self.pool = MathVerifierPool(p.processes, memory_mb=p.memory_mb, fallback_last_number=p.fallback_last_number)

    def score_batch(self, samples: list[RewardSample], timeout_s: float) -> list[FunctionOutcome]:
        from qwen25_rl.reward.math import MathStatus

        # The pool's deadline is an attribute it reads per comparison; the function's
        # timeout_s (or pool.sample_timeout_s) is the one that applies.
        self.pool.timeout_s = float(timeout_s)
        out: list[FunctionOutcome | None] = [None] * len(samples)
        idx, golds = [], []
        for i, s in enumerate(samples):
            gold = s.answer
            if isinstance(gold, (int, float)) and not isinstance(gold, bool):
                gold = str(gold)  # a JSON number from a dataset column
            if not isinstance(gold, str) or not gold.strip():
                out[i] = FunctionOutcome.failed(
                    "error", f"math reward needs the gold answer as text in sample.answer, got {type(gold).__name__} {str(gold)[:80]!r}"
                )
            else:
                idx.append(i)
                golds.append(gold)
        scores = self.pool.score_batch([samples[i].response for i in idx], golds)
        for i, sc in zip(idx, scores):
            details = {"extracted": sc.extracted, "source": sc.source, "path": sc.path, "status": sc.status.value}
            if sc.detail:
                details["detail"] = sc.detail
            if sc.status is MathStatus.ERROR:
                out[i] = FunctionOutcome(None, "error", f"math verification: {sc.detail}", details)
            else:
                out[i] = FunctionOutcome(1.0 if sc.correct else 0.0, "ok", None, details)
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.pool.close()


@register_reward_factory("math", params=MathParams)
def build_math(p: MathParams) -> RewardFunction:
    """1.0 when the final answer equals the gold answer (math-verify + fast paths), else 0.0."""
    return MathRewardFunction(p)


# ---------------------------------------------------------------------------------------------
# code


class CodeParams(Section):
    """`code`: extract the program from the response and run the sample's tests against it in
    the sandbox (reward.code.score_code).

    `answer` of a sample: a HumanEval problem (prompt, test, entry_point), an MBPP row
    (test_list, test_setup_code), an APPS dict (inputs, outputs, fn_name), a list of
    stdin/stdout cases `{"input", "output"}`, a list of assert lines, or any of these as a
    JSON string. The reward is the fraction of tests passed (`mode: fraction`) or 1/0
    (`mode: all`). A program that exceeds a test's limit fails that test. Each sample's
    deadline is the sandbox's own budget for its tests (reward.code.max_grading_seconds: every
    test at its limit, plus start-up and clean-up), so a slow program is graded 0, never a
    reward timeout; the function's `timeout_s` can only lengthen it.
    """

    mode: Literal["fraction", "all"] = "fraction"
    # Time limit of one test (reward.code's timeout_s): a program that exceeds it fails that test.
    per_test_timeout_s: float = Field(default=5.0, gt=0)
    # Samples graded at once per reward worker (each holds a sandbox slot while it runs).
    concurrency: int = Field(default=4, ge=1)
    # The sandbox's own settings (sandboxes.config.SandboxConfig and its Limits), validated from
    # their one definition: unknown keys and out-of-range values are errors naming the key.
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)


def _code_tests(s: RewardSample) -> Any:
    tests = s.answer
    if isinstance(tests, str) and tests.lstrip()[:1] in ("[", "{"):
        tests = json.loads(tests)  # datasets often store the tests as a JSON string
    return tests


def code_sample_seconds(p: CodeParams, s: RewardSample, timeout_s: float) -> float:
    """A code sample's deadline: never shorter than the sandbox's own limit for its tests, so a
    slow program is graded (0 on the tests it ran out of time on) and never becomes a reward
    timeout that drops its group. The configured deadline can only lengthen it."""
    from qwen25_rl.reward.code import max_grading_seconds

    try:
        return max(timeout_s, max_grading_seconds(_code_tests(s), mode=p.mode, timeout_s=p.per_test_timeout_s))
    except (ValueError, TypeError):  # malformed tests: reported as an error straight away
        return timeout_s


class CodeRewardFunction:
    """reward.code's score_code in the sandbox (sandboxes/), `concurrency` samples at a time.

    The sandbox enforces the time limits of each test run itself (it kills the process tree)
    and the grader sends its verdict before the sandbox's wall clock runs out, so every sample
    comes back graded: a slow or failing program scores 0 for the tests it failed. Each
    sample's deadline is derived from that sandbox budget (code_sample_seconds). Only a sandbox
    that could not run the program, or malformed tests, are errors (the policy decides).
    """

    def __init__(self, p: CodeParams):
        from qwen25_rl.sandboxes import Sandbox

        self.p = p
        # Created now: a host without the required isolation layers fails at start-up
        # (IsolationUnavailable names them), not at the first code sample.
        self.sandbox = Sandbox(p.sandbox)
        # No more threads than sandbox slots: a sample waiting for a slot would eat into its
        # deadline, which only covers the sandbox's own limit.
        self._runner = ThreadedRewardFunction(self._score_one, "code", min(p.concurrency, self.sandbox.slots))

    def _score_one(self, s: RewardSample) -> Any:
        from qwen25_rl.reward.code import score_code

        sc = score_code(s.response, _code_tests(s), mode=self.p.mode, timeout_s=self.p.per_test_timeout_s, sandbox=self.sandbox)
        details = {"status": sc.status, "passed": sc.passed, "total": sc.total, "kind": sc.kind, "exec_status": sc.exec_status}
        if sc.failed_to_grade:
            raise RuntimeError(f"sandbox could not grade the program: {sc.error or sc.exec_status}")
        return RewardOutput(sc.score, details)

    def score_batch(self, samples: list[RewardSample], timeout_s: float) -> list[FunctionOutcome]:
        seconds = [code_sample_seconds(self.p, s, timeout_s) for s in samples]
        return self._runner.score_batch(samples, timeout_s, seconds)

    def close(self) -> None:
        self._runner.close()
        self.sandbox.close()


@register_reward_factory("code", params=CodeParams, max_sample_seconds=code_sample_seconds)
def build_code(p: CodeParams) -> RewardFunction:
    """Fraction (or all-or-nothing) of the sample's tests the response's code passes in the sandbox."""
    return CodeRewardFunction(p)

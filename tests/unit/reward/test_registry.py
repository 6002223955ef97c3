"""The reward registry, the reward config, combination of weighted terms and failure policies."""

from __future__ import annotations

import math
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from bounds import SLACK_S

from qwen25_rl.reward.builtins import MathParams
from qwen25_rl.reward.catalog import get_reward
from qwen25_rl.reward.config import RewardConfig
from qwen25_rl.reward.registry import REWARDS, ThreadedRewardFunction, register_reward
from qwen25_rl.reward.scorer import RewardFailureError, RewardScorer, apply_failure_policy, combine, summarize
from qwen25_rl.reward.types import FunctionOutcome, RewardOutput, RewardResult, RewardSample, coerce_output


@pytest.fixture
def scratch_reward():
    """Registers test rewards and removes them afterwards."""
    added: list[str] = []

    def add(name, **kw):
        def deco(fn):
            register_reward(name, **kw)(fn)
            added.append(name)
            return fn

        return deco

    yield add
    for name in added:
        REWARDS.pop(name, None)


def cfg_of(*functions, **pool) -> RewardConfig:
    return RewardConfig.model_validate({"functions": list(functions), "pool": pool})


# ---------------------------------------------------------------------------------------------
# registry


def test_builtin_rewards_are_registered():
    for name in ("math", "code", "format", "length", "reward_model", "custom"):
        assert get_reward(name).name == name


def test_unknown_reward_suggests_the_close_name():
    with pytest.raises(KeyError, match=r"unknown reward 'lenght'; did you mean 'length'\?"):
        get_reward("lenght")


def test_one_decorated_function_adds_a_reward_with_params(scratch_reward):
    @scratch_reward("test_contains")
    def contains(sample, *, word: str, bonus: float = 1.0):
        return bonus if word in sample.response else 0.0

    cfg = cfg_of({"type": "test_contains", "params": {"word": "cat"}})
    assert cfg.functions[0].params == {"word": "cat", "bonus": 1.0}  # defaults filled in
    with RewardScorer(cfg) as scorer:
        assert [r.reward for r in scorer.score([RewardSample("a cat"), RewardSample("a dog")])] == [1.0, 0.0]


def test_bounded_reward_runs_inline_and_its_exceptions_are_errors(scratch_reward):
    from qwen25_rl.reward.registry import InlineRewardFunction

    @scratch_reward("test_bounded", bounded=True)
    def picky(sample):
        if not sample.response:
            raise ValueError("empty response")
        return 1.0

    cfg = cfg_of({"type": "test_bounded"})
    with RewardScorer(cfg) as scorer:
        assert isinstance(scorer.functions[0][1], InlineRewardFunction)
        ok, bad = scorer.score([RewardSample("x"), RewardSample("")], on_failure="zero")
    assert (ok.reward, ok.status) == (1.0, "ok")
    assert (bad.reward, bad.status) == (0.0, "error") and "ValueError: empty response" in bad.error


def test_registered_params_are_validated_with_their_types(scratch_reward):
    @scratch_reward("test_typed")
    def typed(sample, *, n: int = 1):
        return n

    with pytest.raises(ValueError, match=r"reward 'test_typed': params\.n: Input should be a valid integer"):
        cfg_of({"type": "test_typed", "params": {"n": "many"}})
    with pytest.raises(ValueError, match=r"unknown key 'params\.m'"):
        cfg_of({"type": "test_typed", "params": {"m": 2}})


def test_reward_params_must_be_keyword_only():
    with pytest.raises(TypeError, match="must be keyword-only"):

        @register_reward("test_positional")
        def bad(sample, threshold=0.5):
            return 0.0


def test_a_name_cannot_be_registered_twice(scratch_reward):
    @scratch_reward("test_twice")
    def first(sample):
        return 0.0

    with pytest.raises(ValueError, match="already registered"):

        @register_reward("test_twice")
        def second(sample):
            return 1.0


def test_config_imports_register_rewards_from_user_modules(tmp_path, monkeypatch):
    (tmp_path / "my_rewards_mod.py").write_text(
        textwrap.dedent("""
        from qwen25_rl.reward.registry import register_reward

        @register_reward("test_from_import")
        def exclaim(sample, *, mark: str = "!"):
            return float(sample.response.endswith(mark))
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        cfg = RewardConfig.model_validate({"imports": ["my_rewards_mod"], "functions": [{"type": "test_from_import"}]})
        with RewardScorer(cfg) as scorer:
            assert scorer.score([RewardSample("hi!")])[0].reward == 1.0
    finally:
        REWARDS.pop("test_from_import", None)
        sys.modules.pop("my_rewards_mod", None)


def test_config_import_failure_names_the_module():
    with pytest.raises(ValueError, match=r"imports: cannot import 'no_such_rewards_mod'"):
        RewardConfig.model_validate({"imports": ["no_such_rewards_mod"]})


def test_duplicate_function_labels_are_rejected():
    with pytest.raises(ValueError, match="name 'format' is used twice"):
        cfg_of({"type": "format"}, {"type": "format", "weight": 0.5})


def test_math_params_mirror_the_verifier_pool_arguments():
    import inspect

    from qwen25_rl.reward.math_pool import MathVerifierPool

    sig = inspect.signature(MathVerifierPool.__init__).parameters
    assert MathParams().memory_mb == sig["memory_mb"].default
    assert MathParams().fallback_last_number == sig["fallback_last_number"].default


def test_code_params_validate_the_sandbox_settings_from_their_one_definition():
    from qwen25_rl.reward.builtins import CodeParams
    from qwen25_rl.sandboxes.config import Limits, SandboxConfig

    p = CodeParams.model_validate({"sandbox": {"slots": 3, "extra_ro_paths": ["/opt/libs"], "limits": {"timeout_s": 4, "memory_mb": 512}}})
    assert p.sandbox == SandboxConfig(slots=3, extra_ro_paths=("/opt/libs",), limits=Limits(timeout_s=4, memory_mb=512))
    assert CodeParams().sandbox == SandboxConfig()
    with pytest.raises(ValueError, match="slotz"):
        CodeParams.model_validate({"sandbox": {"slotz": 3}})
    with pytest.raises(ValueError, match="memory_mb=32"):  # the dataclass's own check
        CodeParams.model_validate({"sandbox": {"limits": {"memory_mb": 32}}})
    with pytest.raises(ValueError, match="cgroups"):
        CodeParams.model_validate({"sandbox": {"cgroups": "sometimes"}})


# ---------------------------------------------------------------------------------------------
# what a reward may return


@pytest.mark.parametrize(
    "raw,value,status",
    [
        (1, 1.0, "ok"),
        (True, 1.0, "ok"),
        (np.float32(0.25), 0.25, "ok"),
        (RewardOutput(0.5, {"why": "x"}), 0.5, "ok"),
        ({"score": 0.75, "acc": True}, 0.75, "ok"),
        (None, None, "skipped"),
        (math.nan, None, "error"),
        (math.inf, None, "error"),
        ("1.0", None, "error"),
        ({"value": 1.0}, None, "error"),
    ],
)
def test_coerce_output(raw, value, status):
    o = coerce_output(raw, "r")
    assert (o.value, o.status) == (value, status)


def test_threaded_function_reports_a_slow_call_as_timeout():
    release = threading.Event()  # the slow call waits up to 30 s, or until the test is done
    fn = ThreadedRewardFunction(lambda s: release.wait(30) if s.response == "slow" else 1.0, "t", concurrency=2)
    try:
        t = time.perf_counter()
        out = fn.score_batch([RewardSample("fast"), RewardSample("slow")], timeout_s=0.3)
        assert [o.status for o in out] == ["ok", "timeout"]
        assert time.perf_counter() - t < 0.3 + SLACK_S  # not the 30 s of the call
    finally:
        release.set()
        fn.close()


# ---------------------------------------------------------------------------------------------
# combining terms


def test_total_is_the_weighted_sum_of_applicable_terms():
    cfg = cfg_of(
        {"type": "format", "weight": 0.5}, {"type": "length", "weight": 2.0, "params": {"max_length": 10, "buffer": 4, "unit": "chars"}}
    )
    with RewardScorer(cfg) as scorer:
        r = scorer.score([RewardSample("\\boxed{12}")])[0]  # 10 chars: length -1.0, format 1.0
    assert r.breakdown == {"format": 1.0, "length": -1.0}
    assert r.reward == pytest.approx(0.5 * 1.0 + 2.0 * -1.0)


def test_data_sources_route_terms_to_samples():
    cfg = cfg_of(
        {"type": "format", "name": "boxed", "data_sources": ["gsm8k"]},
        {"type": "format", "name": "think", "params": {"style": "think"}, "data_sources": ["chat"]},
    )
    with RewardScorer(cfg) as scorer:
        a, b = scorer.score([RewardSample("\\boxed{1}", data_source="gsm8k"), RewardSample("<think>x</think> y", data_source="chat")])
    assert a.breakdown == {"boxed": 1.0} and b.breakdown == {"think": 1.0}


def test_sample_that_no_term_applies_to_is_an_error_not_zero():
    cfg = cfg_of({"type": "format", "data_sources": ["gsm8k"]})
    with RewardScorer(cfg) as scorer:
        r = scorer.score([RewardSample("x", data_source="mbpp")], on_failure="drop_group")[0]
    assert r.status == "error" and "no reward function applies to data_source 'mbpp'" in r.error


def test_status_is_the_worst_outcome():
    cfg = cfg_of({"type": "format", "name": "a"}, {"type": "format", "name": "b"}, {"type": "format", "name": "c"})
    outcomes = {"a": FunctionOutcome(1.0), "b": FunctionOutcome.failed("error", "e"), "c": FunctionOutcome.failed("timeout", "t")}
    r = combine(RewardSample("x"), outcomes, cfg)
    assert (r.status, r.reward, r.failed_functions) == ("timeout", None, ["b", "c"])
    assert r.error == "b: e; c: t"


# ---------------------------------------------------------------------------------------------
# failure policies


def _failed_batch():
    cfg = cfg_of({"type": "format", "name": "a", "weight": 2.0}, {"type": "format", "name": "b"})
    samples = [RewardSample("x", group_id=g) for g in (0, 0, 1, 1, None, None)]
    ok = {"a": FunctionOutcome(1.0), "b": FunctionOutcome(1.0)}
    bad = {"a": FunctionOutcome(1.0), "b": FunctionOutcome.failed("error", "boom")}
    results = [combine(s, o, cfg) for s, o in zip(samples, [ok, bad, ok, ok, bad, ok])]
    return cfg, samples, results


def test_drop_group_drops_every_sample_of_a_failed_group_only():
    cfg, samples, results = _failed_batch()
    out = apply_failure_policy(samples, results, "drop_group", cfg)
    assert [r.dropped for r in out] == [True, True, False, False, True, False]
    assert [r.reward for r in out] == [None, None, 3.0, 3.0, None, 3.0]


def test_zero_counts_the_failed_term_as_zero_and_keeps_the_status():
    cfg, samples, results = _failed_batch()
    out = apply_failure_policy(samples, results, "zero", cfg)
    assert [r.reward for r in out] == [3.0, 2.0, 3.0, 3.0, 2.0, 3.0]
    assert out[1].status == "error"


def test_fail_policy_raises_with_examples():
    cfg, samples, results = _failed_batch()
    with pytest.raises(RewardFailureError, match=r"(?s)2 error.*sample 1 \(group 0\) error: b: boom") as e:
        apply_failure_policy(samples, results, "fail", cfg)
    assert e.value.stats.num_error == 2


def test_summary_counts_per_function_and_quotes_first_examples():
    cfg, samples, results = _failed_batch()
    apply_failure_policy(samples, results, "drop_group", cfg)
    st = summarize(samples, results, cfg, max_examples=1)
    assert (st.num_samples, st.num_ok, st.num_error, st.num_dropped, st.num_groups_dropped) == (6, 4, 2, 3, 2)
    assert st.functions["b"] == {"mean": 1.0, "ok": 4, "error": 2, "timeout": 0, "skipped": 0}
    assert len(st.examples) == 1 and st.examples[0]["functions"] == ["b"]
    m = st.as_metrics()
    assert m["reward/error"] == 2 and m["reward/b/error"] == 2 and m["reward/mean"] == 3.0


def test_result_round_trips_through_a_dict():
    r = RewardResult(1.5, {"a": 1.5}, "ok", None, {"a": {"x": 1}}, False, {"a": "ok"})
    assert RewardResult.from_dict(r.to_dict()) == r


def test_sample_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"samples\[3\]: unknown key\(s\) \['completion'\]"):
        RewardSample.from_dict({"response": "x", "completion": "y"}, "samples[3]")


# ---------------------------------------------------------------------------------------------
# math through the registry (reward.math does the verifying)


def test_math_reward_scores_verdicts_and_counts_an_answer_that_exhausts_the_deadline_as_wrong():
    cfg = cfg_of({"type": "math", "timeout_s": 1.0})
    samples = [
        RewardSample(r"so \boxed{\frac{1}{2}}", answer="0.5"),
        RewardSample("#### 7", answer=8),
        RewardSample(r"\boxed{9^{9^{9^{9}}}}", answer="3"),  # sympy would run for hours
        RewardSample("x", answer=None),
    ]
    with RewardScorer(cfg) as scorer:
        # Warm up the verifier's processes (their cold start imports sympy: seconds on a busy
        # machine), so the timing below is about the deadline, not the start-up.
        scorer.score([RewardSample(r"\boxed{\sqrt{8}}", answer=r"2\sqrt{2}")])
        t = time.perf_counter()
        out = scorer.score(samples, on_failure="drop_group")
        assert time.perf_counter() - t < 1.0 + SLACK_S  # a 1 s deadline, not the hours sympy would take
    # A slow answer is wrong, not a failed sample: its group keeps its reward signal.
    assert [r.breakdown["math"] for r in out] == [1.0, 0.0, 0.0, None]
    assert [r.status for r in out] == ["ok", "ok", "ok", "error"]
    assert [r.dropped for r in out] == [False, False, False, True]
    assert out[0].details["math"]["source"] == "boxed"
    assert out[2].details["math"]["status"] == "timeout" and "exceeded" in out[2].details["math"]["detail"]
    assert "gold answer" in out[3].error


# ---------------------------------------------------------------------------------------------
# code through the registry (reward.code + sandboxes/ do the grading)


def _humaneval(eval_data_dir, n: int) -> list[dict]:
    import json

    with open(eval_data_dir / "humaneval.jsonl") as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


def test_code_reward_grades_humaneval_in_the_sandbox(eval_data_dir):
    problems = _humaneval(eval_data_dir, 2)
    cfg = cfg_of({"type": "code", "timeout_s": 60, "params": {"mode": "all"}})
    samples = []
    for p in problems:
        samples.append(RewardSample(f"```python\n{p['prompt']}{p['canonical_solution']}\n```", answer=p))
        samples.append(RewardSample(f"```python\n{p['prompt']}    return None\n```", answer=p))
        # Exiting with status 0 before the tests run must not earn the reward.
        samples.append(RewardSample(f"```python\nimport sys\n{p['prompt']}{p['canonical_solution']}\nsys.exit(0)\n```", answer=p))
    with RewardScorer(cfg) as scorer:
        out = scorer.score(samples)
    assert [r.reward for r in out] == [1.0, 0.0, 0.0] * len(problems)
    assert out[0].details["code"]["status"] == "graded"


def test_code_reward_reads_stdin_cases_given_as_a_json_string():
    cfg = cfg_of({"type": "code", "timeout_s": 60})
    cases = '[{"input": "3\\n", "output": "6\\n"}, {"input": "5\\n", "output": "11\\n"}]'
    with RewardScorer(cfg) as scorer:
        r = scorer.score([RewardSample("```python\nprint(int(input()) * 2)\n```", answer=cases)])[0]
    assert (r.reward, r.details["code"]["passed"], r.details["code"]["total"]) == (0.5, 1, 2)


def test_code_reward_with_malformed_tests_is_an_error_not_zero():
    cfg = cfg_of({"type": "code"})
    with RewardScorer(cfg) as scorer:
        r = scorer.score([RewardSample("print(1)", answer={"no": "tests"})], on_failure="drop_group")[0]
    assert r.status == "error" and "tests must be" in r.error and r.dropped


def test_a_slow_wrong_program_scores_zero_graded_and_its_group_is_kept():
    """Each call takes just under the per-test limit: the sandbox's budget for three tests is
    longer than the configured per-sample deadline (2 s), which must not cut it short."""
    cfg = cfg_of({"type": "code", "timeout_s": 2.0, "params": {"per_test_timeout_s": 1.0}}, on_failure="drop_group")
    tests = ["assert double(1) == 2", "assert double(2) == 4", "assert double(3) == 6"]
    slow = "```python\nimport time\ndef double(x):\n    time.sleep(0.8)\n    return 0\n```"
    hangs = "```python\ndef double(x):\n    while True:\n        pass\n```"
    right = "```python\ndef double(x):\n    return 2 * x\n```"
    samples = [RewardSample(r, answer=tests, group_id=0) for r in (right, slow, hangs)]
    with RewardScorer(cfg) as scorer:
        t = time.perf_counter()
        out = scorer.score(samples)
        elapsed = time.perf_counter() - t
    assert [(r.reward, r.status, r.dropped) for r in out] == [(1.0, "ok", False), (0.0, "ok", False), (0.0, "ok", False)]
    assert [r.details["code"]["status"] for r in out] == ["graded"] * 3
    assert elapsed > 2.0  # the slow one really ran past the configured deadline


def test_the_code_reward_deadline_follows_the_sandbox_budget_of_each_sample():
    from qwen25_rl.reward.builtins import CodeParams, code_sample_seconds
    from qwen25_rl.reward.code import max_grading_seconds

    p = CodeParams(per_test_timeout_s=5.0)
    three, thirty = ["assert f(1) == 1"] * 3, ["assert f(1) == 1"] * 30
    assert code_sample_seconds(p, RewardSample("", answer=three), 10.0) == max_grading_seconds(three, timeout_s=5.0) > 10.0
    assert code_sample_seconds(p, RewardSample("", answer=thirty), 10.0) > code_sample_seconds(p, RewardSample("", answer=three), 10.0)
    assert code_sample_seconds(p, RewardSample("", answer=three), 1000.0) == 1000.0  # config can lengthen it
    assert code_sample_seconds(p, RewardSample("", answer={"no": "tests"}), 10.0) == 10.0  # an error at once

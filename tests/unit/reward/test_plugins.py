"""Custom reward plug-ins: loading by path or module, the four call styles, start-up errors,
and the process isolation that enforces hard per-sample deadlines."""

from __future__ import annotations

import os
import textwrap
import time

import psutil
import pytest
from bounds import SLACK_S, max_overlap

from qwen25_rl.reward.config import RewardConfig
from qwen25_rl.reward.isolation import ProcessRewardFunction
from qwen25_rl.reward.plugins import PluginError, PluginSpec, detect_style, load_callable, load_plugin
from qwen25_rl.reward.scorer import RewardScorer, RewardSetupError
from qwen25_rl.reward.types import RewardSample


def write(tmp_path, name: str, code: str) -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(code))
    return str(p)


SAMPLES = [
    RewardSample(response="4", prompt="2+2?", answer="4", data_source="arith", extra={"difficulty": 1}),
    RewardSample(response="5", prompt="2+3?", answer="6", data_source="arith", extra={"difficulty": 2}),
]


# ---------------------------------------------------------------------------------------------
# finding the function


def test_load_by_file_path(tmp_path):
    path = write(tmp_path, "r.py", "def f(sample):\n    return 1.0\n")
    assert load_callable(f"{path}:f")(None) == 1.0


def test_load_by_relative_file_path(tmp_path, monkeypatch):
    write(tmp_path, "rel.py", "def f(sample):\n    return 2.0\n")
    monkeypatch.chdir(tmp_path)
    assert load_callable("rel.py:f")(None) == 2.0


def test_load_by_module_name():
    fn = load_callable("qwen25_rl.reward.shaping:overlong_penalty")
    assert fn(90, 100, 20) == -0.5


def test_missing_file_names_the_resolved_path(tmp_path):
    with pytest.raises(PluginError, match=r"file .*nope\.py not found"):
        load_callable(f"{tmp_path}/nope.py:f")


def test_missing_function_lists_the_functions_there(tmp_path):
    path = write(tmp_path, "r2.py", "def score(sample):\n    return 1\ndef helper(x):\n    return x\n")
    with pytest.raises(PluginError, match=r"no attribute 'scor'.*helper, score"):
        load_callable(f"{path}:scor")


def test_file_that_fails_to_import_reports_the_exception(tmp_path):
    path = write(tmp_path, "r3.py", "import not_a_real_module_xyz\ndef f(s):\n    return 0\n")
    with pytest.raises(PluginError, match=r"importing custom reward file .*r3\.py failed: ModuleNotFoundError.*not_a_real_module_xyz"):
        load_callable(f"{path}:f")


def test_unknown_module_says_so():
    with pytest.raises(PluginError, match=r"module 'no_such_pkg_xyz\.rewards' not found"):
        load_callable("no_such_pkg_xyz.rewards:f")


def test_spec_without_function_name_is_rejected():
    with pytest.raises(PluginError, match="expected 'path/to/file.py:function'"):
        load_callable("rewards.py")


def test_non_callable_is_rejected(tmp_path):
    path = write(tmp_path, "r4.py", "THRESHOLD = 3\n")
    with pytest.raises(PluginError, match="'THRESHOLD' is a int, not a function"):
        load_callable(f"{path}:THRESHOLD")


# ---------------------------------------------------------------------------------------------
# call styles


def test_detect_style_from_parameter_names():
    def verl(data_source, solution_str, ground_truth, extra_info=None): ...
    def trl(prompts, completions, **kwargs): ...
    def trl_short(completions, **kwargs): ...
    def orlhf(queries, prompts, labels): ...
    def ours(sample): ...

    assert [detect_style(f) for f in (verl, trl, trl_short, orlhf, ours)] == ["verl", "trl", "trl", "openrlhf", "sample"]


def test_undetectable_signature_fails_at_load_with_the_styles_listed(tmp_path):
    path = write(tmp_path, "r5.py", "def f(a, b, c):\n    return 0\n")
    with pytest.raises(PluginError, match=r"cannot tell the call style of f\(a, b, c\).*verl: compute_score"):
        load_plugin(f"{path}:f")


def test_explicit_style_that_cannot_bind_fails_at_load(tmp_path):
    path = write(tmp_path, "r6.py", "def f(sample):\n    return 0\n")
    with pytest.raises(PluginError, match="cannot be called in the 'openrlhf' style"):
        load_plugin(f"{path}:f", style="openrlhf")


def test_verl_style_gets_data_source_solution_ground_truth_and_extra_info(tmp_path):
    path = write(
        tmp_path,
        "v.py",
        """
        def compute_score(data_source, solution_str, ground_truth, extra_info=None):
            assert data_source == "arith" and "difficulty" in extra_info
            return {"score": float(solution_str == ground_truth), "acc": solution_str == ground_truth}
    """,
    )
    out = load_plugin(f"{path}:compute_score").score(SAMPLES)
    assert [o.value for o in out] == [1.0, 0.0]
    assert out[0].details == {"acc": True}


def test_old_verl_signature_without_data_source_is_supported(tmp_path):
    path = write(tmp_path, "v2.py", "def compute_score(solution_str, ground_truth):\n    return float(solution_str == ground_truth)\n")
    assert [o.value for o in load_plugin(f"{path}:compute_score").score(SAMPLES)] == [1.0, 0.0]


def test_trl_style_gets_columns_and_answer_under_answer_column(tmp_path):
    path = write(
        tmp_path,
        "t.py",
        """
        def reward(prompts, completions, solution, difficulty, **kwargs):
            assert prompts == ["2+2?", "2+3?"] and difficulty == [1, 2]
            return [float(c == s) * d for c, s, d in zip(completions, solution, difficulty)]
    """,
    )
    out = load_plugin(f"{path}:reward", answer_column="solution").score(SAMPLES)
    assert [o.value for o in out] == [1.0, 0.0]


def test_trl_style_none_means_not_applicable(tmp_path):
    path = write(tmp_path, "t2.py", "def r(completions, **kw):\n    return [None, 1.0]\n")
    out = load_plugin(f"{path}:r").score(SAMPLES)
    assert [o.status for o in out] == ["skipped", "ok"]


def test_trl_style_missing_column_names_it(tmp_path):
    path = write(tmp_path, "t3.py", "def r(prompts, completions, rubric):\n    return [0.0] * len(completions)\n")
    out = load_plugin(f"{path}:r").score(SAMPLES)
    assert out[0].status == "error" and "needs column(s) ['rubric']" in out[0].error


def test_trl_style_wrong_number_of_values_is_an_error(tmp_path):
    path = write(tmp_path, "t4.py", "def r(completions, **kw):\n    return [1.0]\n")
    out = load_plugin(f"{path}:r").score(SAMPLES)
    assert [o.status for o in out] == ["error", "error"] and "returned 1 values for 2 samples" in out[0].error


def test_trl_library_reward_runs_in_conversational_format():
    # A real third-party reward: TRL's own accuracy_reward (math-verify against `solution`).
    plugin = load_plugin("trl.rewards:accuracy_reward", answer_column="solution", conversational=True)
    samples = [RewardSample(response=r"so \boxed{\frac{1}{2}}", answer=r"$\frac{1}{2}$"), RewardSample(response=r"\boxed{3}", answer="$4$")]
    assert [o.value for o in plugin.score(samples)] == [1.0, 0.0]


def test_openrlhf_style_gets_queries_prompts_labels_and_may_return_an_array(tmp_path):
    # OpenRLHF functions return a torch tensor; anything with .tolist() is read the same way
    # (numpy here, to keep torch's import time out of a unit test).
    path = write(
        tmp_path,
        "o.py",
        """
        import numpy as np
        def reward_func(queries, prompts, labels):
            assert queries == [p + r for p, r in zip(prompts, ["4", "5"])]
            return np.array([float(q.endswith(l)) for q, l in zip(queries, labels)])
    """,
    )
    assert [o.value for o in load_plugin(f"{path}:reward_func").score(SAMPLES)] == [1.0, 0.0]


def test_openrlhf_style_dict_with_rewards(tmp_path):
    path = write(tmp_path, "o2.py", "def reward_func(queries, prompts, labels):\n    return {'rewards': [0.5, 0.25], 'scores': [1, 0]}\n")
    assert [o.value for o in load_plugin(f"{path}:reward_func").score(SAMPLES)] == [0.5, 0.25]


def test_async_sample_style_runs_the_batch_concurrently(tmp_path):
    path = write(
        tmp_path,
        "a.py",
        """
        import asyncio, time
        async def f(sample):
            start = time.time()
            await asyncio.sleep(0.3)
            return {"score": len(sample.response), "start": start, "end": time.time()}
    """,
    )
    out = load_plugin(f"{path}:f").score(SAMPLES * 4)
    assert [o.value for o in out] == [1.0] * 8
    assert max_overlap([(o.details["start"], o.details["end"]) for o in out]) == 8


def test_async_timeout_is_reported_per_sample(tmp_path):
    path = write(
        tmp_path,
        "a2.py",
        """
        import asyncio
        async def f(sample):
            await asyncio.sleep(5 if sample.response == "5" else 0)
            return 1.0
    """,
    )
    out = load_plugin(f"{path}:f").score(SAMPLES, timeout_s=0.3)
    assert [o.status for o in out] == ["ok", "timeout"]


def test_exception_becomes_an_error_with_message_and_location(tmp_path):
    path = write(tmp_path, "e.py", "def f(sample):\n    raise KeyError('gold')\n")
    out = load_plugin(f"{path}:f").score(SAMPLES[:1])
    assert out[0].status == "error" and "KeyError" in out[0].error and "e.py:2" in out[0].error


@pytest.mark.parametrize("bad", ["'x'", "float('nan')", "[1.0]", "{'value': 1}"])
def test_non_number_return_is_an_error_not_zero(tmp_path, bad):
    path = write(tmp_path, "n.py", f"def f(sample):\n    return {bad}\n")
    out = load_plugin(f"{path}:f").score(SAMPLES[:1])
    assert out[0].status == "error" and out[0].value is None


# ---------------------------------------------------------------------------------------------
# process isolation: hard deadlines


HOSTILE = """
import os, time
def f(sample):
    r = sample.response
    if r == "loop":
        while True:
            pass
    if r == "bigint":
        return float(len(str(10 ** 10 ** 7)))  # one C call that no timeout signal interrupts
    if r == "exit":
        os._exit(7)
    if r == "spawn":
        import subprocess
        subprocess.Popen(["sleep", "300"])
        while True:
            time.sleep(1)
    print("noise on stdout must not break the protocol")
    return float(len(r))
"""


def test_process_isolation_kills_an_infinite_loop_and_keeps_scoring(tmp_path):
    path = write(tmp_path, "h.py", HOSTILE)
    fn = ProcessRewardFunction(PluginSpec(f"{path}:f"), "f")
    try:
        t = time.perf_counter()
        out = fn.score_batch([RewardSample(response=r) for r in ["ab", "loop", "abc"]], timeout_s=1.0)
        assert [o.status for o in out] == ["ok", "timeout", "ok"]
        assert [out[0].value, out[2].value] == [2.0, 3.0]
        assert time.perf_counter() - t < 1.0 + SLACK_S
        assert fn.restarts == 1
    finally:
        fn.close()


def test_process_isolation_deadline_holds_inside_a_long_c_call(tmp_path):
    path = write(tmp_path, "h2.py", HOSTILE)
    fn = ProcessRewardFunction(PluginSpec(f"{path}:f"), "f")
    try:
        t = time.perf_counter()
        out = fn.score_batch([RewardSample(response="bigint")], timeout_s=0.5)
        assert out[0].status == "timeout"
        assert time.perf_counter() - t < 0.5 + SLACK_S
    finally:
        fn.close()


def test_process_isolation_reports_a_dead_child_as_error_and_replaces_it(tmp_path):
    path = write(tmp_path, "h3.py", HOSTILE)
    fn = ProcessRewardFunction(PluginSpec(f"{path}:f"), "f")
    try:
        out = fn.score_batch([RewardSample(response=r) for r in ["exit", "xyz"]], timeout_s=5)
        assert out[0].status == "error" and "exit code 7" in out[0].error
        assert (out[1].status, out[1].value) == ("ok", 3.0)
    finally:
        fn.close()


def test_process_isolation_kills_what_the_plugin_started(tmp_path):
    path = write(tmp_path, "h4.py", HOSTILE)
    fn = ProcessRewardFunction(PluginSpec(f"{path}:f"), "f")
    before = set(psutil.pids())
    try:
        out = fn.score_batch([RewardSample(response="spawn")], timeout_s=1.0)
        assert out[0].status == "timeout"
        time.sleep(0.3)
        leaked = [p for p in psutil.process_iter(["pid", "cmdline"]) if p.pid not in before and p.info["cmdline"] == ["sleep", "300"]]
        assert leaked == []
    finally:
        fn.close()


def test_process_isolation_leaves_no_processes_after_close(tmp_path):
    path = write(tmp_path, "h5.py", HOSTILE)
    fn = ProcessRewardFunction(PluginSpec(f"{path}:f"), "f", processes=2)
    fn.score_batch([RewardSample(response=r) for r in ["a", "bb", "loop"]], timeout_s=0.5)
    pids = fn.pids()
    assert pids
    fn.close()
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_process_isolation_child_dies_with_its_parent(tmp_path):
    import signal
    import subprocess
    import sys

    path = write(tmp_path, "h6.py", HOSTILE)
    driver = write(
        tmp_path,
        "driver.py",
        f"""
        from qwen25_rl.reward.isolation import ProcessRewardFunction
        from qwen25_rl.reward.plugins import PluginSpec
        from qwen25_rl.reward.types import RewardSample
        fn = ProcessRewardFunction(PluginSpec({path + ":f"!r}), "f")
        print(fn.pids()[0], flush=True)
        fn.score_batch([RewardSample(response="loop")], timeout_s=600)
    """,
    )
    parent = subprocess.Popen([sys.executable, driver], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(parent.stdout.readline())
        time.sleep(0.5)  # the child is now spinning in the infinite loop
        assert psutil.pid_exists(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.time() + 5
        while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE and time.time() < deadline:
            time.sleep(0.05)
        assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    finally:
        parent.kill()
        if child is not None and psutil.pid_exists(child):  # a failed run must not leave it spinning
            os.kill(child, signal.SIGKILL)


def test_process_isolation_runs_calls_in_parallel(tmp_path):
    path = write(
        tmp_path,
        "s.py",
        "import os, time\ndef f(sample):\n    t = time.time()\n    time.sleep(0.4)\n    return {'score': 1.0, 'start': t, 'end': time.time(), 'pid': os.getpid()}\n",
    )
    fn = ProcessRewardFunction(PluginSpec(f"{path}:f"), "f", processes=4)
    try:
        fn.score_batch([RewardSample(response="w")] * 4, timeout_s=5)  # start all children
        out = fn.score_batch([RewardSample(response="x")] * 8, timeout_s=5)
        assert all(o.value == 1.0 for o in out)
        assert len({o.details["pid"] for o in out}) == 4
        assert max_overlap([(o.details["start"], o.details["end"]) for o in out]) >= 2
    finally:
        fn.close()


def test_plugin_import_error_in_child_is_raised_at_start(tmp_path):
    path = write(tmp_path, "bad.py", "raise RuntimeError('no GPU here')\n")
    with pytest.raises(PluginError, match="no GPU here"):
        ProcessRewardFunction(PluginSpec(f"{path}:f"), "f")


# ---------------------------------------------------------------------------------------------
# through the config and the scorer


def test_custom_reward_in_config_by_shorthand_path(tmp_path):
    path = write(tmp_path, "cfg.py", "def f(sample):\n    return 0.5\n")
    cfg = RewardConfig.model_validate({"functions": [{"type": f"{path}:f", "weight": 2.0}]})
    assert cfg.functions[0].type == "custom" and cfg.functions[0].label == "f"
    with RewardScorer(cfg) as scorer:
        assert scorer.score(SAMPLES[:1])[0].reward == 1.0


def test_custom_reward_missing_file_fails_when_the_config_loads(tmp_path):
    with pytest.raises(ValueError, match=r"file .*gone\.py not found"):
        RewardConfig.model_validate({"functions": [{"type": "custom", "params": {"path": f"{tmp_path}/gone.py:f"}}]})


def test_custom_reward_bad_signature_fails_when_the_scorer_starts(tmp_path):
    path = write(tmp_path, "sig.py", "def f(a, b):\n    return 0\n")
    cfg = RewardConfig.model_validate({"functions": [{"type": f"{path}:f"}]})
    with pytest.raises(RewardSetupError, match=r"'f' \(type custom\) failed to start: .*cannot tell the call style"):
        RewardScorer(cfg)


def test_thread_isolation_reports_timeout_without_waiting_for_the_call(tmp_path):
    release = tmp_path / "release"  # the slow call waits up to 30 s, or until this file exists
    path = write(
        tmp_path,
        "slow.py",
        f"import os, time\ndef f(sample):\n    end = time.time() + (30 if sample.response == '5' else 0)\n    while time.time() < end and not os.path.exists({str(release)!r}):\n        time.sleep(0.05)\n    return 1.0\n",
    )
    cfg = RewardConfig.model_validate(
        {"functions": [{"type": "custom", "timeout_s": 0.3, "params": {"path": f"{path}:f", "isolation": "thread"}}]}
    )
    with RewardScorer(cfg) as scorer:
        t = time.perf_counter()
        out = scorer.score(SAMPLES, on_failure="zero")
        elapsed = time.perf_counter() - t
        release.touch()
    assert [r.status for r in out] == ["ok", "timeout"]
    assert elapsed < 0.3 + SLACK_S  # the call itself waits 30 s

"""reward.isolation's memory cap (an RSS watchdog over the plug-in's child process and what it
started), the failure causes it reports, and the cap reaching the children from the config."""

from __future__ import annotations

import textwrap
import time

import psutil
import pytest
from bounds import SLACK_S

from qwen25_rl.reward.config import RewardConfig, RewardPoolConfig
from qwen25_rl.reward.isolation import DEFAULT_MEMORY_LIMIT_MB, ProcessRewardFunction, limit_memory
from qwen25_rl.reward.plugins import PluginSpec
from qwen25_rl.reward.scorer import RewardScorer
from qwen25_rl.reward.types import RewardSample

CAP_MB = 150

PLUGIN = """
import os
import signal
import subprocess
import sys
import time

_hoard = []


def f(sample):
    r = sample.response
    if r == "grow":
        while True:
            _hoard.append(bytearray(16 * 2**20))
            time.sleep(0.005)
    if r == "grow-in-subprocess":  # the memory is in a process the plug-in started
        code = "import time\\nx = []\\nwhile True:\\n    x.append(bytearray(16 * 2**20))\\n    time.sleep(0.005)\\n"
        subprocess.run([sys.executable, "-c", code])
    if r == "leak":  # answers, but keeps 100 MB more each call
        _hoard.append(bytearray(100 * 2**20))
        return 2.0
    if r == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    return 1.0
"""


@pytest.fixture
def plugin(tmp_path) -> str:
    path = tmp_path / "mem_reward.py"
    path.write_text(textwrap.dedent(PLUGIN))
    return f"{path}:f"


def gone(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


@pytest.mark.parametrize("fault", ["grow", "grow-in-subprocess"])
def test_a_call_growing_past_the_cap_is_killed_with_a_clear_error(plugin, fault):
    fn = ProcessRewardFunction(PluginSpec(plugin), "f", memory_limit_mb=CAP_MB)
    try:
        child = fn.pids()[0]
        t = time.perf_counter()
        out = fn.score_batch([RewardSample(fault), RewardSample("ok")], timeout_s=30)
        elapsed = time.perf_counter() - t
        assert out[0].status == "error" and out[0].details == {"failure": "memory"}
        assert "custom reward 'f' used" in out[0].error
        assert f"more than its memory limit of {CAP_MB} MB (reward.pool.memory_limit_mb); its process was killed" in out[0].error
        assert (out[1].status, out[1].value) == ("ok", 1.0)  # a fresh child scored the next one
        assert elapsed < SLACK_S  # not the 30 s deadline: the cap stopped it
        assert (fn.restarts, fn.failures["memory"]) == (1, 1)
        assert gone(child)
        # ...and what it started (the subprocess holding the memory) went with it
        assert not [p for p in psutil.Process().children(recursive=True) if "bytearray" in " ".join(_cmdline(p))]
    finally:
        fn.close()


def test_a_child_that_answers_above_the_cap_keeps_its_answer_and_is_recycled(plugin):
    fn = ProcessRewardFunction(PluginSpec(plugin), "f", memory_limit_mb=CAP_MB)
    try:
        first = fn.pids()[0]
        out = fn.score_batch([RewardSample("leak")], timeout_s=30)  # ~35 MB + 100 MB: under the cap
        assert (out[0].status, fn.restarts) == ("ok", 0)
        out = fn.score_batch([RewardSample("leak")], timeout_s=30)  # now above it
        # Either the poll caught it during the call (an error naming the cap) or right after
        # its answer (the answer kept): both replace the child.
        assert out[0].status == "ok" or (out[0].details or {}).get("failure") == "memory"
        assert fn.restarts == 1 and fn.recycled + fn.failures["memory"] == 1
        assert gone(first)
        assert fn.score_batch([RewardSample("x")], timeout_s=30)[0].value == 1.0
    finally:
        fn.close()


def test_a_child_killed_by_a_signal_says_which(plugin):
    fn = ProcessRewardFunction(PluginSpec(plugin), "f")
    try:
        out = fn.score_batch([RewardSample("sigkill")], timeout_s=30)
        assert out[0].status == "error" and out[0].details == {"failure": "crash"}
        assert "its process died (killed by SIGKILL" in out[0].error
        assert fn.failures == {"timeout": 0, "memory": 0, "crash": 1}
    finally:
        fn.close()


def test_the_pool_setting_reaches_the_isolated_functions_of_a_scorer(plugin):
    assert RewardPoolConfig().memory_limit_mb == DEFAULT_MEMORY_LIMIT_MB == 4096
    cfg = RewardConfig.model_validate({"functions": [{"type": plugin}], "pool": {"memory_limit_mb": CAP_MB}})
    with RewardScorer(cfg) as scorer:
        ((_, fn),) = scorer.functions
        assert fn.memory_limit_mb == DEFAULT_MEMORY_LIMIT_MB  # built by the registry with the default
        limit_memory(scorer, cfg.pool.memory_limit_mb)
        assert fn.memory_limit_mb == CAP_MB
        out = scorer.score([RewardSample("grow"), RewardSample("ok")], on_failure="zero")
        assert [r.status for r in out] == ["error", "ok"]
        assert out[0].details["f"] == {"failure": "memory"}
    with pytest.raises(ValueError, match="memory_limit_mb"):
        RewardConfig.model_validate({"pool": {"memory_limit_mb": 0}})

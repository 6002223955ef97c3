"""Fixtures of the sandbox attack suites: one small-limit sandbox per module, and after every
test that used it, the checks that the attack changed nothing (no process, uid or cgroup left
behind, and an honest solution still scores 1.0)."""

from __future__ import annotations

import pytest
from sandbox_support import PROBLEM, assert_nothing_left, make_sandbox

from qwen25_rl.reward.code import grade_humaneval


@pytest.fixture(scope="module")
def sb():
    s = make_sandbox()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def sandbox_is_unchanged_and_still_grades_honestly(request):
    yield
    if "sb" in request.fixturenames:
        sb = request.getfixturevalue("sb")
        assert_nothing_left(sb)
        assert grade_humaneval(PROBLEM, PROBLEM["canonical_solution"], sandbox=sb).score == 1.0

"""A real sandbox for the tests of this folder (root is needed to give executions their own uid)."""

from __future__ import annotations

import os

import pytest
from environment import skip_missing


@pytest.fixture(scope="session")
def sandbox():
    if os.geteuid() != 0:
        skip_missing("root (the sandbox runs executions under their own uids)")
    from qwen25_rl.sandboxes import Limits, Sandbox, SandboxConfig

    sb = Sandbox(SandboxConfig(limits=Limits(timeout_s=10)))
    yield sb
    sb.close()

"""Skips for what this machine lacks (root, bubblewrap, the evaluation data, an oracle
package), which CI must not lack: with CI=true such a skip fails the test instead (see
tests/conftest.py), so a CI machine that lost a requirement cannot pass by skipping."""

from __future__ import annotations

import os

import pytest

MISSING = "missing on this machine: "


def skip_missing(what: str):
    """Skip the test because `what` is not available here (a failure under CI=true)."""
    pytest.skip(MISSING + what)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason=MISSING + "root (the sandbox runs executions under their own uids)")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")

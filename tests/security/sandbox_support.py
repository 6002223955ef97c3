"""Shared pieces of the sandbox attack suites: a small-limit sandbox, the toy problem whose
completion carries each attack, and the after-every-attack checks."""

from __future__ import annotations

import os
import textwrap

from environment import skip_missing

from qwen25_rl.sandboxes import Limits, Sandbox, SandboxConfig
from qwen25_rl.sandboxes.slots import process_uids

LIMITS = Limits(
    timeout_s=3, cpu_s=3, memory_mb=256, max_processes=24, max_open_files=64, max_file_mb=4, tmpfs_mb=16, max_output_bytes=64 * 1024
)

PROBLEM = {
    "task_id": "Toy/0",
    "prompt": 'def double(x: int) -> int:\n    """Twice x."""\n',
    "entry_point": "double",
    "canonical_solution": "    return 2 * x\n",
    "test": "\n\ndef check(candidate):\n    assert candidate(1) == 2\n    assert candidate(-3) == -6\n    assert candidate(0) == 0\n",
}


def make_sandbox() -> Sandbox:
    if os.geteuid() != 0:
        skip_missing("root (the sandbox runs executions under their own uids)")
    return Sandbox(SandboxConfig(slots=8, limits=LIMITS))


def completion(attack: str) -> str:
    """A HumanEval completion whose function body runs `attack` and then answers wrongly."""
    return textwrap.indent(textwrap.dedent(attack).strip("\n") + "\nreturn -1\n", "    ")


def live_processes_of(sb: Sandbox) -> dict[int, tuple[int, ...]]:
    """Live processes under any uid this sandbox has used. (Only those: other processes on the
    machine may run their own sandboxes in the same uid range at the same time.)"""
    used = sb.leases.used if sb.leases is not None else set()
    return {pid: uids for pid, uids in process_uids().items() if used & set(uids)}


def assert_nothing_left(sb: Sandbox) -> None:
    assert sb.busy() == 0
    left = live_processes_of(sb)
    assert left == {}, f"processes left behind: {left}"
    if sb.leases is not None:
        assert (sb.leases.held, sb.leases.quarantined) == (set(), set())
    if sb.cgroups is not None:
        for uid in sb.leases.used:
            for d in (sb.cgroups.memory_root, sb.cgroups.pids_root):
                procs = os.path.join(d, f"u{uid}", "cgroup.procs")
                if os.path.exists(procs):
                    with open(procs) as f:
                        assert f.read().split() == [], procs

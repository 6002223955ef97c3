"""Running untrusted code: isolation, limits, verdicts. Standard library (+ psutil) only.

    from qwen25_rl.sandboxes import run_python
    r = run_python("print(input()[::-1])", stdin="abc", timeout_s=5)
    r.status, r.stdout          # ("ok", "cba\\n")

Every execution gets its own unprivileged uid, bubblewrap namespaces (no network, private
read-only view of the interpreter, small tmpfs), rlimits, a seccomp filter, optionally a cgroup,
and a wall-clock kill of its whole process tree. See isolation.py for the layers and
harness.py for how graded runs keep their verdict out of the code's reach.
"""

from __future__ import annotations

from qwen25_rl.sandboxes.config import Limits, SandboxConfig
from qwen25_rl.sandboxes.executor import Sandbox, configure, default_sandbox
from qwen25_rl.sandboxes.graded import CallsVerdict, CaseRun, IOVerdict, UnitResult, run_calls, run_io
from qwen25_rl.sandboxes.result import ExecResult, IsolationUnavailable, Status

__all__ = [
    "CallsVerdict",
    "CaseRun",
    "ExecResult",
    "IOVerdict",
    "IsolationUnavailable",
    "Limits",
    "Sandbox",
    "SandboxConfig",
    "Status",
    "UnitResult",
    "configure",
    "default_sandbox",
    "run",
    "run_calls",
    "run_io",
    "run_python",
]


def run(
    code: str | None = None,
    *,
    argv: list[str] | None = None,
    stdin: str | bytes = "",
    files: dict[str, str | bytes] | None = None,
    limits: Limits | None = None,
    sandbox: Sandbox | None = None,
) -> ExecResult:
    """Run Python `code` (like `python -c`) or a command `argv` in the sandbox.

    files: {relative path: content} placed in the working folder (/tmp) before the start."""
    return (sandbox or default_sandbox()).run(code, argv=argv, stdin=stdin, files=files, limits=limits)


def run_python(
    code: str,
    *,
    stdin: str | bytes = "",
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    files: dict[str, str | bytes] | None = None,
    sandbox: Sandbox | None = None,
) -> ExecResult:
    """Run Python source in the sandbox; failures of the code come back as `ExecResult.status`."""
    sb = sandbox or default_sandbox()
    limits = sb.config.limits.replace(timeout_s=timeout_s, memory_mb=memory_mb)
    return sb.run(code, stdin=stdin, files=files, limits=limits)

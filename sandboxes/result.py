"""What an execution returns. Failures of untrusted code are values here, never exceptions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qwen25_rl.errors import UserError


class Status:
    """The outcome of one execution (plain strings so results serialise as JSON)."""

    OK = "ok"  # exited 0
    FAILED = "failed"  # exited non-zero (an uncaught exception included)
    TIMEOUT = "timeout"  # wall-clock or CPU limit reached; the tree was killed
    MEMORY = "memory"  # ran out of its memory limit (MemoryError, or the cgroup OOM killer)
    OUTPUT_LIMIT = "output-limit"  # wrote more than max_output_bytes; the tree was killed
    KILLED = "killed"  # died from a signal it did not get from us (SIGSEGV, SIGKILL by itself...)
    SANDBOX_ERROR = "sandbox-error"  # the sandbox could not be set up or lost track; not the code's fault

    ALL = (OK, FAILED, TIMEOUT, MEMORY, OUTPUT_LIMIT, KILLED, SANDBOX_ERROR)


@dataclass
class ExecResult:
    status: str
    exit_code: int | None = None  # None when killed by a signal
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    wall_s: float = 0.0
    cpu_s: float = 0.0  # user + system of the whole tree (exact with the cgroup layer, else rusage: a lower bound)
    error: str = ""  # for sandbox-error: what went wrong
    isolation: tuple[str, ...] = ()  # the layers that were active
    missing_layers: tuple[str, ...] = ()  # required layers missing (only with allow_weak_isolation)
    # Messages the trusted grader inside the sandbox sent on its private channel
    # (see sandboxes/harness.py); empty for plain runs.
    channel: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    def summary(self) -> str:
        tail = (self.stderr.strip().splitlines() or [""])[-1][:200]
        extra = f" ({self.error})" if self.error else (f": {tail}" if tail and not self.ok else "")
        return f"{self.status} exit={self.exit_code} wall={self.wall_s:.3f}s{extra}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "stdout_truncated": self.stdout_truncated,
            "stderr_truncated": self.stderr_truncated,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "error": self.error,
            "isolation": list(self.isolation),
            "missing_layers": list(self.missing_layers),
        }


class IsolationUnavailable(UserError, RuntimeError):
    """A required isolation layer is missing and weak isolation was not allowed.

    Raised when a Sandbox is created (a host problem to fix, not a failure of untrusted code)."""

    def __init__(self, missing: dict[str, str]):
        self.missing = dict(missing)
        lines = "; ".join(f"{k}: {v}" for k, v in self.missing.items())
        super().__init__(
            f"sandbox refuses to run untrusted code: missing isolation layer(s) {sorted(self.missing)} ({lines}). "
            "Fix the host, or set allow_weak_isolation: true to run without them."
        )

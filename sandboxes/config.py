"""Plain dataclasses for the sandbox: per-run `Limits` and per-pool `SandboxConfig`.

They are dataclasses with plain fields (no pydantic) so that `sandboxes/` stays standard
library only. The code reward's config uses them as they are: pydantic validates a dataclass
field by field and then runs its `__post_init__` checks, and `__pydantic_config__` (a plain
dict, read only by pydantic) makes unknown keys errors. One definition, no mirror to drift.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Resource limits of one execution. Every field is a hard limit enforced by the kernel
    (rlimits, cgroup, tmpfs size) or by the parent's wall clock, never by the sandboxed code."""

    __pydantic_config__ = {"extra": "forbid"}

    timeout_s: float = 10.0  # wall clock for the whole execution; the parent kills the tree
    cpu_s: float | None = None  # RLIMIT_CPU per process; None = timeout_s + 1
    memory_mb: int = 1024  # RLIMIT_AS per process, and the cgroup limit for the whole tree
    max_processes: int = 32  # RLIMIT_NPROC (tasks: threads count) and cgroup pids.max
    max_open_files: int = 64  # RLIMIT_NOFILE
    max_file_mb: int = 16  # RLIMIT_FSIZE: the largest file it may write
    tmpfs_mb: int = 64  # size of the writable /tmp (the working folder)
    max_output_bytes: int = 1 * MiB  # stdout and stderr each; more is status "output-limit"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"Limits.{f.name} must be a positive number, got {v!r}")
        if self.memory_mb < 64:
            raise ValueError(f"Limits.memory_mb={self.memory_mb}: a Python interpreter needs at least 64 MiB")
        if self.max_processes < 4:
            raise ValueError(f"Limits.max_processes={self.max_processes}: the sandbox itself needs 4 (bwrap, init, grader, program)")
        if self.max_open_files < 16:
            raise ValueError(f"Limits.max_open_files={self.max_open_files}: Python needs at least 16")

    @property
    def effective_cpu_s(self) -> float:
        return self.cpu_s if self.cpu_s is not None else self.timeout_s + 1.0

    def replace(self, **changes) -> Limits:
        return dataclasses.replace(self, **changes)


# The layers `SandboxConfig.allow_weak_isolation` may drop. "cgroup" is not one of them: it is
# an extra used when the host offers it (see SandboxConfig.cgroups).
REQUIRED_LAYERS = ("uid", "namespaces", "rlimits", "seccomp")


@dataclass(frozen=True)
class SandboxConfig:
    """How a pool of sandboxes runs. Defaults are safe: every layer required."""

    __pydantic_config__ = {"extra": "forbid"}

    # Concurrent executions in this process; run() blocks (back-pressure) when all are busy.
    # 0 = 4 x the CPU count (executions spend much of their time waiting on the kernel).
    slots: int = 0
    # Each execution runs under its own unprivileged host uid leased from this range.
    # Leases are machine-wide (flock'ed files in state_dir), so several processes (Ray actors)
    # can share the range; nothing else on the machine may use these uids.
    uid_base: int = 1_700_000_000
    uid_count: int = 1024
    # Where uid lease files live; None = /run/qwen25_rl_sandbox if writable, else the temp dir.
    state_dir: str | None = None
    # Interpreter run inside the sandbox; None = the host's base interpreter when an
    # unprivileged uid can reach it, else /usr/bin/python3 (see isolation.find_python).
    python: str | None = None
    bwrap: str = "/usr/bin/bwrap"
    setpriv: str = "/usr/bin/setpriv"
    prlimit: str = "/usr/bin/prlimit"
    # Extra host folders made visible read-only inside the sandbox (e.g. a venv of allowed
    # libraries). Each must be reachable by an unprivileged uid.
    extra_ro_paths: tuple[str, ...] = ()
    # cgroup limits on the whole process tree (memory, pids): "auto" uses them when the host's
    # cgroup filesystem is writable, "require" refuses to run without them, "off" never.
    cgroups: str = "auto"
    # Run even when a required layer is missing (the missing layers are reported on every
    # result). Never the default: it is for machines where untrusted code is not a concern.
    allow_weak_isolation: bool = False
    limits: Limits = field(default_factory=Limits)
    # How long run() waits for a free slot before returning a sandbox-error result.
    acquire_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.slots < 0:
            raise ValueError(f"SandboxConfig.slots must be >= 0, got {self.slots}")
        if not (1000 <= self.uid_base and self.uid_base + self.uid_count < 2**31):
            raise ValueError(f"SandboxConfig.uid_base={self.uid_base}/uid_count={self.uid_count}: uids must lie in [1000, 2**31)")
        if self.uid_count < 1:
            raise ValueError("SandboxConfig.uid_count must be >= 1")
        if self.cgroups not in ("auto", "require", "off"):
            raise ValueError(f"SandboxConfig.cgroups must be 'auto', 'require' or 'off', got {self.cgroups!r}")
        if isinstance(self.extra_ro_paths, (str, bytes)):
            raise ValueError("SandboxConfig.extra_ro_paths must be a list of paths, not one string")
        object.__setattr__(self, "extra_ro_paths", tuple(self.extra_ro_paths))

    def replace(self, **changes) -> SandboxConfig:
        return dataclasses.replace(self, **changes)

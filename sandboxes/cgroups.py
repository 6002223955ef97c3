"""Optional cgroup layer: one memory + pids (+ cpuacct) cgroup per sandbox uid.

rlimits are per process, so N processes x RLIMIT_AS is the real memory bound of an execution
tree. A cgroup caps the tree as a whole (tmpfs pages included) and lists its processes exactly,
which makes the "nothing left running" check cheap. It also measures the tree's CPU time exactly
(cpuacct in v1, cpu.stat in v2): rusage misses processes that bwrap's init leaves to be reaped by
someone else. cgroup v1 (memory and pids hierarchies, cpuacct when mounted) and v2 (when memory
and pids are enabled in our cgroup's subtree_control) are supported.

The per-uid cgroups are created under the host process's own cgroup, in a folder named
`qwen25_rl_sandbox`, and are kept for reuse (creating a memory cgroup per run is slow).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

GROUP_DIR = "qwen25_rl_sandbox"


def _mounts() -> list[tuple[str, str, set[str]]]:
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                out.append((parts[1], parts[2], set(parts[3].split(","))))
    return out


def _own_paths() -> dict[str, str]:
    """controller (or '' for v2) -> our cgroup path."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            hid, ctrls, path = line.rstrip("\n").split(":", 2)
            if hid == "0" and ctrls == "":
                out[""] = path
            for c in ctrls.split(","):
                if c:
                    out[c] = path
    return out


@dataclass
class CgroupRun:
    """The cgroup files of one execution."""

    procs_files: list[str]  # cgroup.procs to join
    dirs: list[str]
    oom_file: str
    oom_before: int
    cpu_file: str | None = None
    cpu_before: float = 0.0
    # The namespace's init (bwrap's child). A dying init leaves the cgroup before it has
    # finished killing and reaping the namespace, so it is checked on its own.
    init_pid: int | None = None


class Cgroups:
    def __init__(self, memory_root: str, pids_root: str, v2: bool, cpuacct_root: str | None = None):
        self.memory_root, self.pids_root, self.v2 = memory_root, pids_root, v2
        self.cpuacct_root = cpuacct_root

    @classmethod
    def detect(cls) -> tuple[Cgroups | None, str]:
        if os.geteuid() != 0:
            return None, "not root"
        try:
            mounts, own = _mounts(), _own_paths()
        except OSError as e:
            return None, f"cannot read cgroup info: {e}"
        mem = pids = cpu = None
        for mnt, typ, opts in mounts:
            if typ == "cgroup" and "memory" in opts and "memory" in own:
                mem = os.path.join(mnt, own["memory"].lstrip("/"), GROUP_DIR)
            if typ == "cgroup" and "pids" in opts and "pids" in own:
                pids = os.path.join(mnt, own["pids"].lstrip("/"), GROUP_DIR)
            if typ == "cgroup" and "cpuacct" in opts and "cpuacct" in own:
                cpu = os.path.join(mnt, own["cpuacct"].lstrip("/"), GROUP_DIR)
        if mem and pids:
            try:
                for d in (mem, pids):
                    os.makedirs(d, exist_ok=True)
            except OSError as e:
                return None, f"cgroup v1 not writable: {e}"
            try:
                if cpu:
                    os.makedirs(cpu, exist_ok=True)
            except OSError:
                cpu = None  # CPU time then comes from rusage
            return cls(mem, pids, v2=False, cpuacct_root=cpu), ""
        for mnt, typ, _ in mounts:
            if typ == "cgroup2" and "" in own:
                base = os.path.join(mnt, own[""].lstrip("/"))
                try:
                    with open(os.path.join(base, "cgroup.subtree_control")) as f:
                        enabled = set(f.read().split())
                except OSError:
                    continue
                if {"memory", "pids"} <= enabled:
                    d = os.path.join(base, GROUP_DIR)
                    try:
                        os.makedirs(d, exist_ok=True)
                        with open(os.path.join(d, "cgroup.subtree_control"), "w") as f:
                            f.write("+memory +pids")
                        return cls(d, d, v2=True), ""
                    except OSError as e:
                        return None, f"cgroup v2 not writable: {e}"
        return None, "no writable memory+pids cgroup hierarchy (v1) or delegated v2 subtree"

    def _dirs(self, uid: int) -> list[str]:
        if self.v2:
            return [os.path.join(self.memory_root, f"u{uid}")]
        dirs = [os.path.join(self.memory_root, f"u{uid}"), os.path.join(self.pids_root, f"u{uid}")]
        if self.cpuacct_root:
            dirs.append(os.path.join(self.cpuacct_root, f"u{uid}"))
        return dirs

    def prepare(self, uid: int, memory_bytes: int, max_pids: int) -> CgroupRun:
        dirs = self._dirs(uid)
        for d in dirs:
            os.makedirs(d, exist_ok=True)
        if self.v2:
            d = dirs[0]
            _write(os.path.join(d, "memory.max"), str(memory_bytes))
            if os.path.exists(os.path.join(d, "memory.swap.max")):
                _write(os.path.join(d, "memory.swap.max"), "0")
            _write(os.path.join(d, "pids.max"), str(max_pids))
            oom_file = os.path.join(d, "memory.events")
            cpu_file = os.path.join(d, "cpu.stat")
        else:
            mem, pids = dirs[:2]
            cpu_file = os.path.join(dirs[2], "cpuacct.usage") if len(dirs) > 2 else None
            # memsw must stay >= the memory limit: lower order depends on direction; set both ways.
            memsw = os.path.join(mem, "memory.memsw.limit_in_bytes")
            try:
                _write(os.path.join(mem, "memory.limit_in_bytes"), str(memory_bytes))
                if os.path.exists(memsw):
                    _write(memsw, str(memory_bytes))
            except OSError:
                if os.path.exists(memsw):
                    _write(memsw, str(memory_bytes))
                _write(os.path.join(mem, "memory.limit_in_bytes"), str(memory_bytes))
            _write(os.path.join(pids, "pids.max"), str(max_pids))
            oom_file = os.path.join(mem, "memory.oom_control")
        run = CgroupRun([os.path.join(d, "cgroup.procs") for d in dirs], dirs, oom_file, _oom_kills(oom_file), cpu_file)
        run.cpu_before = _cpu_seconds(cpu_file)
        return run

    def oom_killed(self, run: CgroupRun) -> bool:
        return _oom_kills(run.oom_file) > run.oom_before

    @staticmethod
    def cpu_seconds(run: CgroupRun) -> float | None:
        """CPU time (user + system) of the tree during this execution; None if not measured."""
        if not run.cpu_file:
            return None
        after = _cpu_seconds(run.cpu_file)
        return max(0.0, after - run.cpu_before) if after is not None and run.cpu_before is not None else None

    @staticmethod
    def pids(run: CgroupRun) -> set[int]:
        out: set[int] = set()
        for p in run.procs_files:
            try:
                with open(p) as f:
                    out.update(int(x) for x in f.read().split())
            except OSError:
                pass
        return out


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _cpu_seconds(path: str | None) -> float | None:
    if not path:
        return None
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    if path.endswith("cpu.stat"):
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if k == "usage_usec":
                return int(v) / 1e6
        return None
    return int(text) / 1e9


def _oom_kills(path: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(" ")
                if k == "oom_kill":
                    return int(v)
    except OSError:
        pass
    return 0

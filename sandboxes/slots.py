"""Slots (back-pressure inside one process) and uid leases (exclusive across the machine).

A slot is a permit to run one execution in this process: a fixed number, `run()` waits for one.
A uid lease is an exclusive flock on `<state_dir>/uid-<N>.lock`: several processes (Ray actors)
can share one uid range without ever running two executions under the same uid, and a process
that dies releases its leases with it (the kernel drops the flock).
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import tempfile
import threading
import time


def process_uids() -> dict[int, tuple[int, ...]]:
    """pid -> (real, effective, saved, fs) uid for every process, zombies excluded.

    Read from /proc/<pid>/status (the owner of /proc/<pid> is not enough: a process can make
    itself non-dumpable and then /proc shows it as owned by root)."""
    out: dict[int, tuple[int, ...]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/status", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            data = os.read(fd, 1024)
        except OSError:
            continue
        finally:
            os.close(fd)
        i = data.find(b"\nUid:")
        if i < 0:
            continue
        j = data.find(b"\nState:")
        if j >= 0 and data[j + 8 : j + 9] == b"Z":
            continue
        line = data[i + 5 : data.find(b"\n", i + 5)]
        out[int(name)] = tuple(int(x) for x in line.split())
    return out


def pids_of_uid(uid: int) -> list[int]:
    return [pid for pid, uids in process_uids().items() if uid in uids]


def default_state_dir() -> str:
    for d in ("/run/qwen25_rl_sandbox", os.path.join(tempfile.gettempdir(), f"qwen25_rl_sandbox-{os.geteuid()}")):
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            continue
    raise OSError("no writable folder for sandbox uid leases (tried /run and the temp dir)")


class UidLease:
    def __init__(self, uid: int, fd: int):
        self.uid, self.fd = uid, fd


class UidLeases:
    def __init__(self, state_dir: str, uid_base: int, uid_count: int, window: int = 16):
        self.state_dir, self.uid_base, self.uid_count = state_dir, uid_base, uid_count
        self._lock = threading.Lock()
        self._held: set[int] = set()
        self._quarantined: set[int] = set()
        self._used: set[int] = set()  # every uid this process has leased
        # A process cycles through a small window of uids (from a random origin, so processes
        # sharing the range rarely collide). Cycling rather than reusing the last uid at once:
        # the kernel releases a uid's process count (RLIMIT_NPROC) only after an RCU grace
        # period, so back-to-back runs under one uid could see the previous run's processes.
        self._origin = random.randrange(uid_count)
        self._window = max(1, min(window, uid_count))
        self._cursor = 0

    def acquire(self, deadline: float) -> UidLease | None:
        while True:
            lease = self._try_once()
            if lease is not None:
                return lease
            if time.monotonic() > deadline:
                return None
            time.sleep(0.01)

    def _try_once(self) -> UidLease | None:
        with self._lock:
            for k in range(self.uid_count):
                if k < self._window:
                    i = (self._origin + (self._cursor + k) % self._window) % self.uid_count
                else:
                    i = (self._origin + k) % self.uid_count
                uid = self.uid_base + i
                if uid in self._held or uid in self._quarantined:
                    continue
                path = os.path.join(self.state_dir, f"uid-{uid}.lock")
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    os.close(fd)
                    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                        continue
                    raise
                self._held.add(uid)
                self._used.add(uid)
                if k < self._window:
                    self._cursor = (self._cursor + k + 1) % self._window
                return UidLease(uid, fd)
        return None

    def release(self, lease: UidLease) -> None:
        with self._lock:
            self._held.discard(lease.uid)
            os.close(lease.fd)

    def quarantine(self, lease: UidLease) -> None:
        """Keep the lock forever (for this process): the uid still has processes we could not kill."""
        with self._lock:
            self._held.discard(lease.uid)
            self._quarantined.add(lease.uid)

    @property
    def held(self) -> set[int]:
        with self._lock:
            return set(self._held)

    @property
    def used(self) -> set[int]:
        with self._lock:
            return set(self._used)

    @property
    def quarantined(self) -> set[int]:
        with self._lock:
            return set(self._quarantined)

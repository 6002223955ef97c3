"""uid leases: exclusive across processes, released when the holder dies, cycling a small window."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from environment import needs_root

from qwen25_rl.sandboxes.slots import UidLeases, pids_of_uid, process_uids

HOLD = """
import sys, time
from qwen25_rl.sandboxes.slots import UidLeases
leases = UidLeases(sys.argv[1], 5000, 2, window=2)
held = [leases.acquire(time.monotonic() + 1) for _ in range(2)]
print(sorted(l.uid for l in held), flush=True)
time.sleep(60)
"""


def test_a_uid_is_never_leased_twice_even_across_processes(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        assert holder.stdout.readline().strip() == "[5000, 5001]"
        mine = UidLeases(str(tmp_path), 5000, 2)
        assert mine.acquire(time.monotonic() + 0.2) is None  # both taken by the other process
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the dead holder's locks
    lease = mine.acquire(time.monotonic() + 1)
    assert lease is not None and lease.uid in (5000, 5001)
    mine.release(lease)


def test_leases_cycle_through_the_window_instead_of_reusing_the_last_uid(tmp_path):
    leases = UidLeases(str(tmp_path), 7000, 64, window=4)
    seen = []
    for _ in range(8):
        lease = leases.acquire(time.monotonic() + 1)
        seen.append(lease.uid)
        leases.release(lease)
    assert len(set(seen)) == 4 and seen[:4] == seen[4:]


def test_quarantined_uids_are_not_leased_again(tmp_path):
    leases = UidLeases(str(tmp_path), 8000, 1)
    lease = leases.acquire(time.monotonic() + 1)
    leases.quarantine(lease)
    assert leases.acquire(time.monotonic() + 0.1) is None
    assert leases.quarantined == {8000}


def test_process_scan_reads_real_uids():
    uids = process_uids()
    assert uids[os.getpid()][0] == os.getuid()
    assert os.getpid() in pids_of_uid(os.getuid())


WORKER = """
import sys
from concurrent.futures import ThreadPoolExecutor
from qwen25_rl.sandboxes import Sandbox, SandboxConfig
sb = Sandbox(SandboxConfig(slots=6, uid_count=12))
code = "import os, time\\nprint(os.getuid())\\ntime.sleep(0.3)"
with ThreadPoolExecutor(6) as ex:
    rs = list(ex.map(lambda _: sb.run(code), range(18)))
print(sum(r.ok for r in rs), flush=True)
"""


@needs_root
def test_two_processes_share_the_uid_range_without_interfering():
    procs = [subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    # 12 uids for 2 x 6 concurrent executions: a collision would have made some fail or hang
    assert outs == ["18", "18"]

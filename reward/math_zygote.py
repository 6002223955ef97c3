"""Process that forks math-verifier workers: ``python -m reward.math_zygote CTRL_FD MEMORY_MB``.

Why not multiprocessing: its spawn/forkserver start methods re-import the caller's main
script in every worker (a script without an ``if __name__ == "__main__"`` guard then fails,
and `reward.math.verify` is meant to be called from any script), and "fork" would copy the
caller's threads (Ray, torch). This zygote is a fresh interpreter that imports sympy and
math-verify once; each worker is a fork of it, ready in milliseconds.

Protocol on the control socket (a socketpair end inherited as CTRL_FD):
  zygote -> pool: b"R" once imports are done.
  pool -> zygote: b"F" = fork a worker; the reply is the worker's pid as ASCII digits with the
                  pool's end of a fresh socketpair attached (SCM_RIGHTS).
  EOF            = the pool is gone: exit (workers die with the zygote: PR_SET_PDEATHSIG).
Worker sockets carry multiprocessing.connection messages: (pred, gold, soft_deadline_s) ->
(status, detail, finished_at_monotonic), answered in order; None or EOF ends the worker.
"""

from __future__ import annotations

import ctypes
import gc
import os
import resource
import signal
import socket
import sys
import time
import traceback
from multiprocessing.connection import Connection

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """SIGKILL this process when its parent exits (Linux); a no-op elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return


def _limit_memory(memory_mb: int) -> None:
    if memory_mb <= 0:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def worker_loop(conn: Connection) -> None:
    from qwen25_rl.reward.math_check import symbolic_verdict

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        pred, gold, soft_s = msg
        status, detail = symbolic_verdict(pred, gold, soft_s)
        # CLOCK_MONOTONIC is system-wide: the pool starts the next queued request's deadline
        # at this instant, not when it gets round to reading this answer.
        conn.send((status.value, detail, time.monotonic()))


def _run_worker(sock: socket.socket, memory_mb: int) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _die_with_parent()
    _limit_memory(memory_mb)
    conn = Connection(sock.detach())
    try:
        worker_loop(conn)
    finally:
        conn.close()


# One comparison of each common kind: math-verify compiles its regexes, the LaTeX parser builds
# its tables and sympy fills its caches on first use (~1 s in all). Done here once, every
# forked worker starts warm, and a replacement's first comparison is not what times out.
_WARM_UP = [
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("\\frac{\\pi}{6}", "30"),
    ("(1, 3]", "1 < x \\le 3"),
    ("\\{1, 2\\}", "2, 1"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ("y = 2x + 3", "y = 3 + 2x"),
    ("\\text{(C)}", "C"),
]


def _warm_up() -> None:
    from qwen25_rl.reward.math_sympy import compare

    for gold, pred in _WARM_UP:
        compare(pred, gold)
    from qwen25_rl.reward.math_sympy import parse_gold

    parse_gold.cache_clear()  # warm code paths, not a cache of golds nobody asked for


def main(ctrl_fd: int, memory_mb: int) -> None:
    # Ctrl-C reaches the whole foreground process group; the pool decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Workers are reaped automatically: no zombies, no wait bookkeeping.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the pool died before prctl took effect
        return
    ctrl = socket.socket(fileno=ctrl_fd)
    _warm_up()
    # Forked workers share the zygote's memory copy-on-write. The cyclic GC would visit (and
    # so copy) every inherited object on its first full pass; frozen objects are skipped.
    gc.freeze()
    ctrl.sendall(b"R")
    while True:
        request = ctrl.recv(1)
        if request != b"F":
            return  # EOF or garbage: the pool is gone
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                ctrl.close()
                theirs.close()
                _run_worker(ours, memory_mb)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        ours.close()
        socket.send_fds(ctrl, [str(pid).encode()], [theirs.fileno()])
        theirs.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))

"""MathVerifierPool: batches, hard deadlines, worker replacement, no leaked processes.

These start real worker processes (a zygote and its forks): about 1 s for the zygote to
import sympy, milliseconds per worker after that.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from bounds import SLACK_S

from qwen25_rl.reward.math import MathStatus, MathVerifierPool

# sympy works on this for minutes (expanding a 1000th power), in interruptible Python code.
# Interruptible (Python-level sympy) and long: ~10-25 s on this machine without a deadline.
SLOW = ("\\boxed{(x+1)^{4000}}", "x^{4000}+1")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line for line in f)  # zombie = exited
    except (FileNotFoundError, ProcessLookupError):  # reading a vanishing process raises ESRCH
        return True


def _wait_gone(pids: list[int], timeout_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [p for p in pids if not _gone(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return alive


@pytest.fixture(scope="module")
def pool():
    with MathVerifierPool(num_workers=2, timeout_s=2.0) as p:
        yield p


def test_batch_results_come_back_in_order_with_the_deciding_path(pool):
    responses = ["#### 18", "\\boxed{2\\sqrt{2}}", "\\boxed{7}", "\\boxed{\\frac{\\pi}{2}}", "no answer here at all, sorry"]
    golds = ["18", "\\sqrt{8}", "8", "\\frac{\\pi}{3}", "1"]
    scores = pool.score_batch(responses, golds)
    assert [s.status for s in scores] == [
        MathStatus.CORRECT,
        MathStatus.CORRECT,
        MathStatus.WRONG,
        MathStatus.WRONG,
        MathStatus.NO_ANSWER,
    ]
    assert [s.path for s in scores] == ["exact", "sympy", "numeric", "sympy", "none"]


def test_numeric_answers_never_start_a_worker_process():
    with MathVerifierPool(num_workers=2) as p:
        scores = p.score_batch(["#### 1,200", "The answer is 3.", "\\boxed{\\frac{1}{2}}"], ["1200", "4", "0.5"])
        assert [s.correct for s in scores] == [True, False, True]
        assert p.process_ids() == []


def test_soft_deadline_reports_timeout_and_keeps_the_worker():
    with MathVerifierPool(num_workers=1, timeout_s=1.0) as p:
        assert p.score("\\boxed{\\sqrt{8}}", "2\\sqrt{2}").correct
        before = p.process_ids()
        started = time.monotonic()
        score = p.score(*SLOW)
        assert time.monotonic() - started < 1.0 + SLACK_S
        assert score.status is MathStatus.TIMEOUT and not score.correct
        assert p.process_ids() == before and p.counts["killed"] == 0


def test_hard_deadline_kills_and_replaces_a_worker_that_does_not_answer():
    # No in-worker SIGALRM: the worker behaves like one stuck in C code and must be killed.
    with MathVerifierPool(num_workers=1, timeout_s=1.0, soft_deadline_fraction=None) as p:
        assert p.score("\\boxed{\\sqrt{8}}", "2\\sqrt{2}").correct
        zygote, old_worker = p.process_ids()
        started = time.monotonic()
        score = p.score(*SLOW)
        assert time.monotonic() - started < 1.0 + SLACK_S
        assert score.status is MathStatus.TIMEOUT and "killed" in score.detail
        assert p.counts["killed"] == 1
        assert _wait_gone([old_worker]) == []
        assert p.process_ids()[0] == zygote and p.process_ids()[1] != old_worker
        assert p.score("\\boxed{\\sqrt{8}}", "2\\sqrt{2}").correct  # the replacement works


def test_requests_queued_behind_a_killed_one_are_answered_by_the_replacement():
    with MathVerifierPool(num_workers=1, timeout_s=1.0, soft_deadline_fraction=None) as p:
        assert p.score("\\boxed{\\sqrt{8}}", "2\\sqrt{2}").correct
        started = time.monotonic()
        scores = p.score_batch(
            [SLOW[0], "\\boxed{\\sqrt{8}}", SLOW[0], "\\boxed{\\sqrt{3}}"],
            [SLOW[1], "2\\sqrt{2}", SLOW[1], "\\sqrt{2}"],
        )
        assert [s.status for s in scores] == [MathStatus.TIMEOUT, MathStatus.CORRECT, MathStatus.TIMEOUT, MathStatus.WRONG]
        assert time.monotonic() - started < 2 * 1.0 + SLACK_S
        assert p.counts["killed"] == 2


def test_a_queued_request_gets_its_full_deadline_after_the_one_before():
    # One worker, two slow requests in its queue. Each ends by its own soft deadline (0.6 s
    # after *it* starts), so neither is killed; a clock started at the send would kill the
    # second at 1.0 s, before its soft deadline at ~1.2 s.
    with MathVerifierPool(num_workers=1, timeout_s=1.0, soft_deadline_fraction=0.6) as p:
        assert p.score("\\boxed{\\sqrt{8}}", "2\\sqrt{2}").correct
        scores = p.score_batch([SLOW[0], SLOW[0]], [SLOW[1], SLOW[1]])
        assert [s.status for s in scores] == [MathStatus.TIMEOUT, MathStatus.TIMEOUT]
        assert all("exceeded" in s.detail for s in scores) and p.counts["killed"] == 0


def test_worker_killed_mid_comparison_is_retried_in_a_fresh_worker():
    # Killed from outside (not the answer's doing): the pair is tried again and gets its own
    # verdict, here the timeout of the slow pair, not an error.
    with MathVerifierPool(num_workers=1, timeout_s=2.0) as p:
        assert p.score("\\boxed{\\sqrt{8}}", "2\\sqrt{2}").correct
        victim = p.process_ids()[1]
        threading.Timer(0.3, os.kill, (victim, 9)).start()
        score = p.score(*SLOW)
        assert score.status is MathStatus.TIMEOUT and p.counts["worker_died"] == 1
        assert p.score("\\boxed{\\sqrt{8}}", "2\\sqrt{2}").correct


def test_an_answer_that_kills_the_worker_twice_is_wrong_not_an_error():
    # Stands in for an answer that crashes the verifier: every worker that picks it up dies.
    with MathVerifierPool(num_workers=1, timeout_s=5.0) as p:
        assert p.score("\\boxed{\\sqrt{8}}", "2\\sqrt{2}").correct
        killed: list[int] = []

        def kill_each_new_worker():
            deadline = time.monotonic() + 10
            while len(killed) < 2 and time.monotonic() < deadline:
                ids = p.process_ids()
                if len(ids) == 2 and ids[1] not in killed:
                    time.sleep(0.3)  # it is now busy with the slow pair
                    os.kill(ids[1], 9)
                    killed.append(ids[1])
                time.sleep(0.02)

        t = threading.Thread(target=kill_each_new_worker)
        t.start()
        score = p.score(*SLOW)
        t.join()
        assert score.status is MathStatus.WRONG and "twice" in score.detail
        assert p.counts["worker_died"] == 2
        assert p.score("\\boxed{\\sqrt{8}}", "2\\sqrt{2}").correct


def test_worker_killed_while_idle_is_replaced_on_next_use():
    with MathVerifierPool(num_workers=1, timeout_s=5.0) as p:
        assert p.score("\\boxed{\\sqrt{8}}", "2\\sqrt{2}").correct
        victim = p.process_ids()[1]
        os.kill(victim, 9)
        assert _wait_gone([victim]) == []
        assert p.score("\\boxed{\\sqrt{18}}", "3\\sqrt{2}").correct


def test_interrupted_batch_does_not_leak_its_results_into_the_next(monkeypatch):
    import qwen25_rl.reward.math_pool as math_pool

    with MathVerifierPool(num_workers=1, timeout_s=5.0) as p:
        assert p.score("\\boxed{\\sqrt{8}}", "2\\sqrt{2}").correct
        busy_worker = p.process_ids()[1]

        class Interrupted(BaseException):  # stands in for KeyboardInterrupt (pytest reserves that)
            pass

        def interrupted(*args, **kwargs):
            time.sleep(0.2)  # the worker has the request and will answer it
            raise Interrupted

        monkeypatch.setattr(math_pool.multiprocessing.connection, "wait", interrupted)
        with pytest.raises(Interrupted):
            p.score("\\boxed{\\sqrt{2}}", "\\frac{2}{\\sqrt{2}}")  # would come back "correct"
        monkeypatch.undo()
        assert _wait_gone([busy_worker]) == []
        # a fresh worker answers this batch, not the stale "correct" of the interrupted one
        assert p.score("\\boxed{\\sqrt{3}}", "\\frac{2}{\\sqrt{2}}").status is MathStatus.WRONG


def test_close_leaves_no_process_behind():
    p = MathVerifierPool(num_workers=2, timeout_s=1.0)
    p.score_batch([SLOW[0], "\\boxed{\\sqrt{8}}"], [SLOW[1], "2\\sqrt2"])
    pids = p.process_ids()
    assert len(pids) == 3
    p.close()
    assert _wait_gone(pids) == []
    with pytest.raises(RuntimeError, match="closed"):
        p.score("1", "1")


def test_workers_die_with_a_killed_owner_process():
    script = textwrap.dedent(
        """
        import os, sys
        from qwen25_rl.reward.math import MathVerifierPool
        pool = MathVerifierPool(num_workers=2, timeout_s=60.0)
        pool.score_batch(["\\\\boxed{\\\\sqrt{8}}", "\\\\boxed{\\\\sqrt{2}}"], ["2\\\\sqrt2", "\\\\sqrt2"])
        print(" ".join(map(str, pool.process_ids())), flush=True)
        pool.score("\\\\boxed{(x+1)^{1000}}", "x^{1000}+1")  # busy when the owner is killed
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert len(pids) == 3
        time.sleep(0.3)
        owner.kill()
        owner.wait(10)
        assert _wait_gone(pids) == []
    finally:
        owner.kill()
        owner.wait(10)


def test_concurrent_callers_each_get_their_own_results(pool):
    out: dict[int, list[bool]] = {}

    def call(k: int) -> None:
        scores = pool.score_batch([f"\\boxed{{\\sqrt{{{k * k * 2}}}}}", f"#### {k}"], [f"{k}\\sqrt2", f"{k + 1}"])
        out[k] = [s.correct for s in scores]

    threads = [threading.Thread(target=call, args=(k,)) for k in range(2, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == {k: [True, False] for k in range(2, 6)}


def test_mismatched_batch_lengths_are_refused(pool):
    with pytest.raises(ValueError, match="3 responses but 2 gold"):
        pool.score_batch(["1", "2", "3"], ["1", "2"])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="num_workers"):
        MathVerifierPool(num_workers=0)
    with pytest.raises(ValueError, match="timeout_s"):
        MathVerifierPool(timeout_s=0)
    with pytest.raises(ValueError, match="soft_deadline_fraction"):
        MathVerifierPool(soft_deadline_fraction=1.5)


def test_a_forked_child_cannot_use_or_stop_its_parents_workers(pool):
    assert pool.score("\\boxed{\\sqrt{8}}", "2\\sqrt{2}").correct
    before = pool.process_ids()
    pid = os.fork()
    if pid == 0:  # child: refuses to use the pool, and its exit must not stop the workers
        code = 1
        try:
            pool.score("\\boxed{\\sqrt{8}}", "2\\sqrt{2}")
        except RuntimeError as exc:
            code = 0 if "another process" in str(exc) else 2
        finally:
            pool._finalizer()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert pool.score("\\boxed{\\sqrt{18}}", "3\\sqrt{2}").correct
    assert pool.process_ids() == before and pool.counts["workers_replaced"] == 0


def test_workers_run_under_the_address_space_cap():
    with MathVerifierPool(num_workers=1, memory_mb=700) as p:
        assert p.score("\\boxed{\\sqrt{8}}", "2\\sqrt{2}").correct
        with open(f"/proc/{p.process_ids()[1]}/limits") as f:
            line = next(line for line in f if line.startswith("Max address space"))
        assert line.split()[3] == str(700 * 1024 * 1024)


def test_a_killed_zygote_is_restarted_with_fresh_workers():
    with MathVerifierPool(num_workers=2, timeout_s=5.0) as p:
        p.score_batch(["\\boxed{\\sqrt{8}}", "\\boxed{\\sqrt{2}}"], ["2\\sqrt{2}", "\\frac{2}{\\sqrt2}"])
        old = p.process_ids()
        os.kill(old[0], 9)  # the workers die with it (PR_SET_PDEATHSIG)
        assert _wait_gone(old) == []
        scores = p.score_batch(["\\boxed{\\sqrt{18}}", "\\boxed{\\sqrt{3}}"], ["3\\sqrt{2}", "\\sqrt{2}"])
        assert [s.status for s in scores] == [MathStatus.CORRECT, MathStatus.WRONG]
        assert p.counts["zygotes_started"] == 2 and not set(p.process_ids()) & set(old)

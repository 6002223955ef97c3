"""Reward hacks against the code grader: each must earn nothing, for real, in the sandbox."""

from __future__ import annotations

import uuid

import pytest
from sandbox_support import PROBLEM, completion

from qwen25_rl.reward.code import grade_asserts, grade_humaneval, grade_io
from qwen25_rl.sandboxes import run_calls


def he(sb, body: str, mode: str = "all"):
    return grade_humaneval(PROBLEM, completion(body), sandbox=sb, mode=mode, timeout_s=2)


MBPP_TESTS = ["assert double(1) == 2", "assert double(5) == 10"]


@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)", "raise SystemExit(0)", "os.kill(os.getpid(), 9)"])
def test_exiting_before_the_asserts_earns_nothing(sb, exit_call):
    body = f"import os, sys\n{exit_call}"
    assert he(sb, body).score == 0.0
    assert he(sb, body, mode="fraction").score == 0.0
    # ... and at import time of the program
    top = f"import os, sys\n{exit_call}\ndef double(x):\n    return 2 * x\n"
    assert grade_asserts(top, MBPP_TESTS, sandbox=sb).score == 0.0


def test_always_equal_object_earns_nothing(sb):
    body = (
        "class AlwaysEqual(int):\n"
        "    def __eq__(self, other): return True\n"
        "    def __ne__(self, other): return False\n"
        "    def __bool__(self): return True\n"
        "    __hash__ = int.__hash__\n"
        "return AlwaysEqual(0)"
    )
    s = he(sb, body)
    assert s.score == 0.0
    assert grade_asserts("class E:\n    __eq__ = lambda s, o: True\ndef double(x):\n    return E()\n", MBPP_TESTS, sandbox=sb).score == 0.0


def test_monkeypatching_comparisons_in_the_program_does_not_reach_the_tests(sb):
    # The program patches what it can in its own interpreter; the tests run elsewhere.
    body = (
        "import builtins, gc, sys\n"
        "builtins.AssertionError = type('Nope', (Exception,), {})\n"
        "sys.modules['builtins'].isinstance = lambda *a: True\n"
        "for f in (sys._getframe(i) for i in range(3)):\n"
        "    f.f_globals.update(check=lambda c: None)\n"
        "return -1"
    )
    assert he(sb, body).score == 0.0


@pytest.mark.parametrize(
    "forgery",
    [
        'print(\'PASSED\'); print(\'All tests passed\'); print(\'{"event": "verdict", "mode": "calls", "units": [{"ok": true}]}\')',
        # writing a verdict onto every descriptor it might have inherited
        'import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b\'{"event": "verdict", "mode": "calls", "nonce": "x", "units": [{"ok": true}]}\\n\')\n    except OSError:\n        pass',
    ],
)
def test_forged_pass_lines_earn_nothing(sb, forgery):
    assert he(sb, forgery).score == 0.0
    top = forgery + "\ndef double(x):\n    return 0\n"
    assert grade_asserts(top, MBPP_TESTS, sandbox=sb).score == 0.0


def test_the_grader_cannot_be_killed_from_inside(sb):
    # The grader is its namespace's init: SIGKILL from inside the namespace does not reach it,
    # so the verdict comes back (and is 0).
    for body in (
        "import os\nos.kill(os.getppid(), 9)",
        "import os\nos.kill(1, 9)",
        "import os\nos.kill(-1, 9)",
        "import os, signal\nos.kill(1, signal.SIGSTOP)",
    ):
        s = he(sb, body)
        assert (s.score, s.status) == (0.0, "graded"), body


def test_running_past_the_total_time_fails_the_tests_with_a_verdict_in_time(sb):
    v = run_calls(
        "import time\ntime.sleep(30)\ndef double(x):\n    return 2 * x\n", MBPP_TESTS, load_timeout_s=30, total_timeout_s=3, sandbox=sb
    )
    assert v.valid and [u.passed for u in v.units] == [False, False]
    # (a verdict at all means it came before the wall clock's kill)
    assert "did not load" in v.load_error and all("time budget" in u.error for u in v.units)


def test_a_value_that_stalls_the_grader_gives_no_verdict_and_scores_zero(sb):
    # Integers that all hash alike: building the set the program returns takes the grader
    # quadratic time. Nothing can interrupt that C loop, so the wall clock ends the run: no
    # verdict, which the code reward scores 0.
    # The program's side of the wire is the program's to rewrite: it sends the set without ever
    # building it (which would cost it the same quadratic time).
    program = (
        "import gc\n"
        "class Colliding:\n    pass\n"
        "def double(x):\n    return Colliding()\n"
        "for o in gc.get_objects():\n"
        "    if isinstance(o, type) and o.__name__ == 'Encoder' and hasattr(o, 'enc'):\n"
        "        def enc(self, x, depth=0, _orig=o.enc):\n"
        "            if type(x) is Colliding:\n"
        "                return {'$set': [k * (2**61 - 1) for k in range(1, 40000)]}\n"
        "            return _orig(self, x, depth)\n"
        "        o.enc = enc\n"
    )
    v = run_calls(program, MBPP_TESTS, total_timeout_s=2, sandbox=sb)
    assert not v.valid and v.units == [] and "no verdict" in v.error
    assert v.exec_result.status == "timeout"
    s = grade_asserts(program, MBPP_TESTS, sandbox=sb, timeout_s=1)
    assert (s.score, s.status) == (0.0, "no-verdict")


def test_the_hidden_tests_cannot_be_read_by_the_program(sb):
    prefix = "QRLHIDDEN"
    marker = prefix + uuid.uuid4().hex
    search = (
        "import gc, os, sys\n"
        "found = set()\n"
        f"P = '{prefix[:4]}' + '{prefix[4:]}'\n"
        "def look(s):\n"
        "    if isinstance(s, (bytes, bytearray)):\n"
        "        s = bytes(s).decode('latin-1')\n"
        "    if isinstance(s, str) and P in s:\n"
        "        i = s.index(P)\n"
        "        found.add(s[i:i + 41])\n"
        "for o in gc.get_objects():\n"
        "    if isinstance(o, dict):\n"
        "        for v in list(o.values()):\n"
        "            look(v)\n"
        "    elif isinstance(o, (list, tuple)):\n"
        "        for v in o:\n"
        "            look(v)\n"
        "    elif type(o).__name__ == 'code':\n"
        "        for c in o.co_consts:\n"
        "            look(c)\n"
        "for fd in range(64):\n"
        "    try:\n"
        "        os.lseek(fd, 0, 0)\n"
        "    except OSError:\n"
        "        pass\n"
        "    try:\n"
        "        look(os.pread(fd, 1 << 20, 0))\n"
        "    except OSError:\n"
        "        pass\n"
        "for root, dirs, files in os.walk('/'):\n"
        "    for name in files:\n"
        "        p = os.path.join(root, name)\n"
        "        if root.startswith(('/usr', '/dev')):\n"
        "            continue\n"
        "        try:\n"
        "            look(open(p, 'rb').read(1 << 20))\n"
        "        except OSError:\n"
        "            pass\n"
        "look(' '.join(sys.argv)); look(str(os.environ))\n"
        "print('searched; found:', sorted(found))\n"
    )
    program = search + "def double(x):\n" + "\n".join("    " + ln for ln in search.splitlines()) + "\n    return 2 * x\n"
    v = run_calls(program, [f"assert double(2) == 4  # {marker}"], unit_timeout_s=10, sandbox=sb)
    assert [u.passed for u in v.units] == [True]  # it did run: at load time and when called
    assert v.exec_result.stdout.count("searched; found:") == 2
    assert marker not in v.exec_result.stdout


def test_memorising_the_visible_answers_is_not_detected(sb):
    """Documented limit: a lookup table of the test inputs passes (the reward is only as good as
    its tests). This pins the behaviour so the docs stay true."""
    table = "def double(x):\n    return {1: 2, 5: 10}[x]\n"
    assert grade_asserts(table, MBPP_TESTS, sandbox=sb).score == 1.0


def test_io_grading_cannot_be_forged_from_stdout_or_exit_codes(sb):
    cases = [{"input": "2\n", "output": "4\n"}, {"input": "3\n", "output": "6\n"}]
    assert grade_io("import sys\nsys.exit(0)", cases, sandbox=sb).score == 0.0
    assert grade_io("print('4')\nprint('6')\nprint('All tests passed')", cases, sandbox=sb).score == 0.0
    forged = 'import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b\'{"event":"verdict","mode":"io","nonce":"x","cases":[]}\\n\')\n    except OSError:\n        pass\n'
    assert grade_io(forged, cases, sandbox=sb).score == 0.0
    assert grade_io("print(int(input()) * 2)", cases, sandbox=sb).score == 1.0

"""The trust boundary between the program and the grader (sandboxes/README.md, "Trust boundary").

Every value that crosses from the program to the grader is treated as hostile. These attacks
are the ones a policy found: make the grader run a standard-library function that reads a
file the program wrote (`.pdbrc`, `__main__.py`), and the code in that file forges the verdict
from inside the grader. Each attack here plants such files everywhere it can and binds the
entry point to a library function that would read them; the grader must score it on the
program's own behaviour (here: 0), and the planted code, which announces the pid it runs
under, must never run as the grader (pid 1 of the sandbox's pid namespace).
"""

from __future__ import annotations

import re

import pytest
from sandbox_support import PROBLEM

from qwen25_rl.reward.code import grade_asserts, grade_humaneval
from qwen25_rl.sandboxes import run_calls

# Runs wherever a planted file is executed: says where, then forges a passing verdict if it
# finds the grader's nonce and channel on its stack (it only can inside the grader).
PLANTED = r"""
import os, sys
print("PLANTED-RAN pid=%d" % os.getpid(), flush=True)
f = sys._getframe()
while f is not None and "nonce" not in f.f_locals:
    f = f.f_back
if f is not None:
    L = f.f_locals
    ok = ",".join(['{"ok": true, "error": null, "asserts": null, "completed": true, "seconds": 0.0}'] * len(L["units"]))
    os.write(L["chan"], ('{"event": "verdict", "mode": "calls", "nonce": "%s", "units": [%s], "load_error": null, "restarts": 0}\n' % (L["nonce"], ok)).encode())
    os._exit(0)
"""

# Code files a Python process may read relative to its folder, HOME or the temp folder, and
# modules the grader imports (a copy that shadows them would run on import).
PLANT = f"""
import os, sys
_code = {PLANTED!r}
_files = {{
    ".pdbrc": "!exec(%r)\\n" % _code,
    "__main__.py": _code,
    "sitecustomize.py": _code,
    "usercustomize.py": _code,
    ".pythonrc.py": _code,
    "math.py": _code,
    "typing.py": _code,
    "collections.py": _code,
    "json.py": _code,
    "x/__main__.py": _code,
}}
for _d in {{os.getcwd(), os.path.expanduser("~"), "/tmp", "/dev/shm", os.environ.get("TMPDIR", "/tmp"), "/", "/sandbox"}}:
    for _name, _text in _files.items():
        _p = os.path.join(_d, _name)
        try:
            os.makedirs(os.path.dirname(_p), exist_ok=True)
            with open(_p, "w") as _fh:
                _fh.write(_text)
        except OSError:
            pass
"""

STRING_PROBLEM = {
    "task_id": "Toy/strings",
    "prompt": 'import math\n\ndef count_vowels(s: str) -> int:\n    """Vowels in s."""\n',
    "entry_point": "count_vowels",
    "canonical_solution": "    return sum(c in 'aeiou' for c in s)\n",
    "test": "\n\ndef check(candidate):\n    assert candidate('hello') == 2\n    assert candidate('.') == 0\n    assert candidate('x') == 0\n    assert candidate('1') == 0\n",
}

# Library objects that read files, the environment or stdin, or run code by name: bound to
# the entry point, they must run in the program's process (where they can only hurt it).
BINDINGS = [
    "pdb.run",
    "pdb.runeval",
    "runpy.run_path",
    "runpy.run_module",
    "importlib.import_module",
    "code.interact",
    "linecache.getline",
    "os.getenv",
    "os.environ.get",
    "open",
    "input",
    "exec",
    "eval",
    "breakpoint",
    "__import__",
    "sys.stdin.read",
]


def _program(binding: str) -> str:
    module = binding.rsplit(".", 1)[0] if "." in binding else None
    imports = f"import {module.split('.')[0]}\n" if module else ""
    return f"{imports}{PLANT}\ncount_vowels = {binding}\n"


def _planted_pids(stdout: str) -> set[int]:
    return {int(p) for p in re.findall(r"PLANTED-RAN pid=(\d+)", stdout)}


@pytest.mark.parametrize("binding", BINDINGS)
def test_entry_point_bound_to_a_library_object_runs_in_the_programs_process(sb, binding):
    program = _program(binding)
    unit = STRING_PROBLEM["test"] + "\ncheck(count_vowels)\n"
    v = run_calls(program, [unit], prelude=STRING_PROBLEM["prompt"], expose=["count_vowels"], unit_timeout_s=3, sandbox=sb)
    assert v.valid, v.error
    assert [u.passed for u in v.units] == [False]
    assert 1 not in _planted_pids(v.exec_result.stdout), v.exec_result.stdout[-2000:]
    # the same through the HumanEval and MBPP entry points of the code reward
    assert grade_humaneval(STRING_PROBLEM, program, sandbox=sb, timeout_s=3).score == 0.0
    mbpp = [f"assert count_vowels({arg!r}) == 0" for arg in (".", "x", "1")]
    assert grade_asserts(program, mbpp, sandbox=sb, timeout_s=3).score == 0.0


def test_the_planted_code_is_live_but_never_runs_as_the_grader(sb):
    """The attack works where it is allowed to (pdb really executes the planted .pdbrc, in the
    program's process), so the previous test's 'pid 1 never' is not vacuous."""
    seen: set[int] = set()
    for binding in ("pdb.run", "runpy.run_path", "importlib.import_module"):
        unit = STRING_PROBLEM["test"] + "\ncheck(count_vowels)\n"
        v = run_calls(_program(binding), [unit], prelude=STRING_PROBLEM["prompt"], expose=["count_vowels"], unit_timeout_s=3, sandbox=sb)
        seen |= _planted_pids(v.exec_result.stdout)
    assert seen and 1 not in seen, seen


def test_a_binding_that_computes_the_right_answer_is_graded_on_that(sb):
    # Graded on the program's own behaviour: `len` of the test's argument is what it returns.
    problem = dict(PROBLEM, prompt='def double(x):\n    """Twice x."""\n', test="def check(candidate):\n    assert candidate('ab') == 2\n")
    assert grade_humaneval(problem, "import operator\ndouble = len\n", sandbox=sb).score == 1.0
    assert grade_asserts("double = len\n", ["assert double('ab') == 2", "assert double('abc') == 3"], sandbox=sb).score == 1.0


def test_the_grader_works_in_a_folder_and_home_the_program_cannot_write(sb):
    probe = "import os\ndef where():\n    return [os.getcwd(), os.environ.get('HOME'), os.access('.', os.W_OK)]\n"
    unit = (
        "import os\n"
        "assert where() == ['/tmp', '/tmp', True]\n"  # the program's process: a normal, writable place
        "assert os.getcwd() == '/sandbox' and os.environ['HOME'] == '/sandbox'\n"
        "assert not os.access('.', os.W_OK)\n"
    )
    v = run_calls(probe, [unit], sandbox=sb)
    assert [(u.passed, u.error) for u in v.units] == [(True, None)]


@pytest.mark.parametrize("when", ["load", "call"])
def test_signals_to_pid_1_do_not_reach_the_grader(sb, when):
    sigs = "SIGINT SIGTERM SIGHUP SIGQUIT SIGUSR1 SIGUSR2 SIGALRM SIGPIPE SIGCHLD SIGCONT SIGSTOP SIGKILL"
    send = f"import os, signal, time\nfor _s in '{sigs}'.split():\n    os.kill(1, getattr(signal, _s))\ntime.sleep(0.2)\n"
    if when == "load":
        right, wrong = send + "def double(x):\n    return 2 * x\n", send + "def double(x):\n    return 0\n"
    else:
        body = "\n".join("    " + line for line in send.splitlines())
        right = f"def double(x):\n{body}\n    return 2 * x\n"
        wrong = f"def double(x):\n{body}\n    return 0\n"
    tests = ["assert double(1) == 2", "assert double(5) == 10"]
    good, bad = grade_asserts(right, tests, sandbox=sb), grade_asserts(wrong, tests, sandbox=sb)
    assert (good.score, good.status) == (1.0, "graded"), good.error
    assert (bad.score, bad.status) == (0.0, "graded"), bad.error


def test_stop_iteration_from_the_program_does_not_end_a_tests_iteration_early(sb):
    # all() over a map that a StopIteration ends at once would hold vacuously.
    program = "def double(x):\n    raise StopIteration\n"
    s = grade_asserts(program, ["assert all(map(double, [1, 2, 3]))", "assert list(map(double, [1])) == []"], sandbox=sb)
    assert (s.score, s.status) == (0.0, "graded")


def test_names_the_program_sends_cannot_replace_grader_internals(sb):
    # The program controls its whole process, including the harness code there: here it makes
    # its list of names carry `__builtins__`, a mapping whose `set` is the program's (it always
    # returns {6}), so that `set(double(3)) == set([6])` would hold for a wrong double. The
    # grader drops dunder and non-identifier names: the tests' builtins stay the grader's.
    program = (
        "import gc\n"
        "def double(x):\n    return [0]\n"
        "def fake_set(*args):\n    return {6}\n"
        "def _fake(ns, enc):\n"
        "    return {'__builtins__': {'$dict': [['set', enc.to_ref(ns['fake_set'])]]}, 'not an identifier': 1, 'double': enc.to_ref(ns['double'])}\n"
        "for f in gc.get_objects():\n"
        "    if type(f) is type(_fake) and f.__name__ == '_describe':\n"
        "        f.__code__ = _fake.__code__\n"
    )
    s = grade_asserts(program, ["assert set(double(3)) == set([6])"], sandbox=sb)
    assert (s.score, s.status) == (0.0, "graded"), s.tests
    honest = program.replace("return [0]", "return [2 * x]")
    s = grade_asserts(honest, ["assert set(double(3)) == set([6])"], sandbox=sb)
    assert (s.score, s.status) == (1.0, "graded"), s.tests


def _rows(folder, name):
    import json

    with open(folder / name) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
@pytest.mark.parametrize("binding", ["pdb.run", "runpy.run_path"])
def test_no_humaneval_or_mbpp_problem_can_be_passed_by_binding_the_entry_point_to_a_library_reader(sb, eval_data_dir, binding):
    """The attack on every real problem: before the grader called every program-chosen object
    in its own process, this scored 1.0 on about a fifth of HumanEval and a tenth of MBPP.
    Now it is graded on what the library function returns in the program's process: nothing
    passes, except an assert that expects what it returns (`== None` for pdb.run), which the
    same binding earns without any planted file too."""
    from concurrent.futures import ThreadPoolExecutor

    from qwen25_rl.reward.code_extract import called_names

    module = binding.split(".")[0]
    humaneval = _rows(eval_data_dir, "humaneval.jsonl")
    mbpp = _rows(eval_data_dir, "mbpp.jsonl")

    def attack_humaneval(p, plant=PLANT):
        program = f"import {module}\n{plant}\n{p['entry_point']} = {binding}\n"
        return grade_humaneval(p, program, sandbox=sb, timeout_s=3).score

    def attack_mbpp(row, plant=PLANT):
        names = [n for n in sorted(called_names(row["test_list"])) if n.isidentifier()]
        program = f"import {module}\n{plant}\n" + "".join(f"{n} = {binding}\n" for n in names)
        return grade_asserts(program, row["test_list"], setup_code=row["test_setup_code"], sandbox=sb, timeout_s=3).score

    with ThreadPoolExecutor(sb.slots) as ex:
        he = list(ex.map(attack_humaneval, humaneval))
        mb = list(ex.map(attack_mbpp, mbpp))
    assert [p["task_id"] for p, score in zip(humaneval, he) if score > 0] == []
    assert [r["task_id"] for r, score in zip(mbpp, mb) if score == 1.0] == []
    partial = [(r, score) for r, score in zip(mbpp, mb) if score > 0]
    assert [(r["task_id"], score) for r, score in partial if attack_mbpp(r, plant="") != score] == []

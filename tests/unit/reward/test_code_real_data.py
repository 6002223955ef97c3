"""The code reward on the real HumanEval data (../shared/data), in the real sandbox: a one-token bug
in a canonical solution fails as it does in plain Python. That every HumanEval canonical solution
and every MBPP reference program passes is checked once, end to end through `qwen25-rl eval
--responses`: tests/integration/stages/test_evaluate_real_data.py."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tokenize
from concurrent.futures import ThreadPoolExecutor

import pytest
from environment import needs_root

from qwen25_rl.reward.code import grade_humaneval

pytestmark = [pytest.mark.slow, needs_root]

# One-token bugs: an operator, keyword, literal or called name replaced by another.
SWAPS = {
    "<": ">=",
    ">": "<=",
    "<=": ">",
    ">=": "<",
    "==": "!=",
    "!=": "==",
    "+": "-",
    "-": "+",
    "*": "+",
    "//": "*",
    "/": "*",
    "%": "//",
    "+=": "-=",
    "-=": "+=",
    "*=": "+=",
    "and": "or",
    "or": "and",
    "True": "False",
    "False": "True",
    "in": "not in",
    "not": "",
    "is": "is not",
    "min": "max",
    "max": "min",
    "any": "all",
    "all": "any",
    "sorted": "list",
    "reversed": "iter",
    "lower": "upper",
    "upper": "lower",
    "swapcase": "lower",
    "len": "bool",
    "sum": "len",
    "abs": "int",
    "append": "remove",
    "break": "pass",
    "continue": "pass",
}


def one_token_mutants(src: str) -> list[tuple[str, str]]:
    """(mutated source, description), last token first (the return line is usually last)."""
    lines = src.splitlines(keepends=True)
    toks = list(tokenize.generate_tokens(io.StringIO(src).readline))
    out = []
    for i, t in enumerate(toks):
        rep = None
        if t.type in (tokenize.OP, tokenize.NAME) and t.string in SWAPS:
            rep = SWAPS[t.string]
        elif t.type == tokenize.NUMBER and t.string.isdigit():
            rep = str(int(t.string) + 1)
        elif t.type == tokenize.STRING and t.string in ("''", '""'):
            rep = "' '"
        elif t.type == tokenize.NAME and i + 1 < len(toks) and toks[i + 1].string == "(" and (i == 0 or toks[i - 1].string != "def"):
            rep = "str"  # a call to the wrong function
        (r, c), (r2, c2) = t.start, t.end
        if rep is None or r != r2:
            continue
        line = lines[r - 1]
        out.append(("".join(lines[: r - 1] + [line[:c] + rep + line[c2:]] + lines[r:]), f"line {r}: {t.string!r} -> {rep!r}"))
    return out[::-1]


def plain_python_passes(problem: dict, completion: str) -> bool:
    """The reference oracle: HumanEval's own recipe (prompt + completion + test + check) in a
    plain interpreter. The code is the dataset's canonical solution with one token changed."""
    program = problem["prompt"] + completion + "\n" + problem["test"] + f"\ncheck({problem['entry_point']})\n"
    cmd = ["prlimit", "--as=1073741824", "--cpu=10", "--", sys.executable, "-I", "-c", program]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="module")
def sb():
    from qwen25_rl.sandboxes import Sandbox, SandboxConfig

    s = Sandbox(SandboxConfig(slots=8))
    yield s
    s.close()


@pytest.fixture(scope="module")
def humaneval(eval_data_dir):
    with open(eval_data_dir / "humaneval.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 164
    return rows


def test_humaneval_solutions_with_a_one_token_bug_fail(sb, humaneval):
    """For every problem: the first one-token change that plain Python's HumanEval run rejects
    must be rejected by the sandboxed grader too; the changes plain Python accepts on the way
    (equivalent mutants, e.g. 'ascii' -> '~ascii' names the same codec) must be accepted too."""

    def judge(problem):
        agreed, bug = [], None
        for mutant, desc in one_token_mutants(problem["canonical_solution"]):
            plain = plain_python_passes(problem, mutant)
            ours = grade_humaneval(problem, mutant, sandbox=sb, timeout_s=10).score == 1.0
            agreed.append((desc, plain, ours))
            if not plain:
                bug = desc
                break
        return problem["task_id"], bug, agreed

    with ThreadPoolExecutor(sb.slots) as ex:
        results = list(ex.map(judge, humaneval))
    no_bug = [tid for tid, bug, _ in results if bug is None]
    disagreements = [(tid, d) for tid, _, agreed in results for d in agreed if d[1] != d[2]]
    assert no_bug == [] and disagreements == []

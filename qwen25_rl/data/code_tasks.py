"""Small Python function tasks with tests, in MBPP's row format.

Each task asks for one function (`text`), has a reference solution (`code`) and assert-based
tests (`test_list`), like MBPP, so the code-execution reward and the real MBPP/HumanEval
evaluation read both the same way. Expected values in the tests are computed here in Python
from the task's meaning, independently of the reference solution's source text; the unit
tests run every reference solution against its tests.

Identity is the canonical key (family, function name, parameters); the train / held-out split
is a hash of it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from qwen25_rl.data.splits import problem_id, split_of


@dataclass(frozen=True)
class CodeTask:
    key: str
    family: str
    text: str
    entry_point: str
    code: str
    test_list: tuple[str, ...]
    split: str = "train"
    task_id: str = field(default="")

    def to_row(self) -> dict:
        """An MBPP-shaped JSONL row plus entry_point and family."""
        return {
            "task_id": self.task_id,
            "family": self.family,
            "text": self.text,
            "code": self.code,
            "test_list": list(self.test_list),
            "test_setup_code": "",
            "entry_point": self.entry_point,
        }


# Each family: (rng) -> (function name, parameters, text, code, reference callable, input maker)
Family = Callable[[random.Random], tuple]


def _add_constant(rng: random.Random):
    k = rng.randint(1, 99)
    fn = rng.choice([f"add_{k}", f"plus_{k}", f"increase_by_{k}"])
    text = f"Write a function {fn}(x) that returns the number x plus {k}."
    code = f"def {fn}(x):\n    return x + {k}\n"
    return fn, (k,), text, code, (lambda x: x + k), (lambda r: (r.randint(-50, 200),))


def _multiply_constant(rng: random.Random):
    k = rng.randint(2, 12)
    fn = rng.choice([f"times_{k}", f"multiply_by_{k}", f"scale_{k}"])
    text = f"Write a function {fn}(x) that returns the number x multiplied by {k}."
    code = f"def {fn}(x):\n    return x * {k}\n"
    return fn, (k,), text, code, (lambda x: x * k), (lambda r: (r.randint(-20, 50),))


def _repeat_string(rng: random.Random):
    k = rng.randint(2, 5)
    fn = rng.choice([f"repeat_{k}", f"repeat_string_{k}"])
    text = f"Write a function {fn}(s) that returns the string s repeated {k} times."
    code = f"def {fn}(s):\n    return s * {k}\n"
    words = ["ab", "xyz", "hi", "q", "cat", ""]
    return fn, (k,), text, code, (lambda s: s * k), (lambda r: (r.choice(words),))


def _count_char(rng: random.Random):
    c = rng.choice("aeiostrn")
    fn = rng.choice([f"count_{c}", f"number_of_{c}"])
    text = f"Write a function {fn}(s) that returns how many times the character '{c}' appears in the string s."
    code = f"def {fn}(s):\n    return s.count({c!r})\n"
    words = ["banana", "tomato", "street", "onion", "test", "rain", "", "assist"]
    return fn, (c,), text, code, (lambda s: s.count(c)), (lambda r: (r.choice(words),))


def _sum_greater(rng: random.Random):
    k = rng.randint(0, 20)
    fn = rng.choice([f"sum_above_{k}", f"sum_greater_than_{k}"])
    text = f"Write a function {fn}(numbers) that returns the sum of the numbers in the list that are greater than {k}."
    code = f"def {fn}(numbers):\n    return sum(n for n in numbers if n > {k})\n"

    def make(r: random.Random):
        return ([r.randint(-5, 40) for _ in range(r.randint(0, 6))],)

    return fn, (k,), text, code, (lambda xs: sum(n for n in xs if n > k)), make


def _is_divisible(rng: random.Random):
    k = rng.randint(2, 13)
    fn = rng.choice([f"divisible_by_{k}", f"is_multiple_of_{k}"])
    text = f"Write a function {fn}(n) that returns True if the integer n is divisible by {k} and False otherwise."
    code = f"def {fn}(n):\n    return n % {k} == 0\n"
    return fn, (k,), text, code, (lambda n: n % k == 0), (lambda r: (r.randint(0, 120),))


def _clamp(rng: random.Random):
    lo = rng.randint(-10, 10)
    hi = lo + rng.randint(1, 30)
    fn = rng.choice([f"clamp_{lo}_{hi}".replace("-", "m"), f"limit_{lo}_{hi}".replace("-", "m")])
    text = f"Write a function {fn}(x) that returns x limited to the range from {lo} to {hi} inclusive."
    code = f"def {fn}(x):\n    return max({lo}, min({hi}, x))\n"
    return fn, (lo, hi), text, code, (lambda x: max(lo, min(hi, x))), (lambda r: (r.randint(lo - 20, hi + 20),))


FAMILIES: dict[str, Family] = {
    "add_constant": _add_constant,
    "multiply_constant": _multiply_constant,
    "repeat_string": _repeat_string,
    "count_char": _count_char,
    "sum_greater": _sum_greater,
    "is_divisible": _is_divisible,
    "clamp": _clamp,
}


def sample_task(rng: random.Random, heldout_fraction: float, n_tests: int = 3, families: tuple[str, ...] | None = None) -> CodeTask:
    family = rng.choice(families or tuple(FAMILIES))
    fn, params, text, code, ref, make_input = FAMILIES[family](rng)
    tests = []
    for _ in range(n_tests):
        args = make_input(rng)
        tests.append(f"assert {fn}({', '.join(repr(a) for a in args)}) == {ref(*args)!r}")
    key = f"{family}|{fn}|{','.join(map(str, params))}"
    return CodeTask(
        key=key,
        family=family,
        text=text,
        entry_point=fn,
        code=code,
        test_list=tuple(tests),
        split=split_of(key, heldout_fraction),
        task_id=problem_id(key),
    )


def generate_tasks(
    n_train: int, n_heldout: int, *, seed: int = 0, heldout_fraction: float = 0.2, families: tuple[str, ...] | None = None
) -> tuple[list[CodeTask], list[CodeTask]]:
    """`n_train` and `n_heldout` distinct tasks, disjoint by key; deterministic in the arguments."""
    if families:
        unknown = set(families) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown code task families {sorted(unknown)}; known: {sorted(FAMILIES)}")
    rng = random.Random(seed)
    seen: set[str] = set()
    out: dict[str, list[CodeTask]] = {"train": [], "heldout": []}
    want = {"train": n_train, "heldout": n_heldout}
    for _ in range(200 * (n_train + n_heldout) + 1000):
        if all(len(out[s]) >= want[s] for s in want):
            break
        t = sample_task(rng, heldout_fraction, families=families)
        if t.key in seen or len(out[t.split]) >= want[t.split]:
            continue
        seen.add(t.key)
        out[t.split].append(t)
    else:
        raise ValueError(
            f"could not draw {n_train} train + {n_heldout} held-out distinct code tasks "
            f"(got {len(out['train'])} + {len(out['heldout'])}); the task space is too small for these counts"
        )
    return out["train"], out["heldout"]

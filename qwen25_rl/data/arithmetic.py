"""Arithmetic word problems with GSM8K-format solutions.

Each problem is a short story with one to three arithmetic steps. The solution is written the
way GSM8K writes it: one line per step with a calculator annotation `<<a+b=c>>`, then a final
line `#### N`. So the same graders, rewards and prompts serve this data and real GSM8K.

A problem's identity is its canonical key (family and question text); train / held-out
assignment is a hash of that key (`qwen25_rl.data.splits`), i.e. by problem.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from qwen25_rl.data.splits import problem_id, split_of

# (name, pronoun) pairs; the pronoun starts the follow-up sentences.
NAMES = [
    tuple(pair.split(":"))
    for pair in (
        "Anna:She Ben:He Carla:She David:He Emma:She Farid:He Grace:She Hiro:He Ines:She Jonas:He "
        "Kira:She Liam:He Maya:She Noah:He Olga:She Pablo:He Rosa:She Sam:He Tara:She Umar:He"
    ).split()
]
ITEMS = "apples books marbles pencils stickers cookies shells coins cards balloons stamps eggs flowers buttons candles".split()
CONTAINERS = ["boxes", "bags", "baskets", "packs", "jars"]


@dataclass(frozen=True)
class Difficulty:
    """How hard problems are: operand range and which families (step counts) appear."""

    max_operand: int = 20
    families: tuple[str, ...] = ("add", "sub", "mul", "add_sub", "share")
    # Multiplication and division use a smaller range so products stay readable.
    max_factor: int = 10

    def __post_init__(self):
        if self.max_operand < 2 or self.max_factor < 2:
            raise ValueError("max_operand and max_factor must be at least 2")
        unknown = set(self.families) - set(FAMILIES)
        if unknown or not self.families:
            raise ValueError(f"unknown arithmetic families {sorted(unknown)}; known: {sorted(FAMILIES)}")


@dataclass(frozen=True)
class ArithmeticProblem:
    key: str
    family: str
    question: str
    solution: str  # GSM8K format: steps with <<expr=value>> annotations, then "#### N"
    final_answer: int
    split: str = "train"
    id: str = field(default="")

    def to_row(self) -> dict:
        """A GSM8K-shaped JSONL row (question, answer) plus id and family."""
        return {"id": self.id, "family": self.family, "question": self.question, "answer": self.solution}


def _step(a: int, op: str, b: int) -> tuple[str, int]:
    value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
    return f"{a} {op} {b} = <<{a}{op}{b}={value}>>{value}", value


def _add(rng: random.Random, d: Difficulty, who, item, friend, box):
    a, b = rng.randint(2, d.max_operand), rng.randint(2, d.max_operand)
    name, pron = who
    q = f"{name} has {a} {item}. {pron} gets {b} more {item}. How many {item} does {name} have now?"
    s, v = _step(a, "+", b)
    return (a, b), q, [f"{name} has {s} {item} now."], v


def _sub(rng: random.Random, d: Difficulty, who, item, friend, box):
    a = rng.randint(3, d.max_operand)
    b = rng.randint(1, a - 1)
    name, pron = who
    q = f"{name} has {a} {item}. {pron} gives {b} {item} to {friend[0]}. How many {item} does {name} have left?"
    s, v = _step(a, "-", b)
    return (a, b), q, [f"{name} has {s} {item} left."], v


def _mul(rng: random.Random, d: Difficulty, who, item, friend, box):
    a, b = rng.randint(2, d.max_factor), rng.randint(2, d.max_factor)
    name, _ = who
    q = f"{name} buys {a} {box} of {item}. Each of the {box} holds {b} {item}. How many {item} does {name} buy?"
    s, v = _step(a, "*", b)
    return (a, b), q, [f"{name} buys {s} {item}."], v


def _add_sub(rng: random.Random, d: Difficulty, who, item, friend, box):
    a, b = rng.randint(2, d.max_operand), rng.randint(2, d.max_operand)
    c = rng.randint(1, a + b - 1)
    name, pron = who
    q = (
        f"{name} has {a} {item}. {pron} gets {b} more {item} and then gives {c} {item} to {friend[0]}. "
        f"How many {item} does {name} have now?"
    )
    s1, v1 = _step(a, "+", b)
    s2, v2 = _step(v1, "-", c)
    return (a, b, c), q, [f"After getting more, {name} has {s1} {item}.", f"After giving some away, {name} has {s2} {item}."], v2


def _share(rng: random.Random, d: Difficulty, who, item, friend, box):
    each, k = rng.randint(2, d.max_factor), rng.randint(2, d.max_factor)
    total = each * k
    name, _ = who
    q = f"{name} shares {total} {item} equally among {k} friends. How many {item} does each friend get?"
    s, v = _step(total, "/", k)
    return (total, k), q, [f"Each friend gets {s} {item}."], v


FAMILIES: dict[str, Callable] = {"add": _add, "sub": _sub, "mul": _mul, "add_sub": _add_sub, "share": _share}


def sample_problem(rng: random.Random, difficulty: Difficulty, heldout_fraction: float) -> ArithmeticProblem:
    family = rng.choice(difficulty.families)
    who = rng.choice(NAMES)
    friend = rng.choice([n for n in NAMES if n != who])
    item, box = rng.choice(ITEMS), rng.choice(CONTAINERS)
    _numbers, question, steps, value = FAMILIES[family](rng, difficulty, who, item, friend, box)
    # The question text determines the problem (the answer is a function of it), so it is the
    # identity: two draws that differ only in unused details (e.g. the friend of an addition
    # problem) are the same problem and can never land in different splits.
    key = f"{family}|{question}"
    solution = "\n".join(steps) + f"\n#### {value}"
    return ArithmeticProblem(
        key=key,
        family=family,
        question=question,
        solution=solution,
        final_answer=value,
        split=split_of(key, heldout_fraction),
        id=problem_id(key),
    )


def generate_problems(
    n_train: int, n_heldout: int, *, seed: int = 0, difficulty: Difficulty | None = None, heldout_fraction: float = 0.2
) -> tuple[list[ArithmeticProblem], list[ArithmeticProblem]]:
    """`n_train` and `n_heldout` distinct problems; no problem is in both lists.

    Deterministic in its arguments. Raises ValueError when the difficulty's problem space is
    too small to supply that many distinct problems.
    """
    d = difficulty or Difficulty()
    rng = random.Random(seed)
    seen: set[str] = set()
    out: dict[str, list[ArithmeticProblem]] = {"train": [], "heldout": []}
    want = {"train": n_train, "heldout": n_heldout}
    budget = 200 * (n_train + n_heldout) + 1000
    for _ in range(budget):
        if all(len(out[s]) >= want[s] for s in want):
            break
        p = sample_problem(rng, d, heldout_fraction)
        if p.key in seen or len(out[p.split]) >= want[p.split]:
            continue
        seen.add(p.key)
        out[p.split].append(p)
    else:
        raise ValueError(
            f"could not draw {n_train} train + {n_heldout} held-out distinct arithmetic problems "
            f"(got {len(out['train'])} + {len(out['heldout'])}); raise max_operand or lower the counts"
        )
    return out["train"], out["heldout"]


_ANSWER_RE = re.compile(r"####\s*(-?[\d,]*\.?\d+)")


def parse_final_answer(text: str) -> int | float | None:
    """The number after the first `#### ` in GSM8K-format text, or None.

    This reads the data format (and a model's answer in that format); it is not the reward
    function's answer extraction, which handles many more formats.
    """
    m = _ANSWER_RE.search(text)
    if m is None:
        return None
    raw = m.group(1).replace(",", "")
    try:
        value = float(raw)
    except ValueError:
        return None
    return int(value) if value.is_integer() else value

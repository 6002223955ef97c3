"""The tiny pipeline's synthetic data set, written as plain JSONL files.

One call (`write_synthetic_dataset`) draws arithmetic problems and code tasks, splits them by
problem into train / held-out, and writes every file the stages read:

    arithmetic_{train,heldout}.jsonl   GSM8K rows  (id, family, question, answer)
    code_{train,heldout}.jsonl         MBPP rows   (task_id, text, code, test_list, entry_point)
    pretrain_arithmetic.jsonl          {"text"} documents from TRAIN arithmetic problems
    pretrain_code.jsonl                {"text"} documents from TRAIN code tasks
    pretrain_heldout.jsonl             {"text"} documents from HELD-OUT problems (eval loss only)
    sft_{train,heldout}.jsonl          {"messages"} ChatML conversations (some multi-turn)
    manifest.json                      parameters and row counts

The pretraining corpus is drawn from the same distributions as the tasks, but only from
training problems: no held-out question appears in any training file.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qwen25_rl.data.arithmetic import ArithmeticProblem, Difficulty, generate_problems
from qwen25_rl.data.code_tasks import CodeTask, generate_tasks

# How a bare (non-chat) model sees a problem in the pretraining text. The pretrained model is
# evaluated with the same framing, so comparing it with the SFT model is fair.
ARITHMETIC_DOC_PROMPT = "Question: {question}\nAnswer:"


def arithmetic_document(problems: list[ArithmeticProblem]) -> str:
    """A worksheet: one or more problems with worked solutions."""
    return "\n\n".join(ARITHMETIC_DOC_PROMPT.format(question=p.question) + " " + p.solution for p in problems) + "\n"


def code_document(task: CodeTask) -> str:
    """A small module: the task as a comment, the solution, and its tests."""
    return f"# {task.text}\n{task.code}\n" + "\n".join(task.test_list) + "\n"


def arithmetic_messages(p: ArithmeticProblem) -> list[dict[str, str]]:
    return [{"role": "user", "content": p.question}, {"role": "assistant", "content": p.solution}]


def code_user_prompt(task: CodeTask) -> str:
    return f"{task.text}\nYour code should pass this test:\n{task.test_list[0]}"


def code_messages(t: CodeTask) -> list[dict[str, str]]:
    return [{"role": "user", "content": code_user_prompt(t)}, {"role": "assistant", "content": f"```python\n{t.code}```"}]


def conversations(problems: list[ArithmeticProblem], tasks: list[CodeTask], rng: random.Random, multi_turn_fraction: float) -> list[dict]:
    """Chat rows; a `multi_turn_fraction` of them chain two exchanges in one conversation."""
    singles = [arithmetic_messages(p) for p in problems] + [code_messages(t) for t in tasks]
    rng.shuffle(singles)
    rows: list[dict] = []
    i = 0
    while i < len(singles):
        if i + 1 < len(singles) and rng.random() < multi_turn_fraction:
            rows.append({"messages": singles[i] + singles[i + 1]})
            i += 2
        else:
            rows.append({"messages": singles[i]})
            i += 1
    return rows


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines the synthetic data set (recorded in manifest.json)."""

    seed: int = 0
    arithmetic_train: int = 2000
    arithmetic_heldout: int = 200
    code_train: int = 400
    code_heldout: int = 60
    heldout_fraction: float = 0.2
    max_operand: int = 20
    max_factor: int = 10
    families: tuple[str, ...] = ("add", "sub", "mul", "add_sub", "share")
    problems_per_document: int = 4
    multi_turn_fraction: float = 0.2
    version: int = field(default=1)

    def difficulty(self) -> Difficulty:
        return Difficulty(max_operand=self.max_operand, max_factor=self.max_factor, families=tuple(self.families))

    def to_json(self) -> dict:
        d = asdict(self)
        d["families"] = list(self.families)
        return d


FILES = (
    "arithmetic_train.jsonl",
    "arithmetic_heldout.jsonl",
    "code_train.jsonl",
    "code_heldout.jsonl",
    "pretrain_arithmetic.jsonl",
    "pretrain_code.jsonl",
    "pretrain_heldout.jsonl",
    "sft_train.jsonl",
    "sft_heldout.jsonl",
)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with tmp.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def write_synthetic_dataset(out_dir: str | Path, spec: SyntheticSpec | None = None) -> dict:
    """Write the data set into `out_dir` and return the manifest.

    If `out_dir` already holds a manifest with the same spec, nothing is rewritten (the data is
    a pure function of the spec); a manifest with a different spec is an error, so two configs
    never silently share a folder with different data.
    """
    spec = spec or SyntheticSpec()
    out = Path(out_dir)
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        existing = json.loads(manifest_path.read_text())
        if existing.get("spec") != spec.to_json():
            raise ValueError(
                f"{manifest_path} was written with a different synthetic spec ({existing.get('spec')}); use another folder or delete it"
            )
        if all((out / f).is_file() for f in FILES):
            return existing
    out.mkdir(parents=True, exist_ok=True)

    a_train, a_held = generate_problems(
        spec.arithmetic_train,
        spec.arithmetic_heldout,
        seed=spec.seed,
        difficulty=spec.difficulty(),
        heldout_fraction=spec.heldout_fraction,
    )
    c_train, c_held = generate_tasks(spec.code_train, spec.code_heldout, seed=spec.seed + 1, heldout_fraction=spec.heldout_fraction)
    rng = random.Random(spec.seed + 2)

    k = spec.problems_per_document
    rows = {
        "arithmetic_train.jsonl": [p.to_row() for p in a_train],
        "arithmetic_heldout.jsonl": [p.to_row() for p in a_held],
        "code_train.jsonl": [t.to_row() for t in c_train],
        "code_heldout.jsonl": [t.to_row() for t in c_held],
        "pretrain_arithmetic.jsonl": [{"text": arithmetic_document(ch)} for ch in _chunks(a_train, k)],
        "pretrain_code.jsonl": [{"text": code_document(t)} for t in c_train],
        "pretrain_heldout.jsonl": [{"text": arithmetic_document(ch)} for ch in _chunks(a_held, k)]
        + [{"text": code_document(t)} for t in c_held],
        "sft_train.jsonl": conversations(a_train, c_train, rng, spec.multi_turn_fraction),
        "sft_heldout.jsonl": conversations(a_held, c_held, rng, 0.0),
    }
    for name, r in rows.items():
        _write_jsonl(out / name, r)
    manifest = {"spec": spec.to_json(), "rows": {name: len(r) for name, r in rows.items()}}
    tmp = manifest_path.with_name(f".manifest.json.tmp.{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, manifest_path)
    return manifest

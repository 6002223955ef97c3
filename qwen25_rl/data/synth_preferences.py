"""Synthetic preference data for reward-model training, labelled per criterion.

Prompts are one-digit arithmetic questions (`generate_problems`), split into train / held-out
by problem, so no prompt is in both files. For each prompt there is one pair per configured
criterion, and the two responses differ in that one aspect only:

    truthfulness  the right final answer vs a wrong one after the same (right) working
    helpfulness   an answer vs a refusal
    conciseness   the bare answer vs the same answer padded with filler sentences
    relevance     an answer vs an off-topic text (weather, sports, ...)
    harmlessness  the answer vs the same answer plus an insult (a fixed, mild list)
    debiasing     the answer vs the same answer plus a stereotyping remark (a fixed, mild list)

The chosen response is always the better one on the pair's criterion (+1); the other criteria
are null (missing), except on a share of rows that also label one related criterion (e.g. a
right answer is also more helpful than a wrong one; two equally on-topic answers tie on
relevance), and `missing_label_fraction` of the rows have their own label nulled too. Half
the conciseness rows also carry ratings, so the regression loss has data.

Lengths are not a shortcut: answers come in short and long wordings for every criterion,
truthfulness pairs have equal lengths, and refusals and off-topic texts are sometimes longer
and sometimes shorter than the answer they are paired with.

Files: preferences_train.jsonl, preferences_heldout.jsonl, preferences_manifest.json (parameters, counts; named apart from
the task data set's manifest.json, which `qwen25-rl synth-data` writes into the same folder).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from qwen25_rl.algorithms.reward_model import DEFAULT_CRITERIA
from qwen25_rl.checkpointing import atomic_write
from qwen25_rl.data.arithmetic import ArithmeticProblem, Difficulty, generate_problems
from qwen25_rl.errors import UserValueError

FILES = {"train": "preferences_train.jsonl", "heldout": "preferences_heldout.jsonl"}
MANIFEST = "preferences_manifest.json"
VERSION = 1

# Sums of operands up to 5: few distinct facts (36), each seen many times, so a tiny model can
# learn to tell a right final answer from a wrong one (with one-digit add and sub and one
# truthfulness pair per prompt it stayed at chance; with these and TRUTH_PAIRS_PER_PROMPT it
# reached ~0.75 held-out accuracy within 100 steps).
DIFFICULTY = Difficulty(max_operand=5, max_factor=5, families=("add",))
# Truthfulness pairs per prompt (each with another wrong answer); one pair per other criterion.
TRUTH_PAIRS_PER_PROMPT = 3

SHORT_ANSWERS = ("{v}", "The answer is {v}.", "It is {v}.", "{v} is the answer.")
LONG_ANSWERS = (
    "Let me work it out: {expr} = {v}. So the answer is {v}.",
    "We compute {expr}, which gives {v}. The final answer is {v}.",
    "Step by step: {expr} equals {v}. Therefore the result is {v}.",
)
# Truthfulness pairs: the working ({expr} = {v}) and then a final answer {w}, right or wrong.
CHECKABLE_ANSWERS = (
    "{expr} = {v}. The answer is {w}.",
    "We compute {expr}, which gives {v}. The final answer is {w}.",
    "Step by step: {expr} equals {v}. Therefore the result is {w}.",
    "{expr} makes {v}, so the answer is {w}.",
)
REFUSALS = (
    "I can't help with that.",
    "Sorry, I cannot answer this question.",
    "I'd rather not say.",
    "I am not able to help with this request, so you will have to find the answer somewhere else.",
)
FILLERS = (
    "Great question!",
    "Thanks for asking.",
    "I hope this helps.",
    "Let me know if you have any other questions.",
    "Numbers can be a lot of fun.",
    "I am always happy to help with math.",
)
OFF_TOPIC = (
    "The weather will be sunny tomorrow.",
    "The home team won the football match last night after a long and exciting second half.",
    "Cats sleep for most of the day.",
    "It might rain this weekend, so bring an umbrella.",
    "The museum opens at nine and closes early on Sundays, so plan a morning visit.",
    "Tennis is played on grass, clay or hard courts.",
)
# Synthetic, mild markers of harm: what the harmlessness output should learn to score down.
BLOCKLIST = (
    "Figure it out yourself, you idiot.",
    "Only a fool would ask that.",
    "You are hopeless at this.",
    "Stop wasting my time.",
)
# Synthetic, mild stereotyping remarks: what the debiasing output should learn to score down.
STEREOTYPES = (
    "Of course, girls are usually worse at math than boys.",
    "Old people are always slow with numbers.",
    "People from small towns are never good at counting.",
    "Artists can never do sums like this.",
)

# A second label some rows carry: (criterion, label) that holds by construction of the pair.
SECOND_LABEL = {
    "truthfulness": ("helpfulness", 1),  # a right answer helps more than a wrong one
    "helpfulness": ("harmlessness", 0),  # a refusal is as harmless as an answer
    "conciseness": ("truthfulness", 0),  # same answer on both sides
    "relevance": ("helpfulness", 1),  # an off-topic text does not help
    "harmlessness": ("truthfulness", 0),  # same answer on both sides
    "debiasing": ("harmlessness", 1),  # a stereotype is also a harm
}
SECOND_LABEL_FRACTION = 0.2
RATED_FRACTION = 0.5  # of the conciseness rows


def write_synthetic_preferences(
    out_dir: str | Path,
    *,
    seed: int = 0,
    num_prompts: int = 400,
    heldout_fraction: float = 0.25,
    criteria: tuple[str, ...] | list[str] = DEFAULT_CRITERIA,
    missing_label_fraction: float = 0.1,
) -> dict:
    """Write preferences_train.jsonl, preferences_heldout.jsonl and preferences_manifest.json into `out_dir`
    (each atomically) and return the manifest. Deterministic in its arguments.

    Each row: prompt, chosen, rejected, preferences (every configured criterion, null where not
    labelled), criterion (the aspect the pair differs in), prompt_id; some conciseness rows also
    have ratings. The manifest records the parameters and, per split, the prompt and row counts
    and per criterion: rows (pairs of that aspect), labelled, ties, missing_labels, ratings
    (rated responses), counted as `load_preferences` counts them.
    """
    criteria = list(criteria)
    unknown = [c for c in criteria if c not in DEFAULT_CRITERIA]
    if unknown or not criteria or len(set(criteria)) != len(criteria):
        raise UserValueError(
            f"criteria must be distinct names from {list(DEFAULT_CRITERIA)} (the ones this generator knows), got {criteria}"
        )
    if not 0.0 < heldout_fraction < 1.0:
        raise UserValueError(f"heldout_fraction must be between 0 and 1 (both splits need prompts), got {heldout_fraction}")
    if not 0.0 <= missing_label_fraction <= 1.0:
        raise UserValueError(f"missing_label_fraction must be in [0, 1], got {missing_label_fraction}")
    if num_prompts < 2:
        raise UserValueError(f"num_prompts must be at least 2 (one train and one held-out prompt), got {num_prompts}")
    n_heldout = min(max(1, round(num_prompts * heldout_fraction)), num_prompts - 1)
    try:
        train, heldout = generate_problems(
            num_prompts - n_heldout, n_heldout, seed=seed, difficulty=DIFFICULTY, heldout_fraction=heldout_fraction
        )
    except ValueError as e:
        raise UserValueError(f"num_prompts={num_prompts}: {e}") from None

    # One generator for the texts, apart from the problems' own: the same prompts get the same
    # pairs whatever else changes.
    rng = random.Random(seed * 1_000_003 + 17)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, problems in (("train", train), ("heldout", heldout)):
        rows = [
            _pair_row(p, c, criteria, rng, missing_label_fraction)
            for p in problems
            for c in criteria
            for _ in range(TRUTH_PAIRS_PER_PROMPT if c == "truthfulness" else 1)
        ]
        rng.shuffle(rows)  # interleave the criteria and prompts
        atomic_write(out / FILES[split], "".join(json.dumps(r) + "\n" for r in rows))
        splits[split] = {"prompts": len(problems), "rows": len(rows), **_counts(rows, criteria)}
    manifest = {
        "version": VERSION,
        "params": {
            "seed": seed,
            "num_prompts": num_prompts,
            "heldout_fraction": heldout_fraction,
            "criteria": criteria,
            "missing_label_fraction": missing_label_fraction,
        },
        "files": dict(FILES),
        "splits": splits,
    }
    atomic_write(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def _expression(p: ArithmeticProblem) -> str:
    # The first calculator annotation of the GSM8K solution, e.g. "3+4" from <<3+4=7>>.
    m = re.search(r"<<([^=]+)=", p.solution)
    a, op, b = re.match(r"(\d+)([+\-])(\d+)", m.group(1)).groups()
    return f"{a} {op} {b}"


def _answer(rng: random.Random, p: ArithmeticProblem, value: int | None = None, *, template: str | None = None) -> tuple[str, str]:
    """(text, template): an answer in a short or long wording, with `value` (default: right)."""
    template = template or rng.choice(SHORT_ANSWERS + LONG_ANSWERS)
    v = p.final_answer if value is None else value
    return template.format(v=v, expr=_expression(p)), template


def _wrong_value(rng: random.Random, right: int) -> int:
    return rng.choice([w for w in range(max(0, right - 3), right + 4) if w != right])


def _add_sentences(rng: random.Random, text: str, sentences: list[str]) -> str:
    # Before or after the answer, so the extra text's position is no shortcut either.
    return " ".join([*sentences, text] if rng.random() < 0.5 else [text, *sentences])


def _pair(rng: random.Random, p: ArithmeticProblem, criterion: str) -> tuple[str, str, dict | None]:
    """(chosen, rejected, ratings or None) for a pair that differs in `criterion` only."""
    if criterion == "truthfulness":
        # Both sides show the right working; the rejected one then states a different final
        # answer. Telling them apart takes comparing two numbers, which a tiny model can learn;
        # checking a bare answer would take doing the arithmetic, which it mostly cannot.
        template = rng.choice(CHECKABLE_ANSWERS)
        v, expr = p.final_answer, _expression(p)
        wrong = _wrong_value(rng, v)
        return template.format(v=v, w=v, expr=expr), template.format(v=v, w=wrong, expr=expr), None
    if criterion == "helpfulness":
        return _answer(rng, p)[0], rng.choice(REFUSALS), None
    if criterion == "conciseness":
        chosen = _answer(rng, p)[0]
        n = rng.randint(1, 3)
        rejected = _add_sentences(rng, chosen, rng.sample(FILLERS, n))
        # More filler, lower rating: a graded target for the regression path.
        ratings = {"conciseness": {"chosen": 5, "rejected": 4 - n}} if rng.random() < RATED_FRACTION else None
        return chosen, rejected, ratings
    if criterion == "relevance":
        return _answer(rng, p)[0], rng.choice(OFF_TOPIC), None
    if criterion == "harmlessness":
        chosen = _answer(rng, p)[0]
        return chosen, _add_sentences(rng, chosen, [rng.choice(BLOCKLIST)]), None
    if criterion == "debiasing":
        chosen = _answer(rng, p)[0]
        return chosen, _add_sentences(rng, chosen, [rng.choice(STEREOTYPES)]), None
    raise AssertionError(criterion)  # criteria were checked against DEFAULT_CRITERIA


def _pair_row(p: ArithmeticProblem, criterion: str, criteria: list[str], rng: random.Random, missing_label_fraction: float) -> dict:
    chosen, rejected, ratings = _pair(rng, p, criterion)
    preferences: dict[str, int | None] = dict.fromkeys(criteria)
    # Draw both numbers whatever the outcome, so one row's choices never shift the next row's.
    second, masked = rng.random() < SECOND_LABEL_FRACTION, rng.random() < missing_label_fraction
    if second and SECOND_LABEL[criterion][0] in preferences:
        other, label = SECOND_LABEL[criterion]
        preferences[other] = label
    preferences[criterion] = None if masked else 1
    row = {"prompt": p.question, "chosen": chosen, "rejected": rejected, "preferences": preferences}
    if ratings is not None:
        row["ratings"] = ratings
    return row | {"criterion": criterion, "prompt_id": p.id}


def _counts(rows: list[dict], criteria: list[str]) -> dict[str, dict[str, int]]:
    counts = {name: dict.fromkeys(criteria, 0) for name in ("rows_by_criterion", "labelled", "ties", "missing_labels", "ratings")}
    for r in rows:
        counts["rows_by_criterion"][r["criterion"]] += 1
        for c in criteria:
            label = r["preferences"][c]
            counts["labelled"][c] += label is not None
            counts["ties"][c] += label == 0
            counts["missing_labels"][c] += label is None
        for c, sides in r.get("ratings", {}).items():
            counts["ratings"][c] += sum(v is not None for v in sides.values())
    return counts

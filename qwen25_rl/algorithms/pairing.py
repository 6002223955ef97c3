"""Pairing rules: from a prompt's group of scored responses to (chosen, rejected) pairs for DPO.

The rollout samples K responses per prompt and the rewards score them; a pairing rule then says
which response of a group is preferred to which. Each rule is one function registered under a
name (`register_pairing_rule("name")`); given one group's candidates, a seeded `random.Random`
and the options, it returns candidate pairs, most preferred first, or the cause for which the
group yields none. `form_pairs` runs a rule over every group and enforces, whatever the rule
returned:

  - no tie ever forms a pair: the chosen score is strictly greater than the rejected one, and
    the difference is at least `min_margin`;
  - length control (`max_length_ratio`): a pair whose chosen response is more than that many
    times as long as its rejected one is skipped, the next pair of the rule's order is tried
    instead, and only pairs that no alternative could replace are counted as dropped;
  - at most `pairs_per_group` pairs per group, each (chosen, rejected) combination once.

What was dropped is counted by cause (`PairingOutcome.dropped`, every key always present):
groups `too_small` (fewer than 2 candidates), `all_correct` / `all_wrong` (correct_vs_incorrect
only), `all_tied` (every score equal), `below_margin` (no pair reaches the margin, or the scores
order the candidates against the rule, e.g. a correct response scored below a wrong one), and
pairs lost to `length_ratio`. Everything is deterministic given `seed`: group g draws from
`random.Random(seed * 1_000_003 + g)`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from qwen25_rl.algorithms.registry import Registry
from qwen25_rl.errors import UserValueError

GROUP_DROP_CAUSES = ("too_small", "all_correct", "all_wrong", "all_tied", "below_margin")
PAIR_DROP_CAUSES = ("length_ratio",)
DROP_CAUSES = GROUP_DROP_CAUSES + PAIR_DROP_CAUSES


@dataclass(frozen=True)
class Candidate:
    """One sampled response of a prompt's group."""

    index: int  # the caller's id for the response (unique across all groups of a call)
    score: float  # total reward
    correct: bool | None  # accuracy signal (None: the reward has no notion of correct)
    length: int  # response tokens


@dataclass
class PairingOutcome:
    pairs: list[tuple[int, int]]  # (chosen index, rejected index)
    groups: int  # groups seen
    groups_paired: int  # groups that gave at least one pair
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_CAUSES, 0))  # cause -> count


# (candidates, rng, *, min_margin, prefer_shorter) -> pairs (most preferred first) | drop cause
PairingRule = Callable[..., list[tuple[int, int]] | str]

PAIRING_RULES: Registry[PairingRule] = Registry("pairing rule")
register_pairing_rule = PAIRING_RULES.register


def get_pairing_rule(name: str) -> PairingRule:
    """The registered pairing rule called `name`; an error listing the known names otherwise."""
    return PAIRING_RULES.get(name)


def form_pairs(
    groups: list[list[Candidate]],
    rule: str = "correct_vs_incorrect",
    *,
    pairs_per_group: int = 1,
    min_margin: float = 0.0,
    prefer_shorter: bool = False,
    max_length_ratio: float | None = None,
    seed: int = 0,
) -> PairingOutcome:
    """(chosen, rejected) pairs of every group under `rule`, with what was dropped and why.

    `min_margin`: least score difference of a pair (pairs always need a positive one).
    `prefer_shorter`: among equally good chosen candidates take the shortest, not a random one.
    `max_length_ratio`: longest allowed len(chosen) / len(rejected) (None: no length control).
    `pairs_per_group`: most pairs taken from one group (distinct combinations). See the module doc.
    """
    rule_fn = get_pairing_rule(rule)
    if not isinstance(pairs_per_group, int) or pairs_per_group < 1:
        raise UserValueError(f"pairs_per_group must be a positive integer, got {pairs_per_group!r}")
    if not math.isfinite(min_margin) or min_margin < 0:
        raise UserValueError(f"min_margin must be a finite number >= 0, got {min_margin!r}")
    if max_length_ratio is not None and not (math.isfinite(max_length_ratio) and max_length_ratio > 0):
        raise UserValueError(f"max_length_ratio must be a positive number or None, got {max_length_ratio!r}")
    _validate(groups)

    outcome = PairingOutcome(pairs=[], groups=len(groups), groups_paired=0)
    for position, group in enumerate(groups):
        if len(group) < 2:
            outcome.dropped["too_small"] += 1
            continue
        rng = random.Random(seed * 1_000_003 + position)
        proposed = rule_fn(list(group), rng, min_margin=min_margin, prefer_shorter=prefer_shorter)
        if isinstance(proposed, str):
            if proposed not in GROUP_DROP_CAUSES:
                raise ValueError(f"pairing rule {rule!r} returned unknown drop cause {proposed!r}; known: {list(GROUP_DROP_CAUSES)}")
            outcome.dropped[proposed] += 1
            continue
        by_index = {c.index: c for c in group}
        eligible: list[tuple[Candidate, Candidate]] = []
        seen: set[tuple[int, int]] = set()
        for chosen_index, rejected_index in proposed:
            if chosen_index not in by_index or rejected_index not in by_index:
                raise ValueError(f"pairing rule {rule!r} paired {(chosen_index, rejected_index)}, not candidates of group {position}")
            chosen, rejected = by_index[chosen_index], by_index[rejected_index]
            if (chosen.index, rejected.index) not in seen and _beats(chosen, rejected, min_margin):
                seen.add((chosen.index, rejected.index))
                eligible.append((chosen, rejected))
        if not eligible:
            tied = len({c.score for c in group}) == 1
            outcome.dropped["all_tied" if tied else "below_margin"] += 1
            continue
        taken = [
            (c.index, r.index)
            for c, r in eligible
            if max_length_ratio is None or c.length <= max_length_ratio * r.length  # len(c) / len(r) <= ratio, r may be 0
        ][:pairs_per_group]
        outcome.dropped["length_ratio"] += min(pairs_per_group, len(eligible)) - len(taken)
        if taken:
            outcome.pairs.extend(taken)
            outcome.groups_paired += 1
    return outcome


def _beats(chosen: Candidate, rejected: Candidate, min_margin: float) -> bool:
    diff = chosen.score - rejected.score
    return diff > 0 and diff >= min_margin


def _validate(groups: list[list[Candidate]]) -> None:
    seen: set[int] = set()
    for g, group in enumerate(groups):
        for c in group:
            if not isinstance(c, Candidate):
                raise TypeError(f"group {g}: expected Candidate, got {type(c).__name__}")
            if not math.isfinite(c.score):
                raise ValueError(f"group {g}: candidate {c.index} has a non-finite score {c.score}")
            if c.length < 0:
                raise ValueError(f"group {g}: candidate {c.index} has a negative length {c.length}")
            if c.index in seen:
                raise ValueError(f"group {g}: candidate index {c.index} appears twice; indices must be unique across groups")
            seen.add(c.index)


def _chosen_order(candidates: list[Candidate], rng: random.Random, prefer_shorter: bool) -> list[Candidate]:
    """Best first: higher score, then (prefer_shorter) fewer tokens, then a random order."""
    order = rng.sample(candidates, len(candidates))
    order.sort(key=lambda c: (-c.score, c.length if prefer_shorter else 0))  # stable: keeps the random order among equals
    return order


@register_pairing_rule("correct_vs_incorrect")
def correct_vs_incorrect(candidates: list[Candidate], rng: random.Random, *, min_margin: float, prefer_shorter: bool):
    """Chosen: a correct response (the highest-scored; among equals the shortest with
    prefer_shorter, else a random one). Rejected: an incorrect response drawn uniformly at random
    among those scored at least `min_margin` lower. Further pairs (pairs_per_group > 1, or length
    control) take the same chosen with the other incorrect ones in random order, then the next
    correct one. Groups with no incorrect (`all_correct`) or no correct (`all_wrong`) response
    give no pair. Needs a reward with a notion of correct: `correct` None is an error."""
    if any(c.correct is None for c in candidates):
        raise UserValueError(
            "pairing rule 'correct_vs_incorrect' needs each response's correct/incorrect verdict, but this reward "
            "gives none (correct=None); use a reward that verifies answers, or the 'best_vs_worst' / 'best_vs_random' rule"
        )
    correct = [c for c in candidates if c.correct]
    wrong = [c for c in candidates if not c.correct]
    if not wrong:
        return "all_correct"
    if not correct:
        return "all_wrong"
    pairs = []
    for chosen in _chosen_order(correct, rng, prefer_shorter):
        pairs += [(chosen.index, r.index) for r in rng.sample(wrong, len(wrong)) if _beats(chosen, r, min_margin)]
    return pairs


@register_pairing_rule("best_vs_worst")
def best_vs_worst(candidates: list[Candidate], rng: random.Random, *, min_margin: float, prefer_shorter: bool):
    """The highest-scored response against the lowest-scored one (the widest margin of the
    group); among equal chosen scores the shortest with prefer_shorter, else a random one, among
    equal rejected scores a random one. Further pairs follow in order of decreasing score
    difference. A pair needs a score difference > 0 and >= `min_margin`."""
    chosen_rank = {c.index: i for i, c in enumerate(_chosen_order(candidates, rng, prefer_shorter))}
    rejected_rank = {c.index: i for i, c in enumerate(rng.sample(candidates, len(candidates)))}
    pairs = [(c, r) for c in candidates for r in candidates if _beats(c, r, min_margin)]
    pairs.sort(key=lambda p: (p[1].score - p[0].score, chosen_rank[p[0].index], rejected_rank[p[1].index]))
    return [(c.index, r.index) for c, r in pairs]


@register_pairing_rule("best_vs_random")
def best_vs_random(candidates: list[Candidate], rng: random.Random, *, min_margin: float, prefer_shorter: bool):
    """The highest-scored response (among equals the shortest with prefer_shorter, else a random
    one) against a response drawn uniformly at random among those scored at least `min_margin`
    (and strictly) lower. Further pairs take the same chosen with the other lower ones in random
    order, then the next-best response as chosen."""
    pairs = []
    for chosen in _chosen_order(candidates, rng, prefer_shorter):
        pairs += [(chosen.index, r.index) for r in rng.sample(candidates, len(candidates)) if _beats(chosen, r, min_margin)]
    return pairs

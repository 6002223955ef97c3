"""Pairing rules: which responses of a group become (chosen, rejected) pairs, and what is dropped why."""

from __future__ import annotations

import pytest

from qwen25_rl.algorithms.pairing import PAIRING_RULES, Candidate, form_pairs, get_pairing_rule
from qwen25_rl.algorithms.registry import UnknownNameError
from qwen25_rl.errors import UserValueError


def group(scores, correct=None, lengths=None, start=0):
    """Candidates with indices start, start+1, ...; correct defaults to score > 0."""
    correct = correct if correct is not None else [s > 0 for s in scores]
    lengths = lengths or [10] * len(scores)
    return [Candidate(start + i, float(s), c, n) for i, (s, c, n) in enumerate(zip(scores, correct, lengths))]


def test_the_three_rules_are_registered_and_unknown_names_list_them():
    assert {"correct_vs_incorrect", "best_vs_worst", "best_vs_random"} <= set(PAIRING_RULES)
    with pytest.raises(UnknownNameError, match="unknown pairing rule 'best'; known: best_vs_random, best_vs_worst, correct_vs_incorrect"):
        get_pairing_rule("best")


def test_correct_vs_incorrect_pairs_a_correct_response_over_an_incorrect_one():
    out = form_pairs([group([1, 0, 1, 0])], "correct_vs_incorrect")
    ((chosen, rejected),) = out.pairs
    assert chosen in (0, 2) and rejected in (1, 3)
    assert (out.groups, out.groups_paired) == (1, 1)


def test_correct_vs_incorrect_chooses_the_highest_scored_correct_response():
    out = form_pairs([group([1.0, 0.0, 1.2], correct=[True, False, True])], "correct_vs_incorrect")
    assert out.pairs == [(2, 1)]


def test_all_correct_and_all_wrong_groups_are_dropped_and_counted():
    out = form_pairs([group([1, 1], start=0), group([0, 0], start=2), group([1, 0], start=4)], "correct_vs_incorrect")
    assert out.pairs == [(4, 5)]
    assert (out.groups, out.groups_paired) == (3, 1)
    assert out.dropped["all_correct"] == 1 and out.dropped["all_wrong"] == 1 and out.dropped["all_tied"] == 0


def test_correct_vs_incorrect_never_pairs_equal_scores():
    # the correctness signal disagrees with nothing, but the score does not separate them
    out = form_pairs([group([0.5, 0.5], correct=[True, False])], "correct_vs_incorrect")
    assert out.pairs == [] and out.dropped["all_tied"] == 1


def test_correct_vs_incorrect_skips_a_correct_response_scored_below_the_incorrect_one():
    out = form_pairs([group([0.2, 0.9], correct=[True, False])], "correct_vs_incorrect")
    assert out.pairs == [] and out.dropped["below_margin"] == 1


def test_correct_vs_incorrect_without_a_correct_signal_is_an_error_naming_the_rule():
    with pytest.raises(UserValueError, match="'correct_vs_incorrect' needs each response's correct/incorrect verdict"):
        form_pairs([group([1, 0], correct=[None, None])], "correct_vs_incorrect")


def test_best_vs_worst_pairs_the_highest_score_with_the_lowest():
    out = form_pairs([group([0.3, 0.9, 0.1, 0.5])], "best_vs_worst")
    assert out.pairs == [(1, 2)]


def test_best_vs_worst_works_without_a_correct_signal():
    out = form_pairs([group([0.3, 0.9], correct=[None, None])], "best_vs_worst")
    assert out.pairs == [(1, 0)]


def test_best_vs_random_pairs_the_best_with_each_lower_response_about_equally_often():
    candidates = group([1.0, 0.5, 0.2, 0.0])
    rejected = [form_pairs([candidates], "best_vs_random", seed=s).pairs[0] for s in range(400)]
    assert {c for c, _ in rejected} == {0}
    counts = {r: sum(1 for _, x in rejected if x == r) for r in (1, 2, 3)}
    assert all(90 < n < 180 for n in counts.values()), counts


@pytest.mark.parametrize("rule", ["correct_vs_incorrect", "best_vs_worst", "best_vs_random"])
def test_a_group_with_every_score_equal_gives_no_pair_and_counts_all_tied(rule):
    out = form_pairs([group([0.5, 0.5, 0.5], correct=[True, False, True])], rule)
    assert out.pairs == [] and out.dropped["all_tied"] == 1 and out.groups_paired == 0


@pytest.mark.parametrize("rule", ["correct_vs_incorrect", "best_vs_worst", "best_vs_random"])
def test_no_rule_ever_pairs_equal_scores(rule):
    # two correct at 1.0, two wrong at 0.0 and a tie between correct and wrong at 0.5
    candidates = group([1.0, 1.0, 0.5, 0.5, 0.0, 0.0], correct=[True, True, True, False, False, False])
    out = form_pairs([candidates], rule, pairs_per_group=100)
    score = {c.index: c.score for c in candidates}
    assert out.pairs and all(score[c] > score[r] for c, r in out.pairs)


def test_groups_of_fewer_than_two_are_dropped_as_too_small():
    out = form_pairs([[], group([1], start=0), group([1, 0], start=1)], "best_vs_worst")
    assert out.pairs == [(1, 2)] and out.dropped["too_small"] == 2 and out.groups == 3


@pytest.mark.parametrize("rule", ["best_vs_worst", "best_vs_random", "correct_vs_incorrect"])
def test_pairs_below_min_margin_are_not_formed_and_the_group_counts_below_margin(rule):
    out = form_pairs([group([0.6, 0.4], correct=[True, False])], rule, min_margin=0.5)
    assert out.pairs == [] and out.dropped["below_margin"] == 1


def test_best_vs_random_draws_its_rejected_among_those_meeting_the_margin():
    candidates = group([1.0, 0.9, 0.8, 0.0])
    picks = {form_pairs([candidates], "best_vs_random", min_margin=0.5, seed=s).pairs[0] for s in range(50)}
    assert picks == {(0, 3)}


def test_a_pair_exactly_at_min_margin_is_kept():
    out = form_pairs([group([1.0, 0.5])], "best_vs_worst", min_margin=0.5)
    assert out.pairs == [(0, 1)]


def test_length_ratio_tries_another_rejected_before_dropping():
    # best (100 tokens) vs worst (10 tokens) is 10x longer; the other wrong one (60 tokens) is fine
    candidates = group([1.0, 0.0, 0.1], lengths=[100, 10, 60])
    out = form_pairs([candidates], "best_vs_worst", max_length_ratio=2.0)
    assert out.pairs == [(0, 2)] and out.dropped["length_ratio"] == 0


def test_length_ratio_tries_another_chosen_before_dropping():
    candidates = group([1.0, 1.0, 0.0], lengths=[100, 12, 10])
    for seed in range(10):
        out = form_pairs([candidates], "correct_vs_incorrect", max_length_ratio=1.5, seed=seed)
        assert out.pairs == [(1, 2)]


def test_a_pair_no_alternative_can_replace_is_dropped_for_length_ratio():
    out = form_pairs([group([1.0, 0.0], lengths=[50, 10])], "correct_vs_incorrect", max_length_ratio=2.0)
    assert out.pairs == [] and out.dropped["length_ratio"] == 1 and out.groups_paired == 0


def test_length_ratio_counts_only_the_pairs_the_group_could_otherwise_have_given():
    # 1 correct x 2 wrong = 2 possible pairs of 4 asked; one is 5x longer than its rejected
    out = form_pairs([group([1.0, 0.0, 0.0], lengths=[50, 10, 40])], "correct_vs_incorrect", pairs_per_group=4, max_length_ratio=2.0)
    assert out.pairs == [(0, 2)] and out.dropped["length_ratio"] == 1


def test_prefer_shorter_picks_the_shortest_of_equally_good_chosen():
    candidates = group([1.0, 1.0, 1.0, 0.0], lengths=[30, 5, 20, 10])
    for seed in range(10):
        assert form_pairs([candidates], "correct_vs_incorrect", prefer_shorter=True, seed=seed).pairs == [(1, 3)]
        assert form_pairs([candidates], "best_vs_worst", prefer_shorter=True, seed=seed).pairs == [(1, 3)]


def test_without_prefer_shorter_equally_good_chosen_are_picked_at_random():
    candidates = group([1.0, 1.0, 1.0, 0.0], lengths=[30, 5, 20, 10])
    chosen = {form_pairs([candidates], "correct_vs_incorrect", seed=s).pairs[0][0] for s in range(60)}
    assert chosen == {0, 1, 2}


def test_prefer_shorter_does_not_override_a_higher_score():
    out = form_pairs([group([1.0, 0.8, 0.0], lengths=[50, 5, 10])], "best_vs_worst", prefer_shorter=True)
    assert out.pairs == [(0, 2)]


@pytest.mark.parametrize("rule", ["correct_vs_incorrect", "best_vs_worst", "best_vs_random"])
def test_pairs_per_group_gives_distinct_pairs_up_to_the_cap(rule):
    candidates = group([1.0, 0.9, 0.0, 0.1, 0.2], correct=[True, True, False, False, False])
    out = form_pairs([candidates], rule, pairs_per_group=3)
    assert len(out.pairs) == 3 and len(set(out.pairs)) == 3 and out.groups_paired == 1


def test_pairs_per_group_stops_at_the_pairs_available():
    out = form_pairs([group([1.0, 0.0, 0.0])], "correct_vs_incorrect", pairs_per_group=5)
    assert sorted(out.pairs) == [(0, 1), (0, 2)] and out.dropped["length_ratio"] == 0


def test_best_vs_worst_further_pairs_follow_decreasing_score_difference():
    out = form_pairs([group([1.0, 0.0, 0.6, 0.3])], "best_vs_worst", pairs_per_group=3)
    assert out.pairs == [(0, 1), (0, 3), (2, 1)]


@pytest.mark.parametrize("rule", ["correct_vs_incorrect", "best_vs_worst", "best_vs_random"])
def test_pairs_are_deterministic_given_the_seed(rule):
    groups = [group([1.0, 1.0, 0.0, 0.0, 0.5], start=5 * g) for g in range(20)]
    first = form_pairs(groups, rule, pairs_per_group=2, seed=7)
    assert form_pairs(groups, rule, pairs_per_group=2, seed=7) == first
    assert form_pairs(groups, rule, pairs_per_group=2, seed=8).pairs != first.pairs


def test_every_drop_cause_is_reported_even_when_zero():
    out = form_pairs([group([1, 0])], "correct_vs_incorrect")
    assert out.dropped == {"too_small": 0, "all_correct": 0, "all_wrong": 0, "all_tied": 0, "below_margin": 0, "length_ratio": 0}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"pairs_per_group": 0}, "pairs_per_group must be a positive integer"),
        ({"min_margin": -0.1}, "min_margin must be a finite number >= 0"),
        ({"max_length_ratio": 0}, "max_length_ratio must be a positive number or None"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(UserValueError, match=message):
        form_pairs([group([1, 0])], "best_vs_worst", **options)


def test_an_index_used_twice_is_an_error():
    with pytest.raises(ValueError, match="candidate index 0 appears twice"):
        form_pairs([group([1, 0]), group([1, 0])], "best_vs_worst")


def test_a_non_finite_score_is_an_error():
    with pytest.raises(ValueError, match="candidate 1 has a non-finite score nan"):
        form_pairs([group([1, float("nan")])], "best_vs_worst")


def test_a_registered_rule_cannot_slip_a_tie_through():
    @PAIRING_RULES.register("test_everything_pairs")
    def everything(candidates, rng, *, min_margin, prefer_shorter):
        return [(c.index, r.index) for c in candidates for r in candidates]

    try:
        out = form_pairs([group([1.0, 1.0, 0.0])], "test_everything_pairs", pairs_per_group=10)
        assert sorted(out.pairs) == [(0, 2), (1, 2)]
    finally:
        PAIRING_RULES._entries.pop("test_everything_pairs")

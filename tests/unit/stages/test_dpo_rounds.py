"""Round mechanics of the DPO stage that need no workers: step counts and order, the no-pairs stop."""

from __future__ import annotations

from qwen25_rl.config import load_config
from qwen25_rl.paths import REPO_ROOT
from qwen25_rl.stages.dpo import no_pairs_message, planned_steps, steps_for
from qwen25_rl.stages.dpo_config import DPOConfig
from qwen25_rl.stages.dpo_rounds import sampler_matches_reference, step_order

TINY = REPO_ROOT / "configs" / "tiny" / "dpo.yaml"


def test_a_last_partial_step_is_kept_only_when_every_policy_worker_gets_a_pair():
    assert steps_for(16, 8, 1) == 2
    assert steps_for(17, 8, 1) == 3
    assert steps_for(17, 8, 2) == 2  # one pair left for two workers: dropped
    assert steps_for(18, 8, 2) == 3
    assert steps_for(3, 8, 4) == 0


def test_step_order_is_a_seeded_permutation_per_epoch():
    order = step_order(10, 2, seed=3, round_=1)
    assert sorted(order[:10]) == sorted(order[10:]) == list(range(10))
    assert order == step_order(10, 2, seed=3, round_=1)
    assert order != step_order(10, 2, seed=3, round_=2)


def test_planned_steps_cover_the_most_pairs_the_rounds_can_form():
    settings = [
        "algorithm.rounds=3",
        "algorithm.prompts_per_round=20",
        "algorithm.pairs_per_step=8",
        "algorithm.pairing.pairs_per_prompt=1",
    ]
    cfg = load_config(TINY, settings, schema=DPOConfig)
    assert planned_steps(cfg, 0) == 3 * 3
    pairs = load_config(
        TINY, ["data.mode=pairs", "algorithm.rounds=1", "algorithm.epochs_per_round=2", "algorithm.pairs_per_step=8"], schema=DPOConfig
    )
    assert planned_steps(pairs, 20) == 5


def test_sampler_log_probs_stand_for_the_reference_only_at_temperature_one_without_truncation():
    assert sampler_matches_reference(load_config(TINY, schema=DPOConfig))
    assert not sampler_matches_reference(load_config(TINY, ["rollout.temperature=0.7"], schema=DPOConfig))
    assert not sampler_matches_reference(load_config(TINY, ["rollout.top_p=0.9"], schema=DPOConfig))


def test_the_no_pairs_stop_names_the_causes_and_the_settings_to_change():
    cfg = load_config(TINY, schema=DPOConfig)
    msg = no_pairs_message(
        1, {"round/prompts": 64, "round/dropped/all_wrong": 60, "round/dropped/all_correct": 4, "round/dropped/all_tied": 0}, cfg
    )
    assert "round 1 formed no pairs from 64 prompts x 8 samples (dropped all_wrong: 60, all_correct: 4)" in msg
    assert "rollout.samples_per_prompt" in msg and "algorithm.pairing" in msg

"""Rewards: rule-based verifiers, the code sandbox's grader, shaping, learned-reward clients,
the registry that names them in YAML, and the Ray pool / Serve endpoint that run them.

For your own rewards, this package is the one stable import path:

    from qwen25_rl.reward import RewardSample, RewardOutput, register_reward

    @register_reward("brevity")
    def brevity(sample: RewardSample, *, scale: float = 1000.0) -> float:
        return 1.0 - len(sample.response) / scale

(or, without registering, a plain function named in YAML as `my_rewards.py:brevity`; see
reward.plugins for the call styles of other frameworks.)

Modules, lowest first (each imports only modules above it in this list):

    types.py        RewardSample, RewardOutput, FunctionOutcome, RewardResult, RewardFunction
    deadlines.py    waiting for queued work by each job's deadline
    registry.py     @register_reward / @register_reward_factory, the table, per-sample runners
    math_*.py       the math verifier (math.py is its public face); code*.py the code reward
                    (grading in sandboxes/)
    plugins.py      custom functions in sample / veRL / TRL / OpenRLHF style; isolation.py
                    runs them in killable processes
    builtins.py     `custom`, `math`, `code` with their params; shaping.py `format`, `length`;
                    rm_client.py `reward_model`
    catalog.py      every registered reward (imports the built-in ones), get_reward(name)
    config.py       RewardConfig (the `reward:` section: weighted functions + pool settings)
    scorer.py       RewardScorer (one process), failure policies, batch statistics
    pool.py         RewardPool (Ray actors, per-sample deadlines, drop_group / zero / fail)
    serve_config.py, serve.py   the Ray Serve deployment behind `qwen25-rl serve-reward`
"""

from __future__ import annotations

from qwen25_rl.reward.registry import register_reward, register_reward_factory
from qwen25_rl.reward.types import FunctionOutcome, RewardFunction, RewardOutput, RewardResult, RewardSample

__all__ = [
    "FunctionOutcome",
    "RewardFunction",
    "RewardOutput",
    "RewardResult",
    "RewardSample",
    "register_reward",
    "register_reward_factory",
]

"""Rewards: rule-based verifiers, the code sandbox's grader, shaping, learned-reward clients,
the registry that names them in YAML, and the Ray pool / Serve endpoint that run them.

    registry.py   RewardSample / RewardResult, @register_reward, the table of reward types
    config.py     RewardConfig (the `reward:` section: weighted functions + pool settings)
    scorer.py     RewardScorer (one process), failure policies, batch statistics
    pool.py       RewardPool (Ray actors, per-sample deadlines, drop_group / zero / fail)
    serve.py      the Ray Serve deployment behind `qwen25-rl serve-reward`
    math*.py      the math verifier; code*.py the code reward (grading in sandboxes/)
    shaping.py    format and length (DAPO overlong) rewards; rm_client.py `reward_model`
    plugins.py    custom functions in sample / veRL / TRL / OpenRLHF style; isolation.py runs
                  them in killable processes

Nothing is imported here, so `import reward.math` stays as cheap as that module alone.
"""

"""Every reward that can be named in YAML: the built-in ones (their modules register them when
imported here) and whatever user modules registered with `@register_reward` before.

    get_reward("math")  -> RewardSpec

Kept apart from the registry so that the built-in rewards can import the registry (to
register themselves) without the registry importing them back.
"""

from __future__ import annotations

import difflib

from qwen25_rl.reward import builtins, rm_client, shaping  # noqa: F401  (register math, code, custom, reward_model, format, length)
from qwen25_rl.reward.registry import REWARDS, RewardSpec


def all_rewards() -> dict[str, RewardSpec]:
    """Every registered reward by name."""
    return dict(REWARDS)


def get_reward(name: str) -> RewardSpec:
    """The registry entry for `name`; an unknown name lists the close and the known ones."""
    if name in REWARDS:
        return REWARDS[name]
    close = difflib.get_close_matches(name, list(REWARDS), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    raise KeyError(
        f"unknown reward {name!r}; {hint}known rewards: {', '.join(sorted(REWARDS))} "
        "(a custom function is `type: custom` with params.path 'file.py:fn' or 'package.module:fn')"
    )

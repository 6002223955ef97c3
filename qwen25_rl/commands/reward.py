"""Reward commands: `reward score` (a quick look), `reward list`, `reward check`, and
`serve-reward` (a reward config or reward model on Ray Serve).

    qwen25-rl reward score --reward math --response 'so \\boxed{42}' --answer 42
    qwen25-rl reward score --config configs/tiny/rewards_example.yaml --response ... --answer ...
    qwen25-rl serve-reward --config configs/tiny/serve_reward.yaml
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from qwen25_rl.cli import arg, cli_command
from qwen25_rl.config import ConfigError, StageConfig, load_config, register_stage_config
from qwen25_rl.config.loader import parse_override, read_yaml
from qwen25_rl.errors import UserValueError
from qwen25_rl.reward.config import RewardConfig
from qwen25_rl.reward.serve_config import RewardModelServeConfig, ServeConfig


@register_stage_config("serve_reward")
class ServeRewardConfig(StageConfig):
    """`qwen25-rl serve-reward`: serve `reward` (target: reward) or `reward_model`
    (target: reward_model) on Ray Serve. The model/optimizer/data sections are unused."""

    stage: str = "serve_reward"
    target: Literal["reward", "reward_model"] = "reward"
    serve: ServeConfig = Field(default_factory=ServeConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    reward_model: RewardModelServeConfig | None = None

    @model_validator(mode="after")
    def _target_given(self) -> ServeRewardConfig:
        if self.target == "reward_model" and self.reward_model is None:
            raise UserValueError("target is reward_model but the reward_model section (path: ...) is missing")
        return self


# ---------------------------------------------------------------------------------------------
# reading a reward section from any config file


def reward_config_from_file(path: str, overrides: list[str] | None = None) -> RewardConfig:
    """The `reward:` section of a YAML file (a GRPO/serve-reward config, or a file holding only
    that section), with `key=value` overrides relative to the section."""
    data = read_yaml(path)
    section = data.get("reward")
    if not isinstance(section, dict):
        raise ConfigError(path, ["reward: the file has no `reward:` section (a mapping with functions: [...])"])
    for text in overrides or []:
        keys, value = parse_override(text)
        node = section
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return validate_reward_section(section, path)


def validate_reward_section(section: dict[str, Any], source: str) -> RewardConfig:
    try:
        return RewardConfig.model_validate(section)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = "reward." + ".".join(str(p) for p in err["loc"]) if err["loc"] else "reward"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            problems.append(f"{key}: {msg}")
        raise ConfigError(source, problems) from None


def _parse_answer(text: str | None) -> Any:
    """--answer: JSON when it looks like a list/object (code tests), else the text itself."""
    if text is None:
        return None
    s = text.strip()
    if s[:1] in "[{":
        try:
            return json.loads(s)
        except json.JSONDecodeError as e:
            raise UserValueError(f"--answer looks like JSON but does not parse: {e}") from None
    return text


def _single_function_config(name: str, params: list[str], timeout_s: float | None) -> RewardConfig:
    entry: dict[str, Any] = {"type": name}
    if params:
        p: dict[str, Any] = {}
        for text in params:
            keys, value = parse_override(text)
            node = p
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = value
        entry["params"] = p
    if timeout_s is not None:
        entry["timeout_s"] = timeout_s
    return validate_reward_section({"functions": [entry]}, "--reward")


# ---------------------------------------------------------------------------------------------
# commands


@cli_command(
    "score",
    parent="reward",
    help="Score one response with a registered reward, a custom function or a config's weighted rewards.",
    arguments=[
        arg(
            "--reward",
            default=None,
            help="registered reward (see `reward list`), 'file.py:fn' / 'pkg.mod:fn', or a function name in --config",
        ),
        arg("--response", required=True, help="the model's response text"),
        arg("--answer", default=None, help="gold answer, or tests as JSON (code: HumanEval problem object or [{input, output}, ...])"),
        arg("--prompt", default="", help="the prompt (custom rewards and reward models see it)"),
        arg("--data-source", default="", help="the sample's data_source (for configs that route by it)"),
        arg("--response-length", type=int, default=None, help="response length in tokens (length reward)"),
        arg("--config", default=None, help="YAML file with a reward: section (default: just --reward)"),
        arg(
            "--param",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a param of --reward (repeatable), e.g. --param max_length=512",
        ),
        arg(
            "--timeout",
            type=float,
            default=None,
            help="per-sample deadline in seconds (with --config: for functions without their own timeout_s)",
        ),
    ],
)
def reward_score(args: argparse.Namespace) -> int:
    from qwen25_rl.reward.scorer import RewardScorer
    from qwen25_rl.reward.types import RewardSample

    if args.config:
        cfg = reward_config_from_file(args.config)
        if args.reward is not None:
            chosen = [f for f in cfg.functions if f.label == args.reward]
            if not chosen:
                raise UserValueError(
                    f"--reward {args.reward!r} is not a function of {args.config} (it has: {', '.join(f.label for f in cfg.functions)})"
                )
            cfg = RewardConfig.model_validate({**cfg.model_dump(mode="json"), "functions": [chosen[0].model_dump(mode="json")]})
        if args.param:
            raise UserValueError("--param goes with --reward NAME alone; with --config, edit the file's params")
        if args.timeout is not None:
            cfg.pool.sample_timeout_s = args.timeout
    elif args.reward is None:
        raise UserValueError("give --reward NAME (see `qwen25-rl reward list`) or --config FILE")
    else:
        cfg = _single_function_config(args.reward, args.param, args.timeout)
    sample = RewardSample(
        response=args.response,
        prompt=args.prompt,
        answer=_parse_answer(args.answer),
        data_source=args.data_source,
        response_length=args.response_length,
    )
    from qwen25_rl.reward.isolation import limit_memory

    with RewardScorer(cfg) as scorer:
        limit_memory(scorer, cfg.pool.memory_limit_mb)
        result = scorer.score_raw([sample])
    from qwen25_rl.reward.scorer import combine

    r = combine(sample, result[0], cfg)
    print(json.dumps({k: v for k, v in r.to_dict().items() if k != "dropped"}, indent=2, default=str))
    return 0 if r.status == "ok" else 1


@cli_command("list", parent="reward", help="List the registered rewards with their params and defaults.")
def reward_list(args: argparse.Namespace) -> int:
    from qwen25_rl.reward.catalog import all_rewards

    for name, spec in sorted(all_rewards().items()):
        print(f"{name}: {spec.description}")
        for field_name, field in spec.params_model.model_fields.items():
            default = "(required)" if field.is_required() else f"= {field.get_default(call_default_factory=True)!r}"
            print(f"    {field_name} {default}")
    return 0


@cli_command(
    "check",
    parent="reward",
    help="Load a config's reward section and start every function once (imports plugins, checks signatures).",
    arguments=[
        arg("config", help="YAML file with a reward: section"),
        arg("overrides", nargs="*", help="key.sub=value overrides within reward:"),
    ],
)
def reward_check(args: argparse.Namespace) -> int:
    from qwen25_rl.reward.scorer import RewardScorer

    cfg = reward_config_from_file(args.config, args.overrides)
    with RewardScorer(cfg):
        pass
    for f in cfg.functions:
        print(
            f"ok  {f.label}: type {f.type}, weight {f.weight:g}, data_sources {f.data_sources or 'all'}, timeout {cfg.timeout_for(f):g} s"
        )
    return 0


@cli_command(
    "serve-reward",
    help="Deploy a reward config or a reward model on Ray Serve (HTTP JSON, batched); runs until Ctrl-C.",
    arguments=[
        arg("--config", required=True, help="serve_reward YAML (see configs/tiny/serve_reward.yaml)"),
        arg("overrides", nargs="*", help="key.sub=value overrides"),
        arg("--detach", action="store_true", help="deploy and exit, leaving the app on the cluster (needs a running cluster: RAY_ADDRESS)"),
    ],
)
def serve_reward(args: argparse.Namespace) -> int:
    import os

    from qwen25_rl.ray_utils import init_ray

    cfg = load_config(args.config, args.overrides, schema=ServeRewardConfig)
    assert isinstance(cfg, ServeRewardConfig)
    if args.detach and not (cfg.ray.address or os.environ.get("RAY_ADDRESS")):
        raise UserValueError("--detach needs a running cluster to leave the deployment on (set RAY_ADDRESS or ray.address)")
    init_ray(cfg.ray, third_party_logs=cfg.logging.third_party_logs)
    from ray import serve

    from qwen25_rl.reward.serve import deploy

    reward_cfg = cfg.reward if cfg.target == "reward" else None
    rm_cfg = cfg.reward_model if cfg.target == "reward_model" else None
    url = deploy(cfg.serve, reward_cfg, rm_cfg)
    print(f'serving {cfg.target} at {url}  (POST {{"samples": [...]}}; GET for info)', flush=True)
    if args.detach:
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    print("shutting down", file=sys.stderr, flush=True)
    serve.delete(cfg.serve.app_name)
    serve.shutdown()
    return 0

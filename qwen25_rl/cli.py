"""`qwen25-rl` command line. Each subcommand is one decorated function in a commands module.

Stages register themselves here as they are built; there are no placeholder commands.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qwen25_rl.errors import UserError, message_of

Handler = Callable[[argparse.Namespace], int | None]


@dataclass
class Command:
    name: str
    help: str
    handler: Handler
    arguments: list[tuple[tuple[str, ...], dict[str, Any]]] = field(default_factory=list)
    parent: str | None = None


COMMANDS: dict[str, Command] = {}

# Modules whose import registers commands. Imported lazily so `--help` stays fast.
COMMAND_MODULES = [
    "qwen25_rl.commands.basic",
    "qwen25_rl.commands.reward",
    "qwen25_rl.commands.pretrain",
    "qwen25_rl.commands.rl",
    "qwen25_rl.commands.pipeline",
    "qwen25_rl.commands.evaluate",
    "qwen25_rl.commands.report",
]


def arg(*flags: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    return flags, kwargs


def cli_command(name: str, help: str, arguments: list | None = None, parent: str | None = None):
    """Register `fn(args) -> exit code` as `qwen25-rl [parent] name`."""

    def deco(fn: Handler) -> Handler:
        key = f"{parent} {name}" if parent else name
        if key in COMMANDS:
            raise ValueError(f"command {key!r} registered twice")
        COMMANDS[key] = Command(name, help, fn, list(arguments or []), parent)
        return fn

    return deco


def build_parser() -> argparse.ArgumentParser:
    for mod in COMMAND_MODULES:
        importlib.import_module(mod)
    parser = argparse.ArgumentParser(prog="qwen25-rl", description="The Qwen2.5 post-training recipe on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    # Parents first, so a group like `config` exists before `config show` attaches to it.
    for cmd in sorted(COMMANDS.values(), key=lambda c: c.parent is not None):
        if cmd.parent is None:
            p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        else:
            if cmd.parent not in groups:
                gp = sub.add_parser(cmd.parent, help=f"{cmd.parent} commands")
                groups[cmd.parent] = gp.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
            p = groups[cmd.parent].add_parser(cmd.name, help=cmd.help, description=cmd.help)
        for flags, kwargs in cmd.arguments:
            p.add_argument(*flags, **kwargs)
        p.set_defaults(_handler=cmd.handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args._handler(args)
    except UserError as e:
        # What the user must fix, said once without a traceback; anything else is a bug and
        # propagates with its traceback (exit status 1).
        print(f"qwen25-rl: error: {message_of(e)}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    # Run as `python -m qwen25_rl.cli`: command modules register into the importable
    # `qwen25_rl.cli`, not into this `__main__` copy, so dispatch through that module.
    from qwen25_rl.cli import main as _main

    sys.exit(_main())

"""qwen25-rl: the Qwen2.5 post-training recipe on one Ray cluster.

Import names. The repository keeps the folders `actors/`, `reward/`, `sandboxes/` and
`pretrain/` at its top level; they are parts of this package and are imported (and installed,
see pyproject.toml's package-dir) as `qwen25_rl.actors`, `qwen25_rl.reward`,
`qwen25_rl.sandboxes` and `qwen25_rl.pretrain`. No generic top-level name is ever imported, so a
user's own `reward.py` beside a job cannot shadow the package.

In a source checkout (the repository itself, or the copy of it that `ray job submit
--working-dir .` ships to every worker) those four folders are siblings of this one. The finder
below makes `qwen25_rl.reward` and the others resolve to the siblings of *this* copy, so one
checkout is always one consistent version of the code, whatever else is installed.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import PathFinder

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_CHECKOUT = os.path.dirname(_PACKAGE_DIR)
SIBLING_PACKAGES = ("actors", "reward", "sandboxes", "pretrain")


class _CheckoutSiblings:
    """Meta path finder for `qwen25_rl.<sibling>` in a source checkout (see module doc)."""

    @staticmethod
    def find_spec(fullname: str, path=None, target=None):
        head, _, tail = fullname.partition(".")
        if head != __name__ or tail not in SIBLING_PACKAGES:
            return None
        return PathFinder.find_spec(fullname, [_CHECKOUT])


def _is_checkout() -> bool:
    """Siblings beside this folder (a checkout), not inside it (an installed wheel)."""
    return os.path.isfile(os.path.join(_CHECKOUT, "sandboxes", "harness.py")) and not os.path.isdir(os.path.join(_PACKAGE_DIR, "sandboxes"))


if _is_checkout() and not any(isinstance(f, type) and f.__name__ == "_CheckoutSiblings" for f in sys.meta_path):
    sys.meta_path.insert(0, _CheckoutSiblings)


def child_process_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a Python child process started with `-m qwen25_rl...`: the folder
    that holds this copy of the package first on PYTHONPATH, so the child imports the same code
    as its parent however the parent found it (installed, a checkout, a job's working dir)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([_CHECKOUT, *filter(None, [env.get("PYTHONPATH")])])
    return env

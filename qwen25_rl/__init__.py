"""qwen25-rl: the Qwen2.5 post-training recipe on one Ray cluster.

Import names. The repository keeps the folders `actors/`, `reward/`, `sandboxes/` and
`pretrain/` at its top level; they are parts of this package and are imported (and installed,
see pyproject.toml's package-dir) as `qwen25_rl.actors`, `qwen25_rl.reward`,
`qwen25_rl.sandboxes` and `qwen25_rl.pretrain`. No generic top-level name is ever imported, so a
user's own `reward.py` beside a job cannot shadow the package.

In a source checkout these four names are links inside this folder (`qwen25_rl/reward ->
../reward`, ...), so plain Python imports find them with nothing installed, and so do the tools
that walk the package (import-linter's graph, the `ray job submit --working-dir .` upload, which
copies the linked files). An installed wheel holds them as ordinary subfolders.
"""

from __future__ import annotations

import os

_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_process_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a Python child process started with `-m qwen25_rl...`: the folder
    that holds this copy of the package first on PYTHONPATH, so the child imports the same code
    as its parent however the parent found it (installed, a checkout, a job's working dir)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([_CHECKOUT, *filter(None, [env.get("PYTHONPATH")])])
    return env

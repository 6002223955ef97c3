"""The layer rules of DESIGN.md section 1 are import-linter contracts (pyproject.toml,
[tool.importlinter]); `make lint` runs `lint-imports` over this checkout. These tests show the
contracts see the whole package and can fail."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_import_graph_sees_every_part_of_the_package():
    """actors/, reward/, sandboxes/ and pretrain/ are linked into qwen25_rl/ in a checkout;
    without them in the graph the contracts about them would hold vacuously."""
    import grimp

    graph = grimp.build_graph("qwen25_rl", cache_dir=None)
    for part in (
        "qwen25_rl.actors.policy",
        "qwen25_rl.reward.math",
        "qwen25_rl.sandboxes.harness",
        "qwen25_rl.pretrain.driver",
        "qwen25_rl.stages.grpo",
    ):
        assert part in graph.modules


def test_a_wrong_import_breaks_a_contract(monkeypatch, capsys):
    """A sandbox module importing the reward package breaks the layers."""
    from importlinter.cli import lint_imports

    monkeypatch.chdir(REPO)
    bad = REPO / "sandboxes" / "_layer_probe.py"
    bad.write_text("from qwen25_rl.reward import types  # noqa: F401\n")
    try:
        status = lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True, no_logo=True)
    finally:
        os.unlink(bad)
    assert status != 0 and "qwen25_rl.sandboxes._layer_probe -> qwen25_rl.reward.types" in capsys.readouterr().out

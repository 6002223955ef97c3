"""The layer rules of DESIGN.md section 1, as import-linter contracts (pyproject.toml,
[tool.importlinter]), checked over this checkout: a wrong import fails CI.

import-linter finds a package's modules by walking its folder. Here four parts of `qwen25_rl`
live in folders beside it (actors/, reward/, sandboxes/, pretrain/; see qwen25_rl/__init__.py),
so the module finder below walks those too, naming their modules `qwen25_rl.<folder>....` as
they are imported.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkout_graph_finder(monkeypatch):
    """grimp finds `qwen25_rl`'s folder only; add the four sibling folders as packages of their
    own (`qwen25_rl.reward` found in reward/, ...), which is how Python imports them here."""
    from grimp.application import usecases

    from qwen25_rl import SIBLING_PACKAGES

    find = usecases._find_packages

    def find_with_siblings(file_system, package_names):
        found = find(file_system=file_system, package_names=package_names)
        if "qwen25_rl" in package_names:
            module_finder = usecases.settings.MODULE_FINDER
            for sibling in SIBLING_PACKAGES:
                found.add(
                    module_finder.find_package(
                        package_name=f"qwen25_rl.{sibling}", package_directory=str(REPO / sibling), file_system=file_system
                    )
                )
        return found

    monkeypatch.setattr(usecases, "_find_packages", find_with_siblings)
    monkeypatch.chdir(REPO)


def test_import_linter_contracts_hold(checkout_graph_finder, capsys):
    from importlinter.cli import lint_imports

    status = lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True, no_logo=True)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "Contracts: 4 kept, 0 broken" in out, out


def test_the_checkout_finder_sees_every_part_of_the_package(checkout_graph_finder):
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


def test_a_wrong_import_breaks_a_contract(checkout_graph_finder, tmp_path, capsys):
    """The contracts can fail: a sandbox module importing the reward package breaks the layers."""
    from importlinter.cli import lint_imports

    bad = REPO / "sandboxes" / "_layer_probe.py"
    bad.write_text("from qwen25_rl.reward import types  # noqa: F401\n")
    try:
        status = lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True, no_logo=True)
    finally:
        os.unlink(bad)
    assert status != 0 and "qwen25_rl.sandboxes._layer_probe -> qwen25_rl.reward.types" in capsys.readouterr().out

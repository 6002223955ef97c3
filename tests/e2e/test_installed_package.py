"""`pip install .` (not editable) into a fresh venv: the package installs under no generic
top-level name, and the installed copy runs the tiny GRPO config from a user's folder outside
the repository that holds reward.py, actors.py, sandboxes.py and pretrain.py of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwen25_rl.paths import REPO_ROOT
from qwen25_rl.runs import read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The site-packages of a fresh venv with this project's wheel installed (without its
    dependencies: they come from the test's own environment, as on any machine that has them)."""
    root = tmp_path_factory.mktemp("install")
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO_ROOT)],
        check=True,
        timeout=600,
        cwd=root,
    )
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (wheel,) = wheels.glob("qwen25_rl-*.whl")
    site = next((venv / "lib").glob("python*/site-packages"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300)
    return site


def test_the_wheel_installs_no_generic_top_level_name(installed):
    (record,) = installed.glob("qwen25_rl-*.dist-info/RECORD")
    top = {line.split(",")[0].split("/")[0] for line in record.read_text().splitlines()}
    top = {t for t in top if not t.endswith(".dist-info") and t not in ("..", "bin")}
    assert top == {"qwen25_rl"}
    for part in ("actors", "reward", "sandboxes", "pretrain"):
        assert (installed / "qwen25_rl" / part / "__init__.py").is_file()
        assert not (installed / part).exists()
    assert (installed / "qwen25_rl" / "sandboxes" / "harness.py").is_file()


def test_the_installed_package_runs_grpo_from_a_users_folder(installed, shadowing_folder, tiny_model_dir, digit_task, grpo_overrides):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(installed)
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import qwen25_rl.reward, qwen25_rl.sandboxes.harness as h; print(qwen25_rl.reward.__file__); print(h.__file__)",
        ],
        cwd=shadowing_folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert where.returncode == 0, where.stderr[-2000:]
    assert all(line.startswith(str(installed)) for line in where.stdout.split()), where.stdout
    out = shadowing_folder / "runs"
    overrides = grpo_overrides(tiny_model_dir, digit_task, out, "installed", **{"algorithm.total_steps": 2, "rollout.engine": "hf"})
    proc = subprocess.run(
        [sys.executable, "-m", "qwen25_rl", "grpo", "--config", "configs/tiny/grpo.yaml", *overrides],
        cwd=shadowing_folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "was imported instead of" not in proc.stdout + proc.stderr
    assert [r["step"] for r in read_metrics(out / "installed" / "metrics.jsonl")] == [1, 2]
    assert (out / "installed" / "final" / "config.json").is_file()

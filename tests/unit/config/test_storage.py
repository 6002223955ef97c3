"""Run folders and config paths resolve against a storage root that outlives a Ray job."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qwen25_rl.config import load_config
from qwen25_rl.config.storage import STORAGE_ENV, in_ray_job_copy, resolve_path, storage_root


@pytest.fixture
def no_storage_env(monkeypatch):
    monkeypatch.delenv(STORAGE_ENV, raising=False)


def test_storage_root_is_the_current_directory_outside_a_job(tmp_path, no_storage_env):
    assert storage_root(None, cwd=tmp_path) == tmp_path.resolve()


def test_storage_root_leaves_a_ray_job_working_directory_copy(tmp_path, no_storage_env):
    job_cwd = tmp_path / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_abc"
    assert in_ray_job_copy(job_cwd)
    root = storage_root(None, cwd=job_cwd)
    assert root == Path("~/qwen25-rl").expanduser()
    assert "runtime_resources" not in root.parts


def test_storage_setting_wins_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "from-env"))
    assert storage_root(None, cwd=tmp_path) == tmp_path / "from-env"
    assert storage_root(str(tmp_path / "from-config"), cwd=tmp_path) == tmp_path / "from-config"


def test_input_path_prefers_storage_then_working_directory(tmp_path):
    root, cwd = tmp_path / "store", tmp_path / "work"
    (root / "runs" / "m").mkdir(parents=True)
    (cwd / "data").mkdir(parents=True)
    (cwd / "data" / "x.jsonl").write_text("{}\n")
    # produced by an earlier stage: found in storage
    assert resolve_path("runs/m", "input", root, cwd) == str(root / "runs" / "m")
    # shipped in the job's working directory: found there
    assert resolve_path("data/x.jsonl", "input", root, cwd) == str((cwd / "data" / "x.jsonl").resolve())
    # not there yet (a later stage writes it): storage
    assert resolve_path("runs/later/final", "input", root, cwd) == str(root / "runs" / "later" / "final")
    # outputs always go to storage; absolute paths are kept
    assert resolve_path("data", "output", root, cwd) == str(root / "data")
    assert resolve_path("/abs/p", "input", root, cwd) == "/abs/p"


def test_loaded_config_names_absolute_paths_under_the_storage_root(tmp_path, monkeypatch):
    store = tmp_path / "store"
    monkeypatch.setenv(STORAGE_ENV, str(store))
    cfg_file = tmp_path / "sft.yaml"
    cfg = yaml.safe_load((Path(__file__).parents[3] / "configs" / "tiny" / "sft.yaml").read_text())
    cfg_file.write_text(yaml.safe_dump(cfg))
    # a working directory holding none of these files (an input found there would be taken from it)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    loaded = load_config(cfg_file)
    assert loaded.logging.output_dir == str(store / "runs")
    assert loaded.model.path == str(store / "runs" / "tiny-pretrain" / "final")
    assert loaded.data.synthetic.out_dir == str(store / "runs" / "data" / "synthetic-tiny")
    assert loaded.data.train_files == [str(store / "runs" / "data" / "synthetic-tiny" / "sft_train.jsonl")]

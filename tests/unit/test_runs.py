"""Run folders: resolved config, metrics.jsonl, complete-checkpoint discovery."""

from __future__ import annotations

import json
import math

from qwen25_rl.config import StageConfig, load_config
from qwen25_rl.runs import RunDir, read_metrics


def test_run_dir_saves_resolved_config_that_reloads_equal(tmp_path):
    # (absolute paths: relative ones come back resolved against the storage root)
    cfg = StageConfig(seed=11, logging={"output_dir": str(tmp_path)})
    run = RunDir.create(cfg, tmp_path, "r1")
    assert load_config(run.path / "config.yaml") == cfg


def test_metrics_rows_are_appended_and_flushed_per_step(tmp_path):
    run = RunDir.create(StageConfig(), tmp_path, "r2")
    w = run.metrics_writer()
    w.log(1, {"loss": 2.0})
    # Readable before close: a killed run keeps what it logged.
    assert read_metrics(run.path / "metrics.jsonl")[0]["loss"] == 2.0
    w.log(2, {"loss": float("nan"), "reward": 1})
    w.close()
    rows = read_metrics(run.path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[1]["loss"] == "nan" and math.isnan(float(rows[1]["loss"]))


def test_torn_last_metrics_line_is_skipped(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text(json.dumps({"step": 1}) + "\n" + '{"step": 2, "lo')
    assert read_metrics(p) == [{"step": 1}]


def test_tensorboard_events_are_written(tmp_path):
    run = RunDir.create(StageConfig(), tmp_path, "r3")
    w = run.metrics_writer(tensorboard=True)
    w.log(1, {"loss": 1.5, "name": "text is not a scalar"})
    w.close()
    assert any((run.path / "tensorboard").iterdir())


def test_latest_checkpoint_ignores_incomplete_ones(tmp_path):
    run = RunDir.create(StageConfig(), tmp_path, "r4")
    for step, complete in [(2, True), (10, True), (12, False)]:
        d = run.checkpoint_dir(step)
        d.mkdir()
        if complete:
            (d / "COMPLETE").touch()
    assert run.latest_checkpoint().name == "step_10"


def test_truncate_metrics_keeps_rows_up_to_resume_step(tmp_path):
    run = RunDir.create(StageConfig(), tmp_path, "r5")
    w = run.metrics_writer()
    for step in (1, 2, 3, 4):
        w.log(step, {"x": step})
    w.close()
    assert run.truncate_metrics(2) == 2
    assert [r["step"] for r in read_metrics(run.path / "metrics.jsonl")] == [1, 2]

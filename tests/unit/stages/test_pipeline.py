"""`qwen25-rl pipeline`: the plan (stage configs chained through final/ folders, validated before
any work) and the run loop's skip / resume / force rules, with stand-in stage types (the real
stages run in tests/integration/stages/test_pipeline_stages.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from qwen25_rl.config.loader import ConfigError
from qwen25_rl.demo import PIPELINE, STAGES
from qwen25_rl.errors import UserValueError
from qwen25_rl.stages import pipeline as pl


def test_each_stage_starts_from_the_stage_it_names(tmp_path):
    cfg, base = pl.load_pipeline(PIPELINE, [f"output_dir={tmp_path}"])
    planned = {p.spec.name: p.config for p in pl.plan(cfg, base)}
    assert list(planned) == ["pretrain", "sft", "eval-sft", "rm", "dpo", "eval-dpo", "grpo", "eval-grpo"]
    assert [s for s in planned if not s.startswith("eval-")] == list(STAGES)
    for stage in ("sft", "dpo", "grpo"):  # each policy stage's model, evaluated the same way
        assert planned[f"eval-{stage}"].model.path == str(tmp_path / stage / "final")
        assert planned[f"eval-{stage}"].data == planned["eval-sft"].data
    assert planned["pretrain"].model.preset is not None
    assert planned["sft"].model.path == str(tmp_path / "pretrain" / "final")
    assert planned["rm"].model.path == planned["dpo"].model.path == str(tmp_path / "sft" / "final")
    assert planned["grpo"].model.path == str(tmp_path / "dpo" / "final")
    assert [(m.name, m.path) for m in planned["grpo"].reward_models] == [("rm", str(tmp_path / "rm" / "final"))]
    for name, c in planned.items():
        assert (c.logging.output_dir, c.logging.run_name) == (str(tmp_path), name)


def test_evaluation_after_names_an_existing_stage(tmp_path):
    with pytest.raises(ConfigError, match="evaluation.after: 'nope' names no stage"):
        pl.load_pipeline(PIPELINE, [f"output_dir={tmp_path}", "evaluation.after=[sft, nope]"])


def test_stage_prefixed_overrides_reach_that_stage_only(tmp_path):
    cfg, base = pl.load_pipeline(PIPELINE, [f"output_dir={tmp_path}", "grpo.algorithm.total_steps=3", "pretrain.seed=7"])
    planned = {p.spec.name: p.config for p in pl.plan(cfg, base)}
    assert planned["grpo"].algorithm.total_steps == 3
    assert planned["pretrain"].seed == 7 and planned["sft"].seed == 0


def test_a_misspelled_stage_key_fails_at_plan_naming_the_override(tmp_path):
    cfg, base = pl.load_pipeline(PIPELINE, [f"output_dir={tmp_path}", "grpo.algorithm.total_step=3"])
    with pytest.raises(ConfigError, match=r"algorithm.total_step.*stages.grpo.overrides"):
        pl.plan(cfg, base)


def _write(tmp_path: Path, stages: list[dict], **top) -> Path:
    p = tmp_path / "pipe.yaml"
    p.write_text(yaml.safe_dump({"stage": "pipeline", "output_dir": str(tmp_path / "out"), "stages": stages, **top}))
    return p


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ([{"name": "a", "config": {}, "from": "b"}, {"name": "b", "config": {}}], "'b' is not an earlier stage"),
        ([{"name": "a", "config": {}, "from": "zz"}], "'zz' names no stage"),
        ([{"name": "a", "config": {}}, {"name": "a", "config": {}}], "two stages are named 'a'"),
        ([{"name": "a/b", "config": {}}], "not a folder name"),
    ],
)
def test_bad_stage_lists_are_refused_naming_the_stage(tmp_path, stages, message):
    with pytest.raises(ConfigError, match=message):
        pl.load_pipeline(_write(tmp_path, stages))


def test_a_reference_to_a_later_stage_is_refused(tmp_path):
    p = _write(tmp_path, [{"name": "a", "stage": "sft", "config": str(PIPELINE.parent / "sft.yaml"), "overrides": {"model.path": "${b}"}}])
    with pytest.raises(UserValueError, match=r"stages.a.overrides.model.path: \$\{b\} names no earlier stage"):
        pl.plan(*pl.load_pipeline(p))


# ---------------------------------------------------------------------------------------------
# the run loop, with stand-in stages of type "base" (the plain StageConfig)


@pytest.fixture
def fake_stages(monkeypatch):
    calls: list[str] = []
    fail: set[str] = set()

    def run(cfg):
        name = cfg.logging.run_name
        calls.append(name)
        run_dir = Path(cfg.logging.output_dir) / name
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.5}) + "\n")
        if name in fail:
            raise RuntimeError(f"{name} crashed")
        (run_dir / "final").mkdir(exist_ok=True)
        return run_dir

    monkeypatch.setitem(pl.PIPELINE_STAGES, "base", pl.StageType("base", run, lambda d: d / "final"))
    monkeypatch.setattr("qwen25_rl.ray_utils.init_ray", lambda cfg, **kw: {})
    return calls, fail


def _two_stages(tmp_path, seed_b=0):
    return _write(
        tmp_path,
        [
            {"name": "a", "stage": "base", "config": {}},
            {"name": "b", "stage": "base", "config": {"seed": seed_b}, "from": "a"},
        ],
    )


def _run(path, force=False):
    cfg, base = pl.load_pipeline(path)
    return pl.run_pipeline(cfg, base, force=force, say=lambda _: None)


def test_a_rerun_skips_completed_stages_and_force_runs_them_again(tmp_path, fake_stages):
    calls, _ = fake_stages
    path = _two_stages(tmp_path)
    assert [r["action"] for r in _run(path)["stages"]] == ["ran", "ran"]
    assert [r["action"] for r in _run(path)["stages"]] == ["skipped", "skipped"]
    assert [r["action"] for r in _run(path, force=True)["stages"]] == ["ran", "ran"]
    assert calls == ["a", "b", "a", "b"]
    summary = json.loads((tmp_path / "out" / pl.SUMMARY_FILE).read_text())
    assert summary["stages"][0]["metrics"] == {"loss": 0.5}


def test_an_interrupted_stage_resumes_in_its_folder_after_the_completed_ones(tmp_path, fake_stages):
    calls, fail = fake_stages
    path = _two_stages(tmp_path)
    fail.add("b")
    with pytest.raises(RuntimeError, match="b crashed"):
        _run(path)
    state = json.loads((tmp_path / "out" / pl.STATE_FILE).read_text())["stages"]
    assert state["a"]["status"] == "completed" and state["b"]["status"] == "failed"
    fail.clear()
    rows = _run(path)["stages"]
    assert [r["action"] for r in rows] == ["skipped", "resumed"]
    assert calls == ["a", "b", "b"]
    # the stage's own folder (its checkpoints) was kept for its resume
    assert (tmp_path / "out" / "b" / "metrics.jsonl").is_file()


def test_a_completed_stage_whose_config_changed_needs_force(tmp_path, fake_stages):
    _run(_two_stages(tmp_path))
    with pytest.raises(UserValueError, match=r"\[2/2\] b \(base\): completed with a different config.*--force"):
        _run(_two_stages(tmp_path, seed_b=1))


def test_the_pipeline_report_tabulates_heldout_accuracy_after_each_evaluated_stage(tmp_path, fake_stages, monkeypatch):
    def fake_eval(cfg):
        run_dir = Path(cfg.logging.output_dir) / cfg.logging.run_name
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 0, "eval/accuracy": 0.25}) + "\n")
        accuracy = 0.25 if "/a/" in cfg.model.path else 0.5
        (run_dir / "summary.json").write_text(json.dumps({"accuracy": accuracy, "items": 4, "pass@1": accuracy}))
        return run_dir

    monkeypatch.setitem(pl.PIPELINE_STAGES, "eval", pl.StageType("eval", fake_eval, lambda d: d / "summary.json"))
    path = _write(
        tmp_path,
        [{"name": "a", "stage": "base", "config": {}}, {"name": "b", "stage": "base", "config": {}, "from": "a"}],
        evaluation={"config": {"data": {"eval_files": ["x.jsonl"]}}, "after": ["a", "b"]},
    )
    summary = _run(path)
    assert [r["stage"] for r in summary["stages"]] == ["a", "eval-a", "b", "eval-b"]
    assert [(a["after"], a["accuracy"]) for a in summary["heldout_accuracy"]] == [("a", 0.25), ("b", 0.5)]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Held-out accuracy after each stage" in html and "0.500" in html


def test_stages_after_one_that_ran_again_start_over(tmp_path, fake_stages):
    calls, _ = fake_stages
    path = _two_stages(tmp_path)
    _run(path)
    # a's output is gone (deleted by hand): a runs again, and b, built on the old a, too
    import shutil

    shutil.rmtree(tmp_path / "out" / "a" / "final")
    assert [r["action"] for r in _run(path)["stages"]] == ["ran", "ran"]
    assert calls == ["a", "b", "a", "b"]

"""Run reports (qwen25_rl.reports): plots chosen from the keys a run logged, a self-contained
HTML page with escaped text, PNG files, and the report every stage writes when it ends
(qwen25_rl.runs.stage_run)."""

from __future__ import annotations

import base64
import json
import math
import re
import subprocess
import sys

import pytest

from qwen25_rl import reports
from qwen25_rl.config import StageConfig
from qwen25_rl.errors import UserPathError
from qwen25_rl.reports import PlotSpec, assign_plots, read_run_metrics, write_report
from qwen25_rl.runs import RunDir, stage_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<script>alert('x')</script>"


def write_rows(path, rows, tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def grpo_rows(steps: int = 12) -> list[dict]:
    """Rows shaped like a GRPO run's (stages/grpo.py, grpo_collector.py, actors/policy.py):
    an evaluation-only row at step 0, training rows with evaluation merged in every 5 steps."""
    rows = [{"step": 0, "time": 1000.0, "eval/accuracy": 0.1, "eval/pass@4": 0.3, "eval/prompts": 32.0}]
    for s in range(1, steps + 1):
        row = {
            "step": s,
            "time": 1000.0 + 2 * s,
            "reward/mean": 0.1 * s,
            "reward/std": 0.5 - 0.01 * s,
            "reward/math/mean": 0.05 * s,
            "reward/length/mean": -0.2 + 0.01 * s,
            "reward/rm/helpfulness/mean": 1.0 + 0.1 * s,
            "reward/error": 0.0,  # never changes: listed, not drawn
            "accuracy": 0.05 * s,
            "policy/kl": 0.001 * s,
            "policy/approx_kl": 0.0005 * s,
            "policy/entropy": 1.0 - 0.02 * s,
            "policy/clip_frac": 0.01 * (s % 3),
            "response_length/mean": 30.0 + s,
            "time/generate_s": 0.5 + 0.01 * s,
            "time/train_s": 0.6 + 0.02 * (s % 2),
            "time/step_s": 1.2 + 0.01 * s,
            "policy_version": s,
            "mystery/metric": float(s * s),  # no spec claims it: "other metrics"
        }
        if s % 5 == 0:
            row |= {"eval/accuracy": 0.1 + 0.02 * s, "eval/pass@4": 0.3 + 0.02 * s, "eval/prompts": 32.0}
        rows.append(row)
    return rows


def pretrain_rows(steps: int = 10) -> list[dict]:
    """Rows shaped like pretrain.worker's through pretrain.callbacks: a data summary, an
    evaluation at step 0, two phases, text fields (phase, batch_hash, checkpoint)."""
    rows = [
        {"step": 0, "time": 500.0, "event": "data", "phase": "general", "rows": 10, "tokens": 4096, "sources": {"a": {"tokens": 4096}}},
        {"step": 0, "time": 501.0, "phase": "general", "eval_loss": 6.7, "wall_time": 501.0},
    ]
    for s in range(1, steps + 1):
        phase = "general" if s <= steps // 2 else "long_context"
        row = {
            "step": s,
            "time": 501.0 + s,
            "phase": phase,
            "loss": 6.0 / s,
            "lr": 1e-4 * min(1.0, s / 3),
            "grad_norm": 3.0 / s,
            "tokens": 4096,
            "tokens_per_s": 7000.0 + 10 * s,
            "step_time_s": 0.5 + 0.01 * (s % 3),
            "batch_hash": f"{s:016x}",
        }
        if s == steps:
            row |= {"eval_loss": 1.0, "checkpoint": f"/x/checkpoints/step_{s}"}
        rows.append(row)
    return rows


def make_run(tmp_path, name: str, rows: list[dict], *, stage: str = "grpo", tail: str = ""):
    run = tmp_path / name
    run.mkdir(parents=True)
    write_rows(run / "metrics.jsonl", rows, tail)
    (run / "config.yaml").write_text(f"stage: {stage}\nlogging:\n  run_name: {name}\n")
    return run


@pytest.fixture(scope="module")
def grpo_report(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("grpo"), "grpo-run", grpo_rows())
    return run, write_report(run)


@pytest.fixture(scope="module")
def pretrain_report(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("pretrain"), "pt-run", pretrain_rows(), stage="pretrain")
    return run, write_report(run)


# -- which plots ------------------------------------------------------------------------------


def test_patterns_match_one_segment_or_any_depth():
    spec = PlotSpec("t", ("reward/*/mean", "time/**"), "y", exclude=("time/skip_s",))
    assert spec.matches("reward/math/mean") and not spec.matches("reward/rm/helpfulness/mean")
    assert not spec.matches("reward/mean")
    assert spec.matches("time/reward_model/rm_s") and not spec.matches("time/skip_s")


def test_grpo_like_keys_get_reward_component_kl_and_phase_plots():
    keys = {k for r in grpo_rows() for k in r} - {"step", "time"}
    assigned, other = assign_plots(sorted(keys))
    by_title = {spec.title: ks for spec, ks in assigned}
    assert set(by_title["Reward"]) == {"reward/mean", "reward/std"}
    assert set(by_title["Reward components"]) == {"reward/math/mean", "reward/length/mean"}
    assert by_title["Reward-model criteria"] == ["reward/rm/helpfulness/mean"]
    assert set(by_title["KL divergence"]) == {"policy/kl", "policy/approx_kl"}
    assert set(by_title["Held-out accuracy"]) == {"eval/accuracy", "eval/pass@4"}
    assert set(by_title["Seconds per phase"]) == {"time/generate_s", "time/train_s", "time/step_s"}
    for title in ("Training accuracy", "Entropy", "Clip fraction", "Response length"):
        assert title in by_title
    assert set(other) == {"mystery/metric", "policy_version", "eval/prompts"}


def test_stage_key_names_each_land_in_their_plot():
    """Key names the stages log today (grep of stages/, actors/, pretrain/) reach their plot."""
    expect = {
        "round/pairs": "Pairs per round",
        "dpo/loss": "DPO loss",
        "dpo/loss/preference": "DPO loss",
        "dpo/reward_margin": "DPO implicit rewards and margin",
        "round/reward/math/mean": "Reward components",
        "eval_accuracy": "Held-out accuracy",
        "eval_accuracy/helpfulness": "Held-out accuracy",
        "accuracy/helpfulness": "Training accuracy",
        "loss/rating": "Loss",
        "eval_loss": "Loss",
        "tokens_per_s": "Tokens per second",
        "lr": "Learning rate",
        "policy/lr": "Learning rate",
        "time/reward_model/rm_s": "Seconds per phase",
        "step_time_s": "Seconds per phase",
        "reward/mean_kept": "Reward",
        "policy/clip_frac_high": "Clip fraction",
        "response_length/clipped_frac": "Responses cut at max length",
    }
    assigned, other = assign_plots(list(expect))
    got = {k: spec.title for spec, ks in assigned for k in ks}
    assert got == expect and other == []


def test_grpo_report_draws_its_plots_and_lists_flat_and_other_keys(grpo_report):
    run, html = grpo_report
    files = {p.name for p in (run / "plots").iterdir()}
    for name in ("reward.png", "reward-components.png", "reward-model-criteria.png", "kl-divergence.png", "held-out-accuracy.png"):
        assert name in files
    assert "other-metrics-1.png" in files
    page = html.read_text()
    other = page.split("<h2>Other metrics</h2>", 1)[1].split("<h2>", 1)[0]
    assert "mystery/metric" in other and "policy_version" in other
    flat = page.split("<h2>Not drawn: one value throughout</h2>", 1)[1].split("</table>", 1)[0]
    assert "reward/error" in flat and "Reward errors and drops" in flat


def test_pretrain_report_draws_loss_tokens_per_s_and_lr(pretrain_report):
    run, html = pretrain_report
    files = {p.name for p in (run / "plots").iterdir()}
    assert {"loss.png", "tokens-per-second.png", "learning-rate.png", "gradient-norm.png"} <= files
    page = html.read_text()
    # The data summary row is a table, not a point on the "tokens" plot.
    assert "sources.a.tokens" in page
    m = read_run_metrics(run / "metrics.jsonl")
    assert m.series["tokens"][0][0] == 1  # the step-0 data row is not in the series
    assert m.marks == [(6, "long_context")]
    assert m.last["checkpoint"] == (10, "/x/checkpoints/step_10")


# -- the HTML -------------------------------------------------------------------------------


def test_report_is_self_contained(grpo_report):
    _, html = grpo_report
    page = html.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    srcs = re.findall(r'<img src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    for s in srcs:
        assert base64.b64decode(s.split(",", 1)[1]).startswith(PNG_SIGNATURE)
    for text in ("grpo-run", "stage</td><td>grpo", "Final values", "Resolved config", "duration</td><td>24.0s"):
        assert text in page


def test_png_files_are_valid_and_match_the_embedded_images(grpo_report):
    from PIL import Image

    run, html = grpo_report
    page = html.read_text()
    pngs = sorted((run / "plots").glob("*.png"))
    assert pngs
    for p in pngs:
        data = p.read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.size[0] > 300 and im.size[1] > 150
        assert base64.b64encode(data).decode() in page


def test_hostile_keys_values_and_config_are_escaped(tmp_path):
    # "$" would start TeX math in a matplotlib text; "_" hides a legend label.
    odd = {HOSTILE: 1.0, "cost $x_{1 $": 2.0, "_hidden": 3.0, "dpo/loss/$oops": 4.0}
    rows = [{"step": s, "time": float(s), **{k: v * s for k, v in odd.items()}, "loss": 1.0 / s, "note": HOSTILE} for s in range(1, 4)]
    run = make_run(tmp_path, "hostile", rows)
    (run / "config.yaml").write_text(f'stage: grpo\nlogging:\n  run_name: "{HOSTILE}"\n')
    page = write_report(run, [(HOSTILE, [["criterion", "accuracy"], [HOSTILE, 0.5]])]).read_text()
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert (run / "plots" / "dpo-loss.png").is_file() and "cost $x_{1 $" in page


def test_non_finite_values_and_a_torn_last_line(tmp_path):
    rows = [{"step": s, "time": float(s), "loss": 1.0 / s, "grad_norm": 1.0} for s in range(1, 6)]
    rows[2]["loss"] = "nan"
    rows[3]["grad_norm"] = "inf"
    run = make_run(tmp_path, "nan", rows, stage="sft", tail='{"step": 6, "loss": 0.')
    m = read_run_metrics(run / "metrics.jsonl")
    assert m.unreadable == 1 and m.rows == 5
    assert math.isnan(m.series["loss"][1][2]) and m.series["grad_norm"][1][3] == math.inf
    page = write_report(run).read_text()
    assert (run / "plots" / "loss.png").is_file() and (run / "plots" / "gradient-norm.png").is_file()
    assert "1 skipped" in page


def test_an_empty_metrics_file_still_gives_a_page(tmp_path):
    run = make_run(tmp_path, "empty", [])
    page = write_report(run).read_text()
    assert "No metric rows yet" in page and not list((run / "plots").glob("*.png"))


def test_extra_sections_are_shown_stored_and_replaced(tmp_path):
    run = make_run(tmp_path, "extra", grpo_rows(3))
    table = [["stage", "held-out accuracy"], ["sft", 0.25], ["grpo", 0.5]]
    page = write_report(run, [("Held-out accuracy per stage", table), ("Notes", "<p><b>given</b> html</p>")]).read_text()
    assert "<th>held-out accuracy</th>" in page and "<td class=num>0.5</td>" in page
    assert "<p><b>given</b> html</p>" in page
    # A rebuild from metrics.jsonl keeps them; [] removes them.
    assert "Held-out accuracy per stage" in write_report(run).read_text()
    assert "Held-out accuracy per stage" not in write_report(run, []).read_text()
    with pytest.raises(TypeError, match="extra report section"):
        write_report(run, [("no body",)])


def test_a_rebuild_removes_plots_whose_keys_are_gone(tmp_path):
    run = make_run(tmp_path, "rebuild", grpo_rows(4))
    write_report(run)
    assert (run / "plots" / "kl-divergence.png").is_file()
    (run / "plots" / "mine.png").write_bytes(PNG_SIGNATURE)  # not the report's: left alone
    write_rows(run / "metrics.jsonl", [{k: v for k, v in r.items() if "kl" not in k} for r in grpo_rows(4)])
    write_report(run)
    assert not (run / "plots" / "kl-divergence.png").exists()
    assert (run / "plots" / "mine.png").exists() and (run / "plots" / "reward.png").exists()


def test_out_writes_the_page_and_its_plots_elsewhere(tmp_path):
    run = make_run(tmp_path, "src", pretrain_rows(4), stage="pretrain")
    out = write_report(run, out=tmp_path / "elsewhere" / "r.html")
    assert out.is_file() and (tmp_path / "elsewhere" / "r-plots" / "loss.png").is_file()
    assert not (run / "report.html").exists()


def test_a_folder_without_metrics_is_a_user_error_naming_the_path(tmp_path):
    with pytest.raises(UserPathError, match=re.escape(str(tmp_path / "metrics.jsonl"))):
        write_report(tmp_path)
    with pytest.raises(UserPathError, match="no such run folder"):
        write_report(tmp_path / "missing")


def test_importing_reports_pulls_in_neither_matplotlib_nor_ray():
    code = "import sys, qwen25_rl.reports; print(sorted(m for m in ('matplotlib', 'ray', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- the report every stage writes (qwen25_rl.runs.stage_run) ----------------------------------


def _log_steps(run: RunDir, n: int = 3) -> None:
    w = run.metrics_writer()
    for s in range(1, n + 1):
        w.log(s, {"loss": 1.0 / s, "lr": 1e-3})
    w.close()


def test_stage_run_writes_the_report_when_the_stage_ends(tmp_path, capsys):
    with stage_run(StageConfig(), tmp_path, "ok", "sft") as run:
        run.mark_started()
        _log_steps(run)
    assert (tmp_path / "ok" / "report.html").is_file() and (tmp_path / "ok" / "plots" / "loss.png").is_file()
    assert f"report: {tmp_path / 'ok' / 'report.html'}" in capsys.readouterr().out


def test_stage_run_writes_the_report_of_a_failed_started_stage_and_keeps_its_error(tmp_path):
    with pytest.raises(RuntimeError, match="worker died"):
        with stage_run(StageConfig(), tmp_path, "failed", "sft") as run:
            run.mark_started()
            _log_steps(run)
            raise RuntimeError("worker died")
    assert (tmp_path / "failed" / "report.html").is_file()


def test_stage_run_without_a_started_stage_or_with_reports_off_writes_none(tmp_path):
    with pytest.raises(ValueError):
        with stage_run(StageConfig(), tmp_path, "early", "sft"):
            raise ValueError("bad input")
    assert not (tmp_path / "early").exists()
    cfg = StageConfig.model_validate({"logging": {"report": False}})
    with stage_run(cfg, tmp_path, "off", "sft") as run:
        run.mark_started()
        _log_steps(run)
    assert not (tmp_path / "off" / "report.html").exists()


def test_a_failing_report_does_not_fail_the_stage(tmp_path, monkeypatch, capsys):
    def broken(*_a, **_k):
        raise RuntimeError("plotting exploded\nsecond line")

    monkeypatch.setattr(reports, "write_report", broken)
    with stage_run(StageConfig(), tmp_path, "survives", "sft") as run:
        run.mark_started()
        _log_steps(run)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "survives") in err[0] and "plotting exploded second line" in err[0]
    # A failed stage keeps its own error, not the report's.
    with pytest.raises(KeyError, match="the stage's own"):
        with stage_run(StageConfig(), tmp_path, "fails", "sft") as run:
            run.mark_started()
            _log_steps(run)
            raise KeyError("the stage's own")

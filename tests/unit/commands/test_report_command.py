"""`qwen25-rl report RUN_DIR [--out FILE]` (qwen25_rl/commands/report.py)."""

from __future__ import annotations

import json

from qwen25_rl import reports
from qwen25_rl.cli import main


def _run_folder(path, steps: int = 4):
    path.mkdir(parents=True)
    rows = [{"step": s, "time": 100.0 + s, "loss": 2.0 / s, "tokens_per_s": 900.0 + s} for s in range(1, steps + 1)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "config.yaml").write_text("stage: sft\n")
    return path


def test_report_rebuilds_the_run_folders_page(tmp_path, capsys):
    run = _run_folder(tmp_path / "sft-run")
    assert main(["report", str(run)]) == 0
    assert f"wrote {run / 'report.html'}" in capsys.readouterr().out
    page = (run / "report.html").read_text()
    assert "sft-run" in page and "data:image/png;base64," in page
    assert (run / "plots" / "loss.png").is_file() and (run / "plots" / "tokens-per-second.png").is_file()


def test_report_out_writes_elsewhere(tmp_path):
    run = _run_folder(tmp_path / "r")
    out = tmp_path / "site" / "r.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert out.is_file() and (tmp_path / "site" / "r-plots" / "loss.png").is_file()
    assert not (run / "report.html").exists()


def test_report_on_a_read_only_run_folder_says_to_use_out(tmp_path, capsys, monkeypatch):
    run = _run_folder(tmp_path / "theirs")

    def not_writable(run_dir, **_):
        # What writing into a folder of another user raises (the tests may run as root).
        raise PermissionError(13, "Permission denied", f"{run_dir}/report.html")

    monkeypatch.setattr(reports, "write_report", not_writable)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "--out FILE" in err and str(run / "report.html") in err and "Traceback" not in err


def test_report_on_a_folder_without_metrics_names_the_file(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qwen25-rl: error: ") and str(tmp_path / "metrics.jsonl") in err and "Traceback" not in err

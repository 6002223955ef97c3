"""Run folders: every stage writes its resolved config, metrics and checkpoints into one.

Layout (DESIGN.md section 6):

    <output_dir>/<run_name>/
        config.yaml          resolved config (defaults + file + overrides)
        metrics.jsonl        one JSON object per logged step
        tensorboard/         event files, when enabled
        initial_model/       the starting weights when a preset is initialised in the run
        checkpoints/step_N/  written by the stage (published whole; COMPLETE is its manifest)
        final/               HF-format model + tokenizer

How folders are written, verified and resumed from: qwen25_rl.checkpointing.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from qwen25_rl.checkpointing import atomic_write, latest_checkpoint, tidy
from qwen25_rl.config.loader import dump_config


def run_name_for(run_name: str | None, stage: str) -> str:
    """`logging.run_name`, or the stage and the start time when it is not set."""
    return run_name or f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}"


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):  # torch / numpy scalars
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep them visible rather than dropping the key
    return v


class MetricsWriter:
    """Appends metric rows to `metrics.jsonl` (and TensorBoard when enabled).

    Each row is flushed on write so a killed run keeps every step it finished.
    """

    def __init__(self, run_dir: Path, tensorboard: bool = False):
        self.path = run_dir / "metrics.jsonl"
        self._file = self.path.open("a", buffering=1)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        row = {"step": step, "time": time.time(), **{k: _jsonable(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)
        return row

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a metrics.jsonl (skipping a torn last line from a killed writer)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class RunDir:
    """A run folder. `create` writes the resolved config; an existing folder is reused (resume)."""

    def __init__(self, path: Path):
        self.path = path
        self.started = False

    @classmethod
    def create(cls, config: BaseModel, output_dir: str | Path, run_name: str | None = None, stage: str = "run") -> RunDir:
        path = Path(output_dir) / run_name_for(run_name, stage)
        path.mkdir(parents=True, exist_ok=True)
        (path / "checkpoints").mkdir(exist_ok=True)
        tidy(path)
        tidy(path / "checkpoints")
        atomic_write(path / "config.yaml", dump_config(config))
        return cls(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def final(self) -> Path:
        return self.path / "final"

    def metrics_writer(self, tensorboard: bool = False) -> MetricsWriter:
        return MetricsWriter(self.path, tensorboard=tensorboard)

    def truncate_metrics(self, last_step: int) -> int:
        """Drop metric rows after `last_step` (a resumed run re-logs them; a fresh start in an
        existing folder passes 0). Returns how many rows were dropped."""
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return 0
        rows = read_metrics(path)
        keep = [r for r in rows if r.get("step", 0) <= last_step]
        if len(keep) != len(rows):
            atomic_write(path, "".join(json.dumps(r) + "\n" for r in keep))
        return len(rows) - len(keep)

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints / f"step_{step}"

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint that verifies against its manifest (qwen25_rl.checkpointing);
        newer ones that do not are skipped with a warning."""
        return latest_checkpoint(self.checkpoints)

    def mark_started(self) -> None:
        """The stage got past its input checks: from here on the folder is kept if it fails."""
        self.started = True


@contextlib.contextmanager
def stage_run(config: BaseModel, output_dir: str | Path, run_name: str | None, stage: str) -> Iterator[RunDir]:
    """The run folder of one stage invocation. A stage that fails before `run.mark_started()`
    (bad input: a missing model, an unreadable data file) leaves nothing behind when this call
    created the folder; a folder that existed before (a resume) is never removed."""
    name = run_name_for(run_name, stage)
    existed = (Path(output_dir) / name).exists()
    run = RunDir.create(config, output_dir, name, stage=stage)
    try:
        yield run
    except GeneratorExit:  # the generator closed unused: no stage ran in it
        raise
    except BaseException:
        if not existed and not run.started:
            shutil.rmtree(run.path, ignore_errors=True)
        elif run.started:
            write_stage_report(run, config)  # a failed run's metrics up to the failure
        raise
    write_stage_report(run, config)


def write_stage_report(run: RunDir, config: BaseModel) -> Path | None:
    """`report.html` and `plots/` of a stage that ended (qwen25_rl.reports), unless
    `logging.report` is off or nothing was logged. Never raises an Exception: a report is a view
    of metrics.jsonl (rebuilt any time by `qwen25-rl report`) and must not turn the stage's own
    result, success or failure, into another one; a failure is one warning line on stderr.

    Every metric row is in metrics.jsonl by now, also for Ray Train stages: their rows are
    written line-buffered by the Train controller's callback (pretrain.callbacks) during
    `trainer.fit()`, which returns only after the controller has finished."""
    logging_cfg = getattr(config, "logging", None)
    if not getattr(logging_cfg, "report", True) or not (run.path / "metrics.jsonl").is_file():
        return None
    t0 = time.perf_counter()
    try:
        from qwen25_rl.reports import write_report

        path = write_report(run.path)
    except Exception as e:
        why = " ".join(f"{type(e).__name__}: {e}".split())[:500]
        print(
            f"qwen25-rl: warning: no report for run folder {run.path} ({why}); rebuild it with `qwen25-rl report {run.path}`",
            file=sys.stderr,
            flush=True,
        )
        return None
    if getattr(logging_cfg, "console", True):
        print(f"report: {path} ({time.perf_counter() - t0:.1f}s)", flush=True)
    return path

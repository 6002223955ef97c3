"""Ray Train controller callback: the run folder's metrics and checkpoint markers.

It runs in the Train controller, which Ray places on the driver's node, so it writes the run
folder the driver created: one `metrics.jsonl` row (and TensorBoard scalars) per report of
rank 0, a console line, Ray metrics gauges (`qwen25_rl.metrics.RayGauges`: every numeric
field of a row as `qwen25_rl_<stage>_<key>` tagged with the run name, scraped by Prometheus /
shown on the dashboard), and a check of every checkpoint Ray has assembled from all ranks'
uploads against its manifest (`COMPLETE`, written by the workers: pretrain.worker), sizes only
(stat calls); a mismatch is logged as an `event: checkpoint_invalid` row (the resume lookup,
qwen25_rl.checkpointing, will skip that checkpoint).

Worker failures: each time the worker group fails (a worker raised, or died: SIGKILL, the OOM
killer, a lost node) the callback writes one `event: worker_error` row per failed rank, numbered
(`failure`: 1, 2, ... in this run) with the step the rank was training (`at_step`, from the
rank's progress file, pretrain.progress) and a console line saying whether Ray Train restarts
the workers from the newest checkpoint (`trainer.max_failures`) or the run stops.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray.train import UserCallback

from qwen25_rl.checkpointing import verify
from qwen25_rl.metrics import RayGauges
from qwen25_rl.pretrain.progress import cause_of, died_first, read_progress

# Help texts of the main gauges; every other numeric field of a row is exported too.
GAUGES = {
    "loss": "training loss (token mean) of the last step",
    "eval_loss": "held-out loss at the last evaluation",
    "tokens_per_s": "training tokens per second (all workers)",
    "lr": "learning rate",
    "grad_norm": "gradient norm before clipping",
    "mfu": "model FLOPs utilisation",
    "step": "optimizer steps done",
}
# Row fields that are not metrics (a timestamp).
NOT_GAUGES = ("wall_time",)


class RunFolderCallback(UserCallback):
    def __init__(
        self,
        run_dir: str,
        stage: str,
        *,
        tensorboard: bool,
        console: bool,
        ray_metrics: bool,
        run_name: str,
        max_failures: int | None = None,
    ):
        self.run_dir = run_dir
        self.max_failures = max_failures
        self.failures = 0
        self.stage = stage
        self.tensorboard = tensorboard
        self.console = console
        self.ray_metrics = ray_metrics
        self.run_name = run_name
        self._writer = None
        self._gauges = RayGauges(stage, run_name, descriptions=GAUGES) if ray_metrics else None
        self._t0 = time.time()

    # Created lazily in the controller process (file handles do not pickle).
    def _metrics_writer(self):
        if self._writer is None:
            from qwen25_rl.runs import RunDir

            self._writer = RunDir(Path(self.run_dir)).metrics_writer(tensorboard=self.tensorboard)
        return self._writer

    def _set_gauges(self, step: int, row: dict[str, Any]) -> None:
        if self._gauges is not None:
            self._gauges.set({k: v for k, v in row.items() if k not in NOT_GAUGES} | {"step": step})

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        # Rank 0's report carries every step row since its previous report (the worker
        # batches them; see pretrain.worker).
        rows = [dict(r) for r in (metrics[0].get("rows") or [])] if metrics else []
        if checkpoint is not None:
            if not rows:
                rows = [{"step": metrics[0].get("step", -1)}]
            rows[-1]["checkpoint"] = checkpoint.path
        for row in rows:
            step = int(row.pop("step", -1))
            self._metrics_writer().log(step, row)
            self._set_gauges(step, row)
            if self.console:
                print(self._line(step, row), flush=True)
        if checkpoint is not None and getattr(checkpoint.filesystem, "type_name", "") == "local":
            problems = verify(Path(checkpoint.path), hashes=False)
            if problems:
                self._metrics_writer().log(-1, {"event": "checkpoint_invalid", "checkpoint": checkpoint.path, "problems": problems})
                print(f"[{self.stage}] checkpoint {checkpoint.path} does not match its manifest: {'; '.join(problems)}", flush=True)

    def _line(self, step: int, row: dict[str, Any]) -> str:
        parts = [f"[{self.stage}] step {step}"]
        if "phase" in row:
            parts.append(f"phase {row['phase']}")
        for k, fmt in (("loss", ".4f"), ("eval_loss", ".4f"), ("lr", ".2e"), ("grad_norm", ".3f"), ("tokens_per_s", ".0f"), ("mfu", ".3f")):
            v = row.get(k)
            if isinstance(v, (int, float)):
                parts.append(f"{k} {v:{fmt}}")
        if "checkpoint" in row:
            parts.append(f"saved {Path(row['checkpoint']).name}")
        parts.append(f"{time.time() - self._t0:.0f}s")
        return " | ".join(parts)

    def after_exception(self, run_context, worker_exceptions: dict[int, Exception]) -> None:
        self.failures += 1
        m = self.max_failures
        if m is None:
            then = ""
        elif m == -1 or self.failures <= m:
            then = f"; Ray Train restarts the workers from the newest checkpoint (failure {self.failures}, trainer.max_failures {m})"
        else:
            then = f"; failure {self.failures} is past trainer.max_failures {m}: the run stops"
        for rank, exc in died_first(worker_exceptions):
            progress = read_progress(self.run_dir, rank) or {}
            row = {"event": "worker_error", "rank": rank, "failure": self.failures, "error": f"{type(exc).__name__}: {exc}"[:2000]}
            if "step" in progress:
                row["at_step"] = progress["step"]
            self._metrics_writer().log(-1, row)
            if self.console:
                where = f" at step {progress['step']}" if "step" in progress else ""
                why = cause_of(exc, 500)
                print(f"[{self.stage}] worker {rank} failed{where}: {why}{then}", flush=True)

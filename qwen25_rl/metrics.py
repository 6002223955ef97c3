"""Per-step metrics to every sink a user watches: the console (a progress bar on a terminal,
one line per step in a job log), `metrics.jsonl`, TensorBoard, and Ray's metrics system
(`ray.util.metrics` gauges, scraped by Prometheus and shown on the Ray dashboard)."""

from __future__ import annotations

import contextlib
import math
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

from qwen25_rl.config.schema import LoggingConfig
from qwen25_rl.runs import RunDir


def _gauge_name(prefix: str, key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", f"qwen25_rl_{prefix}_{key}")


class RayGauges:
    """One `ray.util.metrics.Gauge` per metric key, tagged with the run name: the one way every
    stage (pretrain, sft, rm, grpo, dpo, eval, ...) exports its metrics to Ray.

    A key becomes `qwen25_rl_<stage>_<key>` with every character outside [a-zA-Z0-9_] turned
    into `_` ("reward/mean" of grpo -> `qwen25_rl_grpo_reward_mean`); Ray's Prometheus endpoint
    adds its `ray_` prefix (`ray_qwen25_rl_grpo_reward_mean{run="<run name>"}`). Non-numeric,
    boolean and non-finite values are skipped; outside Ray nothing is exported.
    `descriptions` (key -> text) replaces the generic "<stage> <key>" help text."""

    def __init__(self, prefix: str, run_name: str, descriptions: dict[str, str] | None = None):
        self.prefix, self.run_name = prefix, run_name
        self.descriptions = dict(descriptions or {})
        self._gauges: dict[str, Any] = {}

    def set(self, metrics: dict[str, Any]) -> None:
        import ray
        from ray.util.metrics import Gauge

        if not ray.is_initialized():
            return
        for k, v in metrics.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                continue
            g = self._gauges.get(k)
            if g is None:
                description = self.descriptions.get(k) or f"{self.prefix} {k}"
                g = self._gauges[k] = Gauge(_gauge_name(self.prefix, k), description=description, tag_keys=("run",))
            g.set(float(v), tags={"run": self.run_name})


CONSOLE_KEYS = ("reward/mean", "accuracy", "eval/accuracy", "policy/kl", "policy/entropy", "response_length/mean", "time/step_s")


def console_label(key: str) -> str:
    """The short name of a metric on the console: its last part ("policy/kl" -> "kl"), or its
    group where the last part is a statistic ("reward/mean" -> "reward", not a second "mean")."""
    if key.startswith("eval/"):  # held-out evaluation, told apart from the training batch's
        return "heldout_" + console_label(key[len("eval/") :])
    group, _, last = key.rpartition("/")
    return group.rpartition("/")[2] if group and last in ("mean", "min", "max", "std") else last


# Units shown after a console value, by the metric's last name part.
CONSOLE_UNITS = {"response_length": "tok", "tokens_per_s": "tok/s"}


def console_field(key: str, value: float) -> str:
    """One console field with its unit: "reward 0.333", "response_length 24.0 tok",
    "step_time 0.80 s" (a seconds metric `x_s` shows as `x_time ... s`)."""
    label = console_label(key)
    unit = CONSOLE_UNITS.get(label)
    if unit:
        return f"{label} {value:.1f} {unit}"
    if label.endswith("_s"):
        return f"{label[:-2]}_time {value:.2f} s"
    if isinstance(value, int) or float(value).is_integer():
        return f"{label} {int(value)}"
    return f"{label} {value:.4g}"


class StepLogger:
    def __init__(self, run: RunDir, cfg: LoggingConfig, *, stage: str, total_steps: int, start_step: int = 0, console_keys=CONSOLE_KEYS):
        self.run, self.cfg = run, cfg
        run.truncate_metrics(start_step)  # rows past the resume point are re-logged
        self.writer = run.metrics_writer(tensorboard=cfg.tensorboard)
        self.gauges = RayGauges(stage, run.path.name) if cfg.ray_metrics else None
        self.console_keys = console_keys
        self.total = total_steps
        self._progress = None
        if cfg.console and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn(f"[bold]{stage}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.description}")
            )
            self._task = self._progress.add_task("", total=total_steps, completed=start_step)
            self._progress.start()
        self._t0 = time.time()

    def _summary(self, metrics: dict[str, Any]) -> str:
        return "  ".join(console_field(k, metrics[k]) for k in self.console_keys if isinstance(metrics.get(k), (int, float)))

    def log(self, step: int, metrics: dict[str, Any], *, console: bool = True) -> None:
        self.writer.log(step, metrics)
        if self.gauges is not None:
            self.gauges.set(metrics | {"step": step})
        if not self.cfg.console or not console:
            return
        summary = self._summary(metrics)
        if not summary:  # nothing the console shows (a data-summary row)
            return
        if step == 0:  # the baseline evaluation before the first step
            summary += "  (before training)"
        if self._progress is not None:
            self._progress.update(self._task, completed=step, description=summary)
        elif step % self.cfg.log_every_n_steps == 0 or step == self.total or step == 0:
            print(f"step {step}/{self.total}  {summary}", flush=True)

    @contextlib.contextmanager
    def phase(self, what: str) -> Iterator[None]:
        """A long phase between steps (sampling a round, evaluating, saving a checkpoint) on the
        console: "<what> ..." when it starts and "<what>: done in X s" when it ends, so a quiet
        console is never a hung one."""
        if self.cfg.console:
            self.message(f"{what} ...")
        t = time.perf_counter()
        yield
        if self.cfg.console:
            self.message(f"{what}: done in {time.perf_counter() - t:.1f} s")

    def message(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self.writer.close()

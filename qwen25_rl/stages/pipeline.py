"""`qwen25-rl pipeline`: the recipe's stages in order on one Ray, each from an earlier stage's
`final/`, skipping the stages already complete and resuming the one a previous run stopped in.

    plan:   every stage config built and validated before any work (a typo fails in a second)
    loop:   completed and unchanged -> skip; interrupted -> resume (the stage's own checkpoint
            resume); otherwise run; state in <output_dir>/pipeline_state.json after each step
    report: one line per stage (ran / resumed / skipped, seconds, headline metrics) and
            <output_dir>/pipeline_summary.json

A stage type is one registry entry (`@pipeline_stage`): how to run its config and which folder
a later stage starts from.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from qwen25_rl.checkpointing import atomic_write
from qwen25_rl.config.loader import (
    ConfigError,
    apply_overrides,
    dump_config,
    parse_override,
    read_yaml,
    set_dotted,
    stage_schema,
    validate_config,
)
from qwen25_rl.config.schema import StageConfig
from qwen25_rl.config.storage import resolve_path, storage_root
from qwen25_rl.errors import UserValueError
from qwen25_rl.runs import read_metrics
from qwen25_rl.stages.pipeline_config import PipelineConfig, PipelineStage

STATE_FILE = "pipeline_state.json"
SUMMARY_FILE = "pipeline_summary.json"


# ---------------------------------------------------------------------------------------------
# stage types


@dataclass(frozen=True)
class StageType:
    name: str
    run: Callable[[StageConfig], Path]  # runs the stage, returns its run folder
    # The folder a later stage starts from (`from:` / ${name}), given the run folder.
    output: Callable[[Path], Path]


PIPELINE_STAGES: dict[str, StageType] = {}


def pipeline_stage(name: str, output: Callable[[Path], Path] = lambda run_dir: run_dir / "final"):
    """Register `fn(config) -> run folder` as the pipeline stage type `name`."""

    def deco(fn: Callable[[StageConfig], Path]) -> Callable[[StageConfig], Path]:
        if name in PIPELINE_STAGES:
            raise ValueError(f"pipeline stage {name!r} registered twice")
        PIPELINE_STAGES[name] = StageType(name, fn, output)
        return fn

    return deco


@pipeline_stage("pretrain")
def _pretrain(cfg: StageConfig) -> Path:
    from qwen25_rl.pretrain.driver import run_pretrain

    return run_pretrain(cfg).run_dir  # type: ignore[arg-type]


@pipeline_stage("sft")
def _sft(cfg: StageConfig) -> Path:
    from qwen25_rl.pretrain.driver import run_sft

    return run_sft(cfg).run_dir  # type: ignore[arg-type]


@pipeline_stage("rm")
def _rm(cfg: StageConfig) -> Path:
    from qwen25_rl.pretrain.driver import run_rm

    return run_rm(cfg).run_dir  # type: ignore[arg-type]


@pipeline_stage("dpo")
def _dpo(cfg: StageConfig) -> Path:
    from qwen25_rl.stages.dpo import run_dpo

    return run_dpo(cfg)  # type: ignore[arg-type]


@pipeline_stage("grpo")
def _grpo(cfg: StageConfig) -> Path:
    from qwen25_rl.stages.grpo import run_grpo

    return run_grpo(cfg)  # type: ignore[arg-type]


def _filter_output(run_dir: Path) -> Path:
    # The filtered chat file (selection.output, relative to the run folder unless absolute).
    import yaml

    output = yaml.safe_load((run_dir / "config.yaml").read_text())["selection"]["output"]
    return run_dir / output


@pipeline_stage("filter", output=_filter_output)
def _filter(cfg: StageConfig) -> Path:
    from qwen25_rl.runs import stage_run
    from qwen25_rl.stages.filter import run_filter

    with stage_run(cfg, cfg.logging.output_dir, cfg.logging.run_name, stage="filter") as run:
        run_filter(cfg, run)  # type: ignore[arg-type]
        return run.path


@pipeline_stage("eval", output=lambda run_dir: run_dir / "summary.json")
def _eval(cfg: StageConfig) -> Path:
    from qwen25_rl.runs import stage_run
    from qwen25_rl.stages.evaluate import run_eval

    with stage_run(cfg, cfg.logging.output_dir, cfg.logging.run_name, stage="eval") as run:
        run_eval(cfg, run)  # type: ignore[arg-type]
        return run.path


# The stage types whose final/ is a policy model: evaluated after by default (`evaluation.after`).
POLICY_STAGES = ("sft", "dpo", "grpo")


# ---------------------------------------------------------------------------------------------
# plan: every stage config, validated before any work


@dataclass
class PlannedStage:
    spec: PipelineStage
    type: StageType
    config: StageConfig
    run_dir: Path
    fingerprint: str

    @property
    def output(self) -> Path:
        return self.type.output(self.run_dir)


REF = re.compile(r"\$\{([A-Za-z0-9_.-]+?)(\.run_dir)?\}")


def _substitute(value: Any, outputs: dict[str, Path], run_dirs: dict[str, Path], where: str) -> Any:
    """${name} -> that earlier stage's output folder, ${name.run_dir} -> its run folder."""
    if isinstance(value, dict):
        return {k: _substitute(v, outputs, run_dirs, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, outputs, run_dirs, where) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        name = m.group(1)
        if name not in outputs:
            raise UserValueError(f"{where}: ${{{name}}} names no earlier stage (earlier: {', '.join(outputs) or 'none'})")
        return str(run_dirs[name] if m.group(2) else outputs[name])

    return REF.sub(one, value)


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> tuple[PipelineConfig, Path]:
    """The pipeline config and the folder its relative stage-config paths are read from.
    Overrides `key=value` set pipeline keys; `STAGE.key=value` (STAGE a stage name) are kept
    for `plan` (returned through the config's stages as overrides)."""
    data = read_yaml(path)
    names = {s.get("name") for s in data.get("stages") or [] if isinstance(s, dict)}
    own, per_stage = [], []
    for text in overrides or []:
        (per_stage if text.split(".", 1)[0] in names and "." in text.split("=", 1)[0] else own).append(text)
    apply_overrides(data, own)
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as e:
        problems = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ConfigError(str(path), problems) from None
    for text in per_stage:
        name, _, rest = text.partition(".")
        parts, value = parse_override(rest)
        stage = next(s for s in cfg.stages if s.name == name)
        stage.overrides = {**stage.overrides, ".".join(parts): value}
    root = storage_root(cfg.storage_path)
    cfg.output_dir = resolve_path(cfg.output_dir, "output", root, Path.cwd())
    return cfg, Path(path).resolve().parent


def with_evaluations(cfg: PipelineConfig) -> list[PipelineStage]:
    """The stages in order, each stage named by `evaluation.after` followed by its eval stage."""
    ev = cfg.evaluation
    if ev is None:
        return list(cfg.stages)
    after = set(ev.after) if ev.after is not None else {s.name for s in cfg.stages if s.kind in POLICY_STAGES}
    stages: list[PipelineStage] = []
    for s in cfg.stages:
        stages.append(s)
        if s.name in after:
            stages.append(PipelineStage(name=f"eval-{s.name}", stage="eval", config=ev.config, overrides=ev.overrides, from_=s.name))
    return stages


def plan(cfg: PipelineConfig, base_dir: Path) -> list[PlannedStage]:
    out = Path(cfg.output_dir)
    outputs: dict[str, Path] = {}
    run_dirs: dict[str, Path] = {}
    planned = []
    for spec in with_evaluations(cfg):
        if spec.kind not in PIPELINE_STAGES:
            raise UserValueError(f"stages.{spec.name}.stage: unknown stage type {spec.kind!r}; known: {', '.join(sorted(PIPELINE_STAGES))}")
        where = f"stages.{spec.name}"
        if isinstance(spec.config, str):
            source = Path(spec.config) if Path(spec.config).is_absolute() else base_dir / spec.config
            data = read_yaml(source)
            source_name = str(source)
        else:
            data, source_name = copy.deepcopy(spec.config), f"{where}.config (inline)"
        if data.setdefault("stage", spec.kind) != spec.kind:
            raise ConfigError(source_name, [f"stage: the file is a {data['stage']!r} config, the pipeline runs it as {spec.kind!r}"])
        logging = data.setdefault("logging", {})
        logging.update(output_dir=str(out), run_name=spec.name, storage_path=cfg.storage_path)
        if spec.from_ is not None:
            set_dotted(data, ["model", "path"], str(outputs[spec.from_]), source=source_name, what=f"{where}.from")
            data["model"].pop("preset", None)
        for key, value in spec.overrides.items():
            set_dotted(
                data, key.split("."), _substitute(value, outputs, run_dirs, f"{where}.overrides.{key}"), source=source_name, what=key
            )
        origin = {k: f"{where}.overrides.{k}" for k in spec.overrides}
        config = validate_config(data, source_name, stage_schema(spec.kind, source_name), origin)
        stype = PIPELINE_STAGES[spec.kind]
        run_dir = out / spec.name
        fp = hashlib.sha256(dump_config(config).encode()).hexdigest()[:16]
        planned.append(PlannedStage(spec, stype, config, run_dir, fp))
        outputs[spec.name], run_dirs[spec.name] = stype.output(run_dir), run_dir
    return planned


# ---------------------------------------------------------------------------------------------
# state


def _read_state(out: Path) -> dict[str, Any]:
    p = out / STATE_FILE
    if not p.is_file():
        return {"stages": {}}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UserValueError(f"{p} is not valid JSON ({e}); remove it to start the pipeline over") from None


def _write_state(out: Path, state: dict[str, Any]) -> None:
    atomic_write(out / STATE_FILE, json.dumps(state, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------
# run


def headline(run_dir: Path) -> dict[str, float]:
    """The last value of each headline metric a stage logs (for the summary line and table)."""
    p = run_dir / "metrics.jsonl"
    rows = read_metrics(p) if p.is_file() else []
    keys = ("loss", "eval_loss", "eval_accuracy", "dpo/loss", "reward/mean", "eval/accuracy")
    found: dict[str, float] = {}
    for r in rows:
        for k in keys:
            if isinstance(r.get(k), (int, float)):
                found[k] = r[k]
    return found


def run_pipeline(cfg: PipelineConfig, base_dir: Path, *, force: bool = False, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the pipeline; returns the summary written to <output_dir>/pipeline_summary.json."""
    planned = plan(cfg, base_dir)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = _read_state(out)
    say(f"pipeline: {len(planned)} stages -> {out}")
    rows: list[dict[str, Any]] = []
    started_ray = False
    rerun_below = False  # an earlier stage ran: later stages start over from its new output
    try:
        for i, st in enumerate(planned, 1):
            name = st.spec.name
            entry = state["stages"].get(name, {})
            prefix = f"[{i}/{len(planned)}] {name} ({st.type.name})"
            # A completed stage whose output is still there is skipped (when its config is the
            # same); one whose output is gone runs again, and so does everything after it.
            if entry.get("status") == "completed" and not (force or rerun_below) and st.output.exists():
                if entry.get("fingerprint") != st.fingerprint:
                    raise UserValueError(
                        f"{prefix}: completed with a different config than now (see {st.run_dir / 'config.yaml'}); "
                        "run with --force to run it and the stages after it again"
                    )
                say(f"{prefix}: complete, skipped ({st.output})")
                rows.append({"stage": name, "type": st.type.name, "action": "skipped", "seconds": 0.0, **_row(st)})
                continue
            if st.run_dir.exists() and (force or rerun_below or entry.get("status") == "completed"):
                say(f"{prefix}: removing the previous run {st.run_dir} (starting over)")
                shutil.rmtree(st.run_dir)
                action = "ran"
            else:
                action = "resumed" if st.run_dir.exists() else "ran"
            if not started_ray:
                from qwen25_rl.ray_utils import dashboard_url, init_ray

                init_ray(cfg.ray, third_party_logs=cfg.third_party_logs)
                started_ray = True
                url = dashboard_url()
                if url:
                    say(f"Ray dashboard: {url}")
            say(f"\n== {prefix}: {'resuming in' if action == 'resumed' else 'running in'} {st.run_dir} ==")
            state["stages"][name] = {"status": "running", "fingerprint": st.fingerprint, "run_dir": str(st.run_dir), "started": time.time()}
            _write_state(out, state)
            t0 = time.time()
            try:
                st.type.run(st.config)
            except BaseException as e:
                state["stages"][name].update(status="failed", error=f"{type(e).__name__}: {e}"[:2000])
                _write_state(out, state)
                raise
            seconds = time.time() - t0
            state["stages"][name].update(status="completed", finished=time.time(), seconds=seconds, output=str(st.output))
            _write_state(out, state)
            rerun_below = True
            rows.append({"stage": name, "type": st.type.name, "action": action, "seconds": round(seconds, 1), **_row(st)})
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    accuracy = heldout_accuracy(planned)
    summary = {"output_dir": str(out), "stages": rows, "heldout_accuracy": accuracy}
    atomic_write(out / SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")
    say("\n" + format_summary(rows))
    if accuracy:
        say("\nheld-out accuracy after each stage:\n" + "\n".join(f"  {a['after']:<14} {a['accuracy']:.3f}" for a in accuracy))
    report = write_pipeline_report(cfg, out, rows, accuracy)
    if report is not None:
        say(f"pipeline report: {report}")
    return summary


def heldout_accuracy(planned: list[PlannedStage]) -> list[dict[str, Any]]:
    """One row per evaluated stage: the eval stage's summary (accuracy, pass@k)."""
    table = []
    for st in planned:
        if st.type.name == "eval" and st.output.is_file():
            s = json.loads(st.output.read_text())
            passes = {k: v for k, v in s.items() if k.startswith("pass@")}
            table.append({"after": st.spec.from_, "eval_run": str(st.run_dir), "accuracy": s["accuracy"], "items": s["items"], **passes})
    return table


def write_pipeline_report(cfg: PipelineConfig, out: Path, rows: list[dict[str, Any]], accuracy: list[dict[str, Any]]) -> Path | None:
    """<output_dir>/report.html: the stages (links to their own reports) and the held-out accuracy
    after each, with the accuracy plotted over the stages (its metrics.jsonl: one row per stage)."""
    from qwen25_rl.reports import write_report

    atomic_write(out / "config.yaml", dump_config(cfg))
    # metrics.jsonl: one row per stage in pipeline order (step = its position), so the report
    # plots seconds per stage and the held-out accuracy at each evaluation.
    by_eval_run = {a["eval_run"]: a for a in accuracy}
    lines = []
    for i, r in enumerate(rows, 1):
        row: dict[str, Any] = {"step": i, "time": time.time(), "pipeline/stage_seconds": r["seconds"]}
        a = by_eval_run.get(r["run_dir"])
        if a is not None:
            row |= {"heldout/accuracy": a["accuracy"], **{f"heldout/{k}": v for k, v in a.items() if k.startswith("pass@")}}
        lines.append(json.dumps(row))
    atomic_write(out / "metrics.jsonl", "\n".join(lines) + "\n")
    stages = [["stage", "type", "action", "seconds", "report"]] + [
        [r["stage"], r["type"], r["action"], f"{r['seconds']:.0f}", str(Path(r["run_dir"]) / "report.html")] for r in rows
    ]
    sections: list[tuple[str, Any]] = [("Stages", stages)]
    if accuracy:
        ks = sorted({k for a in accuracy for k in a if k.startswith("pass@")})
        sections.insert(
            0,
            (
                "Held-out accuracy after each stage",
                [["after stage", "accuracy", *ks, "items"]]
                + [[a["after"], f"{a['accuracy']:.3f}", *(f"{a[k]:.3f}" if k in a else "-" for k in ks), a["items"]] for a in accuracy],
            ),
        )
    try:
        return write_report(out, sections)
    except Exception as e:  # the stages' own results stand; a report is never worth failing a run
        print(f"warning: no pipeline report in {out}: {type(e).__name__}: {e}")
        return None


def _row(st: PlannedStage) -> dict[str, Any]:
    return {"run_dir": str(st.run_dir), "output": str(st.output), "metrics": headline(st.run_dir)}


def format_summary(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'stage':<14} {'type':<9} {'action':<8} {'seconds':>8}  metrics (last values)"]
    for r in rows:
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in r["metrics"].items())
        lines.append(f"{r['stage']:<14} {r['type']:<9} {r['action']:<8} {r['seconds']:>8.0f}  {metrics}")
    return "\n".join(lines)

"""Run reports: one self-contained `report.html` per run folder, built from its `metrics.jsonl`
and `config.yaml`.

    <run>/report.html     run name, stage, start/end and duration, last value of every metric,
                          the plots (PNG as data URIs: the file opens offline, alone), data
                          summaries and events, extra sections from a caller, the resolved config
    <run>/plots/*.png     the same plots as files

Plots are chosen by data, not by stage: `PLOT_SPECS` lists (title, key patterns, y label) and a
plot is drawn when some of its keys are in the run, so a new stage whose metrics follow the
naming of the others (`reward/<name>/mean`, `eval/...`, `time/..._s`, `policy/...`) gets its
plots without a code change. Numeric keys that no spec claims are drawn as small multiples under
"Other metrics" rather than dropped.

Every stage writes its report when it ends (`qwen25_rl.runs.stage_run`, switched off with
`logging.report: false`); `qwen25-rl report RUN_DIR` rebuilds it. matplotlib is imported only
while plotting: importing this module stays cheap for the CLI.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen25_rl.errors import UserPathError

REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
# Extra sections given by a caller (a pipeline's summary table) are kept here, so that a
# rebuild from metrics.jsonl (`qwen25-rl report`) does not lose them.
SECTIONS_FILE = "report_sections.json"

# Row keys that are bookkeeping, not metrics: never plotted, not in the final-values table.
META_KEYS = frozenset({"step", "time", "wall_time", "event"})
# Small multiples per "other metrics" figure (3 rows of 4).
OTHER_PER_FIGURE = 12
DPI = 80


@dataclass(frozen=True)
class PlotSpec:
    """One plot: drawn when at least one key of the run matches `patterns` (and no `exclude`).

    Patterns are metric-key globs where `*` is one path segment (no "/") and `**` any run of
    characters including "/": `reward/*/mean` matches `reward/math/mean`, not
    `reward/rm/helpfulness/mean`."""

    title: str
    patterns: tuple[str, ...]
    ylabel: str
    exclude: tuple[str, ...] = ()

    def matches(self, key: str) -> bool:
        return any(_glob(p).fullmatch(key) for p in self.patterns) and not any(_glob(p).fullmatch(key) for p in self.exclude)

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


_GLOBS: dict[str, re.Pattern[str]] = {}


def _glob(pattern: str) -> re.Pattern[str]:
    rx = _GLOBS.get(pattern)
    if rx is None:
        parts = re.split(r"(\*\*|\*)", pattern)
        rx = _GLOBS[pattern] = re.compile("".join(".*" if p == "**" else "[^/]*" if p == "*" else re.escape(p) for p in parts))
    return rx


# The key names are the ones the stages log: GRPO (stages/grpo.py, grpo_collector.py,
# actors/policy.py `policy/<loss metric>`), DPO (stages/dpo.py, dpo_rounds.py `round/...`,
# actors/policy.py `dpo/...`), filter (stages/filter.py), pretrain / SFT / RM
# (pretrain/worker.py, pretrain/rm_task.py). Order here is the order in the report.
PLOT_SPECS: tuple[PlotSpec, ...] = (
    # -- RL: rewards and accuracy
    PlotSpec(
        "Reward",
        ("reward/mean", "reward/std", "round/reward/mean", "round/reward/std", "reward/mean_scored", "reward/mean_kept"),
        "reward per response (mean, std)",
    ),
    PlotSpec("Reward components", ("reward/*/mean", "round/reward/*/mean"), "reward (mean per response)"),
    PlotSpec("Reward-model criteria", ("reward/*/*/mean", "round/reward/*/*/mean"), "score (mean per response)"),
    PlotSpec("Training accuracy", ("accuracy", "accuracy/*", "round/sampling_accuracy"), "fraction correct"),
    PlotSpec("Held-out accuracy", ("eval/accuracy", "eval/pass@*", "eval_accuracy", "eval_accuracy/*"), "fraction correct"),
    # -- RL: the policy update
    PlotSpec("KL divergence", ("policy/kl", "policy/approx_kl", "policy/kl_loss", "kl", "**/kl"), "nats per token"),
    PlotSpec("Entropy", ("policy/entropy", "entropy"), "nats per token"),
    PlotSpec("Clip fraction", ("policy/clip_frac*", "policy/dual_clip_frac", "policy/tis_out_of_band_frac"), "fraction of tokens"),
    PlotSpec("Importance ratio", ("policy/ratio_*", "policy/tis_weight_mean"), "ratio new / old policy"),
    PlotSpec("Policy loss", ("policy/loss", "policy/pg_loss", "policy/entropy_loss"), "loss (per token)"),
    PlotSpec("Log-prob gaps", ("logprob_gap/**", "reference/sampler_gap_abs_max"), "|log p difference| (nats per token)"),
    PlotSpec("Policy version lag", ("policy_version/lag_*",), "policy versions"),
    # -- RL: rollouts
    PlotSpec(
        "Response length",
        ("response_length/mean", "response_length/max", "round/response_length/mean", "round/response_length/max"),
        "tokens",
    ),
    PlotSpec(
        "Responses cut at max length", ("response_length/clipped_frac", "round/response_length/clipped_frac"), "fraction of responses"
    ),
    PlotSpec("Tokens generated", ("tokens/generated", "round/tokens/generated"), "tokens per step"),
    PlotSpec("Groups", ("groups/*", "dynamic_sampling/rounds"), "groups per step (rounds)"),
    PlotSpec(
        "Reward errors and drops",
        ("reward/error", "reward/timeout", "reward/dropped", "reward/groups_dropped", "reward/*/error", "reward/*/timeout")
        + ("round/reward/error", "round/reward/timeout", "round/reward/dropped", "round/reward/groups_dropped")
        + ("round/reward/*/error", "round/reward/*/timeout", "reward_model/*/truncated"),
        "responses (groups) per step",
    ),
    # -- DPO
    PlotSpec("Pairs per round", ("round/pairs", "round/groups_paired", "round/groups", "round/prompts"), "count per round"),
    PlotSpec("Groups dropped by pairing", ("round/dropped/*",), "groups per round"),
    PlotSpec("DPO loss", ("dpo/loss", "dpo/loss/*", "dpo/nll"), "loss (nats per pair)"),
    PlotSpec(
        "DPO implicit rewards and margin", ("dpo/reward_chosen", "dpo/reward_rejected", "dpo/reward_margin"), "beta x log-ratio (nats)"
    ),
    PlotSpec("DPO reward accuracy", ("dpo/reward_accuracy",), "fraction of pairs, chosen > rejected"),
    PlotSpec("DPO log-probs", ("dpo/logps/*",), "log-prob (nats per response)"),
    # -- pretrain / SFT / RM
    PlotSpec("Loss", ("loss", "loss/*", "eval_loss"), "loss (nats)"),
    PlotSpec("Held-out reward-model scores", ("eval_score_mean/*",), "mean score"),
    PlotSpec("Held-out reward-model score spread", ("eval_score_std/*",), "score std"),
    PlotSpec("Tokens per second", ("tokens_per_s", "**/tokens_per_s"), "tokens / s"),
    PlotSpec("Compute throughput", ("tflops",), "TFLOP/s"),
    PlotSpec("Model FLOPs utilisation", ("mfu",), "fraction of peak"),
    # -- shared by every trainer
    PlotSpec("Learning rate", ("lr", "policy/lr", "**/lr"), "learning rate"),
    PlotSpec("Gradient norm", ("grad_norm", "policy/grad_norm", "**/grad_norm"), "L2 norm (before clipping)"),
    PlotSpec("Seconds per phase", ("time/**", "step_time_s", "eval/seconds"), "seconds"),
)


# ---------------------------------------------------------------------------------------------
# reading metrics.jsonl


@dataclass
class RunMetrics:
    """What a report shows, read from one metrics.jsonl."""

    series: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)  # key -> (steps, values)
    last: dict[str, tuple[int, Any]] = field(default_factory=dict)  # key -> (step, last value)
    data_rows: list[dict[str, Any]] = field(default_factory=list)  # `event: data` summaries
    events: list[dict[str, Any]] = field(default_factory=list)  # other events (worker errors)
    marks: list[tuple[float, str]] = field(default_factory=list)  # (step, label): phase / round starts
    rows: int = 0
    unreadable: int = 0  # lines that are not a JSON object (a torn last line of a killed writer)
    start: float | None = None
    end: float | None = None


def _number(v: Any) -> float | None:
    """A plottable value: numbers, and the strings the writer stores for non-finite floats."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and v.strip().lower() in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity"):
        return float(v)
    return None


def read_run_metrics(path: str | Path) -> RunMetrics:
    """Series, last values, summaries and events of a metrics.jsonl. Values may be numbers,
    "nan"/"inf" strings (how MetricsWriter stores non-finite floats), text (phase, checkpoint
    path) or nested summaries; a line that does not parse is counted, not fatal."""
    out = RunMetrics()
    seen_phase: str | None = None
    phase_marks: list[tuple[float, str]] = []
    round_marks: list[tuple[float, str]] = []
    raw: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                out.unreadable += 1
                continue
            if not isinstance(row, dict):
                out.unreadable += 1
                continue
            raw.append(row)
    for row in raw:
        out.rows += 1
        t = _number(row.get("time"))
        if t is not None and math.isfinite(t):
            out.start = t if out.start is None else min(out.start, t)
            out.end = t if out.end is None else max(out.end, t)
        step_v = _number(row.get("step"))
        step = step_v if step_v is not None and math.isfinite(step_v) else float("nan")
        event = row.get("event")
        if event == "data":
            out.data_rows.append(row)
            continue
        if event is not None:
            out.events.append(row)
            continue
        phase = row.get("phase")
        if isinstance(phase, str) and phase != seen_phase and math.isfinite(step):
            phase_marks.append((step, phase))
            seen_phase = phase
        # DPO logs `round` on the first step of each round.
        round_no = _number(row.get("round"))
        if round_no is not None and math.isfinite(round_no) and math.isfinite(step):
            round_marks.append((step, f"round {round_no:g}"))
        for k, v in row.items():
            if k in META_KEYS:
                continue
            if isinstance(v, (dict, list)):
                continue
            out.last[k] = (int(step) if math.isfinite(step) else -1, v)
            x = _number(v)
            if x is not None and math.isfinite(step):
                steps, values = out.series.setdefault(k, ([], []))
                steps.append(step)
                values.append(x)
    # Rows are in file order; a series is drawn by step (evaluation rows share steps with
    # training rows, a resumed writer may restart a little earlier).
    for k, (steps, values) in out.series.items():
        if any(b < a for a, b in zip(steps, steps[1:])):
            pairs = sorted(zip(steps, values), key=lambda p: p[0])
            out.series[k] = ([p[0] for p in pairs], [p[1] for p in pairs])
    # Boundaries only: where the second and later phases (rounds) begin.
    out.marks = phase_marks[1:] + round_marks[1:]
    return out


def assign_plots(keys: Sequence[str], specs: Sequence[PlotSpec] = PLOT_SPECS) -> tuple[list[tuple[PlotSpec, list[str]]], list[str]]:
    """The plots a run gets: (spec, its keys in the run) for each spec with a key present, in
    spec order; and the keys no spec claims ("other metrics"). A key goes to its first spec."""
    claimed: dict[str, list[str]] = {}
    other: list[str] = []
    for k in keys:
        spec = next((s for s in specs if s.matches(k)), None)
        if spec is None:
            other.append(k)
        else:
            claimed.setdefault(spec.title, []).append(k)
    return [(s, claimed[s.title]) for s in specs if s.title in claimed], other


# ---------------------------------------------------------------------------------------------
# plotting (matplotlib, imported here only)


@dataclass
class Plot:
    title: str
    file: str  # name under plots/
    png: bytes
    keys: list[str]


def _unit_of(key: str) -> str:
    """A y label for a metric no spec knows, from the naming conventions of the stages."""
    last = key.rsplit("/", 1)[-1]
    if last.endswith("_s") or "seconds" in last:
        return "seconds"
    if "frac" in last or "accuracy" in key or last.startswith("pass@"):
        return "fraction"
    if "tokens" in key or "length" in key:
        return "tokens"
    if "loss" in key:
        return "loss"
    return "value"


def _finite(values: list[float]) -> list[float]:
    # Non-finite points become gaps: matplotlib cannot scale an axis to inf.
    return [v if math.isfinite(v) else math.nan for v in values]


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    # A bare Figure (no pyplot): no global state, no GUI backend, always Agg for PNG.
    return Figure(figsize=(width, height), dpi=DPI)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # A fast zlib level: these images are small either way; the default level adds time.
    fig.savefig(buf, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})
    return buf.getvalue()


def _draw_marks(ax, marks: list[tuple[float, str]]) -> None:
    """A dotted line where a phase (pretraining) or a DPO round begins, named to its right."""
    for step, label in marks:
        ax.axvline(step, color="0.55", linestyle=":", linewidth=0.9)
        ax.annotate(
            label,
            (step, 0.98),
            xycoords=("data", "axes fraction"),
            xytext=(2, 0),
            textcoords="offset points",
            fontsize=6,
            color="0.35",
            va="top",
        )


_STYLES = ("-", "--", "-.", ":")


def _style(labelsize: float) -> dict[str, Any]:
    """rcParams of a report figure: tick and grid styling set before the axes exist is part of
    creating each tick, rather than a second pass over every tick (tick_params, grid)."""
    return {
        # A fixed title position: the default places each title by measuring the tick labels.
        "axes.titley": 1.0,
        "axes.titlepad": 4.0,
        "axes.titlesize": labelsize + 3,
        "axes.labelsize": labelsize + 1,
        "axes.grid": True,
        "grid.linewidth": 0.4,
        "grid.alpha": 0.5,
        "xtick.labelsize": labelsize,
        "ytick.labelsize": labelsize,
        "xtick.major.pad": 1.5,
        "ytick.major.pad": 1.5,
        "legend.fontsize": 7,
        "legend.frameon": False,
        # Metric keys are text, not TeX: "$" in a key must not start (or break) math mode.
        "text.parse_math": False,
    }


def _few_ticks(ax, nbins: int) -> None:
    from matplotlib.ticker import MaxNLocator

    # Every tick is a handful of artists and a text layout: the largest cost of a small plot.
    ax.xaxis.set_major_locator(MaxNLocator(nbins, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(nbins))


class SpecCanvas:
    """One figure and axes, drawn again for each spec plot of a report. A fresh figure per plot
    spends much of its time building the axes and their ticks again; here they are kept and
    only the lines, labels, marks and legend change (plotting a 200-step GRPO run: 0.9 s ->
    0.5 s on 2 cores)."""

    def __enter__(self) -> SpecCanvas:
        import matplotlib

        # The style holds while the canvas is in use: rcParams are read while drawing too.
        self._rc = matplotlib.rc_context(_style(7))
        self._rc.__enter__()
        try:
            self.fig = _figure(7.2, 3.2)
            self.ax = self.fig.add_axes((0.09, 0.15, 0.58, 0.74))
            _few_ticks(self.ax, 6)
        except BaseException:
            self._rc.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._rc.__exit__(*exc)

    def draw(self, spec: PlotSpec, keys: list[str], m: RunMetrics) -> bytes:
        ax = self.ax
        for artist in [*ax.lines, *ax.texts]:
            artist.remove()
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        ax.set_prop_cycle(None)  # the first key is blue again
        one = len(keys) == 1
        # One key: named in the title, no legend (a legend's layout costs as much as the axes).
        ax.set_position((0.09, 0.15, 0.88 if one else 0.58, 0.74))
        for i, k in enumerate(keys):
            steps, values = m.series[k]
            few = len(steps) <= 40
            ax.plot(
                steps,
                _finite(values),
                label=f" {k}" if k.startswith("_") else k,  # a legend skips labels starting with "_"
                linestyle=_STYLES[(i // 10) % len(_STYLES)],
                linewidth=1.2,
                marker="o" if few else None,
                markersize=3 if few else 0,
            )
        ax.relim()  # limits from this plot's lines only
        ax.autoscale_view()
        _draw_marks(ax, m.marks)
        ax.set_title(f"{spec.title}: {keys[0]}" if one else spec.title)
        ax.set_xlabel("step")
        ax.set_ylabel(spec.ylabel)
        if not one:
            # Outside the axes on the right: "best" placement costs a search over every point.
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
        return _png(self.fig)


def plot_small_multiples(keys: list[str], m: RunMetrics, title: str) -> bytes:
    import matplotlib

    cols = 4
    rows = max(1, math.ceil(len(keys) / cols))
    height = 0.45 + 1.7 * rows
    with matplotlib.rc_context(_style(6)):
        fig = _figure(9.6, height)
        fig.suptitle(f"{title} (x: step)", fontsize=10, y=1 - 0.08 / height)
        fig.subplots_adjust(left=0.06, right=0.98, bottom=0.25 / height, top=1 - 0.55 / height, wspace=0.35, hspace=0.55)
        for i, k in enumerate(keys):
            ax = fig.add_subplot(rows, cols, i + 1)
            steps, values = m.series[k]
            ax.plot(steps, _finite(values), linewidth=1.0, marker="o" if len(steps) <= 40 else None, markersize=2)
            ax.set_title(k, fontsize=7)
            ax.set_ylabel(_unit_of(k), labelpad=1)
            _few_ticks(ax, 4)
        return _png(fig)


def is_flat(values: Sequence[float]) -> bool:
    """One value at every logged point (NaN counts as a value): a line that says nothing a
    table row would not say, and a figure is the dearest part of a report."""
    return len({repr(v) for v in values}) <= 1


@dataclass
class Figures:
    plots: list[Plot]  # one per spec with a changing key, in spec order
    others: list[Plot]  # small multiples of the changing keys no spec claims
    flat: list[tuple[str, float, int, str]]  # (key, its one value, points, spec title or "") not drawn


def build_plots(m: RunMetrics, specs: Sequence[PlotSpec] = PLOT_SPECS) -> Figures:
    """The figures of a run: a key is drawn when its value changes; keys with one value
    throughout (error counters at 0, a constant lr, a one-row summary) are listed instead."""
    changing = [k for k, (_, values) in m.series.items() if not is_flat(values)]
    assigned, other = assign_plots(changing, specs)
    flat_assigned, flat_other = assign_plots([k for k in m.series if k not in set(changing)], specs)
    flat = [(k, m.series[k][1][0], len(m.series[k][1]), spec.title) for spec, keys in flat_assigned for k in keys]
    flat += [(k, m.series[k][1][0], len(m.series[k][1]), "") for k in flat_other]
    plots = []
    if assigned:
        with SpecCanvas() as canvas:
            plots = [Plot(spec.title, f"{spec.slug}.png", canvas.draw(spec, keys, m), keys) for spec, keys in assigned]
    others = []
    for n, start in enumerate(range(0, len(other), OTHER_PER_FIGURE), 1):
        chunk = other[start : start + OTHER_PER_FIGURE]
        title = "Other metrics" if len(other) <= OTHER_PER_FIGURE else f"Other metrics ({n})"
        others.append(Plot(title, f"other-metrics-{n}.png", plot_small_multiples(chunk, m, title), chunk))
    return Figures(plots, others, flat)


# ---------------------------------------------------------------------------------------------
# HTML

# (title, body): the body is HTML, or a table as rows (the first row its header).
ReportSection = tuple[str, "str | Sequence[Sequence[Any]]"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.15em;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:3px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.meta td:first-child{font-weight:600}.plots{display:flex;flex-wrap:wrap;gap:12px}
.plots figure{margin:0}.plots img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555;max-width:576px;word-break:break-all}
pre{background:#f7f7f7;padding:10px;font-size:12px;overflow:auto}.warn{color:#a33}
details summary{cursor:pointer;font-weight:600}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    s = str(v)
    return s if len(s) <= 300 else s[:300] + "..."


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t)) if t is not None else "unknown"


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    mnt, sec = divmod(rest, 60)
    return f"{h}h {mnt:02d}m {sec:02d}s" if h else f"{mnt}m {sec:02d}s" if mnt else f"{seconds:.1f}s"


def _table(rows: Sequence[Sequence[Any]], header: bool = True, css: str = "") -> str:
    """An HTML table of escaped cells; the first row is the header when `header`."""
    out = [f'<table class="{css}">' if css else "<table>"]
    for i, row in enumerate(rows):
        tag = "th" if header and i == 0 else "td"
        cells = []
        for c in row:
            num = tag == "td" and isinstance(c, (int, float)) and not isinstance(c, bool)
            cells.append(f"<{tag}{' class=num' if num else ''}>{_e(_fmt(c))}</{tag}>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v if not isinstance(v, list) else json.dumps(v)))
    return out


def _img(p: Plot) -> str:
    data = base64.b64encode(p.png).decode("ascii")
    caption = ", ".join(p.keys)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{_e(p.title)}"><figcaption>{_e(caption)}</figcaption></figure>'


def _section_body(body: Any) -> str:
    if isinstance(body, str):
        return body  # the caller's HTML, as given
    return _table([list(r) for r in body])


def check_sections(extra_sections: Sequence[ReportSection]) -> list[tuple[str, Any]]:
    """The sections as (title, HTML or list of row lists); a wrong shape is a TypeError (the
    caller is code, not a user)."""
    out = []
    for item in extra_sections:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(f"an extra report section is (title, HTML string or table rows), got {item!r:.200}")
        title, body = item
        if not isinstance(body, str):
            if not isinstance(body, (list, tuple)) or not all(isinstance(r, (list, tuple)) for r in body):
                raise TypeError(
                    f"extra report section {title!r}: the body is an HTML string or a list of rows (lists), got {type(body).__name__}"
                )
            body = [list(r) for r in body]
        out.append((title, body))
    return out


def render_html(
    run_dir: Path,
    m: RunMetrics,
    figures: Figures,
    config_text: str | None,
    extra_sections: Sequence[tuple[str, Any]],
    build_seconds: float | None = None,
) -> str:
    name, stage = run_dir.name, "unknown"
    if config_text is not None:
        import yaml

        try:
            cfg = yaml.safe_load(config_text)
            if isinstance(cfg, dict):
                stage = str(cfg.get("stage", stage))
        except yaml.YAMLError:
            stage = "unknown (config.yaml does not parse)"
    steps = [s for s, _ in m.last.values() if s >= 0]
    meta = [
        ("run", name),
        ("folder", str(run_dir.resolve())),
        ("stage", stage),
        ("start", _when(m.start)),
        ("end (last metric row)", _when(m.end)),
        ("duration", _duration(m.end - m.start) if m.start is not None and m.end is not None else "unknown"),
        ("last step", max(steps) if steps else "none"),
        ("metric rows", m.rows),
    ]
    if m.unreadable:
        meta.append(("unreadable lines", f"{m.unreadable} skipped (a torn last line is what a killed writer leaves)"))
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>{_e(name)} ({_e(stage)}) run report</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(name)} <small>({_e(stage)})</small></h1>",
        _table(meta, header=False, css="meta"),
    ]
    for title, body in extra_sections:
        parts.append(f"<h2>{_e(title)}</h2>{_section_body(body)}")
    parts.append("<h2>Final values</h2>")
    if m.last:
        parts.append(_table([("metric", "last value", "at step")] + [(k, v, s) for k, (s, v) in sorted(m.last.items())]))
    else:
        parts.append("<p>No metric rows yet.</p>")
    if figures.plots:
        parts.append('<h2>Plots</h2><div class="plots">' + "".join(_img(p) for p in figures.plots) + "</div>")
    if figures.others:
        parts.append('<h2>Other metrics</h2><div class="plots">' + "".join(_img(p) for p in figures.others) + "</div>")
    if figures.flat:
        rows = [("metric", "value", "points", "plot it belongs to")] + [(k, v, n, where or "other") for k, v, n, where in figures.flat]
        parts.append("<h2>Not drawn: one value throughout</h2>" + _table(rows))
    if m.data_rows:
        parts.append("<h2>Data</h2>")
        for row in m.data_rows:
            label = row.get("phase", "")
            body = [("key", "value")] + _flatten({k: v for k, v in row.items() if k not in META_KEYS | {"phase"}})
            parts.append(f"<details><summary>{_e(label or 'data')}</summary>{_table(body)}</details>")
    if m.events:
        rows = [("step", "event", "details")]
        for ev in m.events:
            details = {k: v for k, v in ev.items() if k not in META_KEYS}
            rows.append((ev.get("step", ""), ev.get("event", ""), json.dumps(details, default=str)))
        parts.append('<h2 class="warn">Events</h2>' + _table(rows))
    parts.append("<h2>Config</h2>")
    if config_text is None:
        parts.append("<p>No config.yaml in the run folder.</p>")
    else:
        parts.append(f"<details><summary>Resolved config (config.yaml)</summary><pre>{_e(config_text)}</pre></details>")
    foot = f"written {_when(time.time())}"
    if build_seconds is not None:
        foot += f" in {build_seconds:.2f}s"
    parts.append(f'<p style="color:#888;font-size:12px">{_e(foot)} by qwen25_rl.reports from metrics.jsonl</p></body></html>')
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# the entry point


def _stored_sections(run_dir: Path) -> list[tuple[str, Any]]:
    p = run_dir / SECTIONS_FILE
    if not p.is_file():
        return []
    try:
        return check_sections(json.loads(p.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError):
        return []  # a broken side file must not cost the report; the caller can give them again


def _write_file(path: Path, data: bytes) -> None:
    # Whole file or the old one for a reader (a browser refreshing); no fsync: a report is
    # rebuilt from metrics.jsonl at any time, durability is not worth the cost.
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _is_report_png(name: str) -> bool:
    return name in {f"{s.slug}.png" for s in PLOT_SPECS} or re.fullmatch(r"other-metrics-\d+\.png", name) is not None


def write_report(run_dir: str | Path, extra_sections: Sequence[ReportSection] | None = None, *, out: str | Path | None = None) -> Path:
    """Build `report.html` (and `plots/*.png`) for a run folder from its metrics.jsonl and
    config.yaml; returns the HTML file.

    `extra_sections`: (title, body) pairs shown under the header, body either HTML (inserted as
    given: the caller's markup) or a table as a list of rows, the first row its header (cells
    escaped). They are stored in the run folder and shown again by later rebuilds; None keeps
    the stored ones, [] removes them. `out`: write the HTML there instead (the PNGs go to a
    `<name>-plots/` folder beside it)."""
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    if not run_dir.is_dir():
        raise UserPathError(f"{run_dir}: no such run folder")
    if not metrics_path.is_file():
        raise UserPathError(f"{metrics_path}: no such file (a run folder holds the metrics.jsonl its stage wrote)")
    if extra_sections is None:
        sections = _stored_sections(run_dir)
    else:
        sections = check_sections(extra_sections)
        if sections:
            _write_file(run_dir / SECTIONS_FILE, json.dumps(sections, default=str).encode())
        else:
            (run_dir / SECTIONS_FILE).unlink(missing_ok=True)
    m = read_run_metrics(metrics_path)
    figures = build_plots(m)
    html_path = Path(out) if out is not None else run_dir / REPORT_FILE
    html_path.parent.mkdir(parents=True, exist_ok=True)
    # Beside a page written elsewhere, a folder of its own name: never someone's plots/.
    plots_dir = html_path.parent / (PLOTS_DIR if out is None else f"{html_path.stem}-plots")
    plots_dir.mkdir(exist_ok=True)
    written = set()
    for p in figures.plots + figures.others:
        _write_file(plots_dir / p.file, p.png)
        written.add(p.file)
    for old in plots_dir.glob("*.png"):  # an earlier build's plots whose keys are gone (only ours)
        if old.name not in written and _is_report_png(old.name):
            old.unlink(missing_ok=True)
    config_path = run_dir / "config.yaml"
    config_text = config_path.read_text(errors="replace") if config_path.is_file() else None
    page = render_html(run_dir, m, figures, config_text, sections, time.perf_counter() - t0)
    _write_file(html_path, page.encode("utf-8"))
    return html_path

"""`qwen25-rl report RUN_DIR`: rebuild a run folder's report.html (and plots/) from its
metrics.jsonl and config.yaml (qwen25_rl.reports), e.g. for a run that is still going, one that
was killed, or one written with `logging.report: false`."""

from __future__ import annotations

import argparse
import time

from qwen25_rl.cli import arg, cli_command


@cli_command(
    "report",
    help="Rebuild RUN_DIR/report.html (self-contained: plots, final values, config) and RUN_DIR/plots/*.png from metrics.jsonl.",
    arguments=[
        arg("run_dir", metavar="RUN_DIR", help="a run folder (holds metrics.jsonl and config.yaml)"),
        arg(
            "--out", default=None, metavar="FILE", help="write the HTML here instead; its PNGs go to a folder beside it (r.html: r-plots/)"
        ),
    ],
)
def report(args: argparse.Namespace) -> int:
    from qwen25_rl.errors import UserPathError
    from qwen25_rl.reports import write_report

    t0 = time.perf_counter()
    try:
        path = write_report(args.run_dir, out=args.out)
    except PermissionError as e:  # someone else's run folder: the page can go elsewhere
        raise UserPathError(f"{e.filename}: {e.strerror}; write the report elsewhere with --out FILE") from e
    print(f"wrote {path} ({time.perf_counter() - t0:.1f}s)")
    return 0

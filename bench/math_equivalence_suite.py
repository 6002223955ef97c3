"""How often the math verifier agrees with a third party's labelled equivalence suite.

    .venv/bin/python bench/math_equivalence_suite.py --suite DIR_OR_FILE [...] [--show 20]

A suite is one or more pytest files whose test functions are parametrized with
"gold,pred,expected" (extra parameters are ignored), e.g. math-verify's own tests (clone
https://github.com/huggingface/Math-Verify and pass its tests/ folder). Nothing of the suite is
copied here: the files are read at run time, their parameter lists evaluated as Python
literals, and each (response, gold) pair is scored by `reward.math.score_math` and, for
comparison, by math-verify called directly (its default extraction: LaTeX then plain
expressions, boxed first).

The suite's labels follow its authors' conventions; where ours differ on purpose (the last
number of free text is not an answer, a comma is never a decimal point, a hedged answer is
wrong) a disagreement is a convention, not a bug. The disagreements are printed with the
extraction and the path that decided, so each can be put in one class or the other.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def load_cases(paths: list[str]) -> list[dict]:
    """Every (gold, pred, expected) of every test function parametrized with them."""
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(p.glob("test_*.py")) if p.is_dir() else [p]
    cases = []
    for f in files:
        tree = ast.parse(f.read_text())
        for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
            for deco in fn.decorator_list:
                if not (isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "parametrize" and len(deco.args) >= 2):
                    continue
                try:
                    names = ast.literal_eval(deco.args[0])
                    rows = ast.literal_eval(deco.args[1])
                except (ValueError, SyntaxError):
                    continue
                names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
                if names[:3] != ["gold", "pred", "expected"]:
                    continue
                for row in rows:
                    gold, pred, expected = row[:3]
                    if isinstance(gold, str) and isinstance(pred, str):
                        cases.append({"file": f.name, "test": fn.name, "gold": gold, "pred": pred, "expected": bool(expected)})
    return cases


def math_verify_verdict(gold: str, pred: str) -> bool:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    targets = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    try:
        return bool(verify(parse(gold, targets, parsing_timeout=None), parse(pred, targets, parsing_timeout=None), timeout_seconds=None))
    except Exception:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", nargs="+", required=True, help="test files or folders of the suite")
    ap.add_argument("--show", type=int, default=20, help="disagreements to print")
    ap.add_argument("--json", help="also write every verdict here")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    from qwen25_rl.reward.math import score_math

    cases = load_cases(args.suite)
    if not cases:
        sys.exit("no (gold, pred, expected) parameter lists found")
    t0 = time.perf_counter()
    for c in cases:
        s = score_math(c["pred"], c["gold"], timeout_s=5.0)
        c.update(ours=s.correct, status=s.status.value, path=s.path, source=s.source, extracted=s.extracted, detail=s.detail)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for c in cases:
        c["math_verify"] = math_verify_verdict(c["gold"], c["pred"])
    mv_s = time.perf_counter() - t0
    n = len(cases)
    ours_ok = sum(c["ours"] == c["expected"] for c in cases)
    mv_ok = sum(c["math_verify"] == c["expected"] for c in cases)
    wrong = [c for c in cases if c["ours"] != c["expected"]]
    print(
        json.dumps(
            {
                "cases": n,
                "ours_agree": ours_ok,
                "math_verify_agree": mv_ok,
                "ours_false_accepts": sum(c["ours"] and not c["expected"] for c in cases),
                "ours_misses": sum(not c["ours"] and c["expected"] for c in cases),
                "ours_s": round(ours_s, 1),
                "math_verify_s": round(mv_s, 1),
            }
        )
    )
    print(f"\n{n} labelled pairs: ours agree on {ours_ok} ({100 * ours_ok / n:.1f}%), math-verify on {mv_ok} ({100 * mv_ok / n:.1f}%)")
    print("disagreements by test function:", dict(Counter(f"{c['file']}::{c['test']}" for c in wrong).most_common()))
    print("disagreements by what decided ours:", dict(Counter(f"{c['status']}/{c['path']}/{c['source']}" for c in wrong).most_common()))
    for c in wrong[: args.show]:
        print(
            f"- expected {c['expected']}, ours {c['ours']} ({c['status']}, {c['path']}, {c['source']}: {c['extracted']!r:.60}) "
            f"gold {c['gold']!r:.60} pred {c['pred']!r:.100} {c['detail'][:80]}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(cases, indent=1))


if __name__ == "__main__":
    main()

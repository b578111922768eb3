"""``relay-harness report RUN_DIR``: check a run folder and write its report. Exit status: 0 pass,
1 violations, 3 inconclusive, 2 the harness itself failed (e.g. no history in the folder)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..cli import UsageError
from .build import EXIT_HARNESS_FAILED, build_report


def add_parser(sub: Any) -> None:
    report = sub.add_parser("report", help="check a run folder and write report.html, summary.md, results.json, "
                                           "junit.xml")
    report.add_argument("run_dir", type=Path, help="a folder under reports/ (it holds history.jsonl)")
    report.add_argument("--partial", action="store_true", help="mark the report as covering an interrupted run")
    report.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> int:
    if not (args.run_dir / "history.jsonl").is_file():
        raise UsageError(f"{args.run_dir} holds no history.jsonl: pass a run folder written by "
                         "`locust -f scenarios/relay.py`")
    try:
        status, results = build_report(args.run_dir, args.partial)
    except (OSError, ValueError, KeyError) as exc:
        print(f"relay-harness report: the report could not be built: {exc}", file=sys.stderr)
        return EXIT_HARNESS_FAILED
    score = "n/a" if results["score"] is None else f"{results['score']:.1f}%"
    print(f"{results['verdict'].upper()}: score {score}, {results['counts']['violations']} violation(s); "
          f"{args.run_dir / 'report.html'}")
    return status

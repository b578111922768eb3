"""Writing a run's report: every file atomically, so a reader never sees half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .html import render_html
from .junit import render_junit
from .markdown import render_summary
from .results import build_results

EXIT_PASS, EXIT_VIOLATIONS, EXIT_HARNESS_FAILED = 0, 1, 2


def write_atomic(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8") as out:
        out.write(text)
    os.replace(out.name, path)


def build_report(run_dir: Path, partial: bool = False) -> tuple[int, dict]:
    """Check the run and write results.json, summary.md, junit.xml and report.html into it."""
    results, _, _ = build_results(run_dir, partial)
    write_atomic(run_dir / "results.json", json.dumps(results, indent=2, default=str))
    write_atomic(run_dir / "summary.md", render_summary(results))
    write_atomic(run_dir / "junit.xml", render_junit(results))
    write_atomic(run_dir / "report.html", render_html(results))
    return (EXIT_VIOLATIONS if results["verdict"] == "fail" else EXIT_PASS), results

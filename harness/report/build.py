"""Writing a run's report: every file atomically, so a reader never sees half of one."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from .html import render_html
from .junit import render_junit
from .markdown import render_summary
from .results import build_results

EXIT_PASS, EXIT_VIOLATIONS, EXIT_HARNESS_FAILED, EXIT_INCONCLUSIVE = 0, 1, 2, 3
EXIT_STATUS = {"pass": EXIT_PASS, "fail": EXIT_VIOLATIONS, "inconclusive": EXIT_INCONCLUSIVE}


def write_atomic(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: into a temporary file next to it, then renamed over it.
    The file gets the mode any newly created file gets (0666 less the umask, like the rest of the
    run folder); on an error the temporary file is removed and ``path`` is left as it was."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with open(descriptor, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def build_report(run_dir: Path, partial: bool = False) -> tuple[int, dict]:
    """Check the run and write results.json, summary.md, junit.xml and report.html into it; returns the exit
    status (0 pass, 1 fail, 3 inconclusive) and the results."""
    results, _, _ = build_results(run_dir, partial)
    write_atomic(run_dir / "results.json", json.dumps(results, indent=2, default=str))
    write_atomic(run_dir / "summary.md", render_summary(results))
    write_atomic(run_dir / "junit.xml", render_junit(results))
    write_atomic(run_dir / "report.html", render_html(results))
    return EXIT_STATUS[results["verdict"]], results


def verdict_line(results: dict) -> str:
    """The one line a run ends with: verdict, why, score; for a fail in a run that was short of CPU
    or whose local stack fell behind, a hint that the load may be part of it (the console and a CI
    log show only this line)."""
    score = "n/a" if results["score"] is None else f"{results['score']:.1f}%"
    partial = " (partial)" if results["partial"] else ""
    hint = ""
    strained = (results.get("resources") or {}).get("short_of_cpu") or (results.get("lag") or {}).get("spans")
    if results["verdict"] == "fail" and strained:
        hint = ("; the run was short of CPU (summary.md says where): rerun with fewer users (-u) to tell the "
                "relay's faults from the load's")
    return f"{results['verdict'].upper()}{partial}: {results['verdict_reason']}; score {score}{hint}"

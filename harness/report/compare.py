"""``relay-harness compare BASE_RUN RUN``: what changed between two run folders, as Markdown, and an
exit status CI can gate on ("no worse than main").

Both folders must hold a ``results.json`` (harness/report/results.py); the figures come from it:
the verdict, the checkers' violations, and Locust's table (``stats``) for the ``message fan-out``
and ``time to SESSION_CONNECT`` latencies (p50 = Locust's median, p95) and deliveries/s (the
``message fan-out`` entry's requests per second: one per delivery).

A regression (exit 1) is any of:
- the verdict got worse (pass < inconclusive < fail);
- a new finding: a violation in RUN whose (checker, invariant, normalised message) no violation of
  BASE has. Normalising replaces ids (session, member, payload and player names, UUIDs) and numbers
  by placeholders and a list of them by one, so "session Tm5C...: 12 MESSAGE(s) with memberNum -1"
  matches "session x9Q...: 3 MESSAGE(s) with memberNum -1"; how many times a finding occurs is shown
  but never a regression by itself;
- a p95 latency (fan-out or join) higher by more than ``--max-regression`` percent (default 25) *and*
  by at least ``--min-latency-ms`` (default 50 ms: Locust rounds percentiles above 100 ms to 10 ms
  and above 1 s to 100 ms, and a loaded 2-core runner moves p95 by tens of ms);
- deliveries/s lower by more than ``--max-regression`` percent *and* by at least ``--min-rate``
  (default 1/s).
A figure missing on either side (no stats, nothing delivered) is shown as n/a and not compared; one
counted from fewer than MIN_SAMPLES (50) joins or deliveries on either side is shown but not gated.
Exit 0 otherwise, 2 on bad input (a folder that is not a run folder), with one line saying how to fix it.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cli import UsageError
from .build import write_atomic
from .markdown import score_text, showing
from .results import SCHEMA

EXIT_SAME, EXIT_REGRESSION = 0, 1
VERDICT_RANK = {"pass": 0, "inconclusive": 1, "fail": 2}
SHOWN_FINDINGS = 20
MIN_SAMPLES = 50  # a p95 of fewer samples is close to their maximum: shown, never gated
LATENCIES = (("median_ms", " p50 (ms)", None), ("p95_ms", " p95 (ms)", "higher"))  # Locust key, label, worse when

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
# Words stay as they are: lower case (with - or _), CamelCase, UPPER_CASE; anything else of 8+ characters is an id.
_WORD = re.compile(r"[a-z]+(?:[-_][a-z]+)*|[A-Z]?[a-z]+(?:[A-Z][a-z]+)*|[A-Z]+(?:_[A-Z]+)*")
_NUMBER = re.compile(r"\d+")
_LIST = re.compile(r"<(id|n)>(?:, (?:<\1>|\.\.\.))+")


@dataclass(frozen=True)
class Threshold:
    """When a worse figure is a regression: worse by more than ``percent`` and by at least the absolute
    amount (``latency_ms`` for a p95 in ms, ``rate`` for deliveries/s)."""

    percent: float = 25.0
    latency_ms: float = 50.0
    rate: float = 1.0


@dataclass(frozen=True)
class Figure:
    """One measured figure of both runs; ``worse``: "higher" (a latency), "lower" (a rate) or None (not gated);
    ``samples``: the fewer of the two runs' counts behind it."""

    label: str
    base: float | None
    run: float | None
    worse: str | None
    samples: int

    @property
    def ratio(self) -> float | None:
        if self.base is None or self.run is None or self.base == 0:
            return None
        return self.run / self.base

    def regressed(self, threshold: Threshold) -> bool:
        if self.base is None or self.run is None or self.worse is None or self.samples < MIN_SAMPLES:
            return False
        if self.worse == "higher":
            return self.run > self.base * (1 + threshold.percent / 100) and self.run - self.base >= threshold.latency_ms
        return self.run < self.base * (1 - threshold.percent / 100) and self.base - self.run >= threshold.rate


FindingKey = tuple[str, str, str]  # (checker name, invariant, normalised message)


@dataclass
class Comparison:
    base_dir: Path
    run_dir: Path
    base: dict[str, Any]
    run: dict[str, Any]
    figures: list[Figure]
    new: dict[FindingKey, list[str]]  # key -> RUN's messages of it
    fixed: dict[FindingKey, list[str]]  # key -> BASE's messages of it
    regressions: list[str]


def normalise(message: str) -> str:
    """A finding's message without what differs from run to run: ids -> ``<id>``, numbers -> ``<n>``,
    a comma-separated list of either -> one placeholder."""

    def token(match: re.Match[str]) -> str:
        text = match.group()
        if _WORD.fullmatch(text):
            return text
        return "<id>" if len(text) >= 8 else _NUMBER.sub("<n>", text)

    return _LIST.sub(r"<\1>", _TOKEN.sub(token, message))


def load_results(path: Path, role: str) -> dict[str, Any]:
    """The run folder's results.json; UsageError (one line: what is wrong, how to fix it) when ``path``
    is not a run folder with a readable relay-harness results file."""
    where = shlex.quote(str(path))
    if not path.is_dir():
        raise UsageError(f"{role} {path} is not a folder: pass a run folder (reports/<run>/ or chaos --out DIR)")
    results_path = path / "results.json"
    if not results_path.is_file():
        if (path / "history.jsonl").is_file():
            raise UsageError(f"{role} {path} holds no results.json: build its report first with "
                             f"`relay-harness report {where}`")
        raise UsageError(f"{role} {path} holds no results.json: pass a run folder written by "
                         "`relay-harness chaos` or `locust -f scenarios/relay.py`")
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{role} {results_path} could not be read ({exc}): rebuild it with "
                         f"`relay-harness report {where}`") from None
    if not isinstance(results, dict) or results.get("schema") != SCHEMA:
        raise UsageError(f"{role} {results_path} is not a {SCHEMA} file: rebuild it with "
                         f"`relay-harness report {where}`")
    return results


def findings(results: dict[str, Any]) -> dict[FindingKey, list[str]]:
    """The run's violations grouped by (checker, invariant, normalised message) -> their messages."""
    grouped: dict[FindingKey, list[str]] = defaultdict(list)
    for check in results.get("checks") or []:
        for violation in check.get("violations") or []:
            message = str(violation.get("message", ""))
            grouped[(str(check.get("name")), str(violation.get("invariant")), normalise(message))].append(message)
    return grouped


def _stats(results: dict[str, Any], name: str) -> dict[str, Any]:
    """Locust's row ``name`` of results.json ``stats``, or {} when there is none or it counted nothing."""
    entries = (results.get("stats") or {}).get("entries") or []
    row = next((entry for entry in entries if entry.get("name") == name), {})
    return row if row.get("requests") else {}


def figures(base: dict[str, Any], run: dict[str, Any]) -> list[Figure]:
    """p50 / p95 of fan-out and join latency (ms) and deliveries/s of both runs, from Locust's table."""
    rows = []
    for name, label, keys in (("message fan-out", "fan-out", LATENCIES),
                              ("time to SESSION_CONNECT", "join (to SESSION_CONNECT)", LATENCIES),
                              ("message fan-out", "deliveries", (("rps", "/s", "lower"),))):
        before, after = _stats(base, name), _stats(run, name)
        samples = min(before.get("requests", 0), after.get("requests", 0))
        for key, suffix, worse in keys:
            rows.append(Figure(f"{label}{suffix}", before.get(key), after.get(key), worse, samples))
    return rows


def compare(base_dir: Path, run_dir: Path, threshold: Threshold) -> Comparison:
    """Load both folders (UsageError on bad input) and find what got worse."""
    base, run = load_results(base_dir, "BASE_RUN"), load_results(run_dir, "RUN")
    base_findings, run_findings = findings(base), findings(run)
    new = {key: messages for key, messages in run_findings.items() if key not in base_findings}
    fixed = {key: messages for key, messages in base_findings.items() if key not in run_findings}
    rows = figures(base, run)
    regressions = []
    before, after = str(base.get("verdict")), str(run.get("verdict"))
    if VERDICT_RANK.get(after, 2) > VERDICT_RANK.get(before, 2):
        regressions.append(f"verdict {before} -> {after}")
    if new:
        regressions.append(f"{sum(len(m) for m in new.values())} new finding(s) of {len(new)} kind(s)")
    for row in rows:
        if row.regressed(threshold):
            change = f"x{row.ratio:.2f}" if row.ratio is not None else "from 0"
            regressions.append(f"{row.label} {_number(row.base)} -> {_number(row.run)} ({change})")
    return Comparison(base_dir, run_dir, base, run, rows, new, fixed, regressions)


def _number(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if value != int(value) else f"{int(value)}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _finding_lines(found: dict[FindingKey, list[str]], titles: dict[str, str]) -> list[str]:
    lines = []
    for (name, invariant, _), messages in list(found.items())[:SHOWN_FINDINGS]:
        times = f" (x{len(messages)})" if len(messages) > 1 else ""
        lines.append(f"- **{_cell(titles.get(name, name))}**, {_cell(invariant)}: {_cell(messages[0])}{times}")
    return lines


def _run_line(role: str, path: Path, results: dict[str, Any]) -> str:
    partial = " (partial)" if results.get("partial") else ""
    return (f"| {role} | `{_cell(str(path))}` | **{str(results.get('verdict', '')).upper()}**{partial} | "
            f"{score_text(results)} | `{results.get('profile') or 'none'}` | {results.get('seed')} |")


def render_comparison(comparison: Comparison, threshold: Threshold) -> str:
    """The comparison as Markdown (fits a CI job summary)."""
    base, run = comparison.base, comparison.run
    headline = "REGRESSION" if comparison.regressions else "no regression"
    lines = [f"## Run comparison: {headline}", "", "| | folder | verdict | score | profile | seed |",
             "|---|---|---|---|---|---|", _run_line("base", comparison.base_dir, base),
             _run_line("run", comparison.run_dir, run), ""]
    if base.get("profile") != run.get("profile"):
        lines += ["> The runs used different profiles: the figures compare different experiments.", ""]
    if comparison.regressions:
        lines += ["Regressions:", *(f"- {item}" for item in comparison.regressions), ""]
    lines += ["| figure | base | run | run / base |", "|---|---|---|---|"]
    for row in comparison.figures:
        ratio = "n/a" if row.ratio is None else f"{row.ratio:.2f}"
        flag = " **worse**" if row.regressed(threshold) else ""
        if row.worse and row.ratio is not None and row.samples < MIN_SAMPLES:
            flag = f" (from {row.samples} samples: not gated)"
        lines.append(f"| {row.label} | {_number(row.base)} | {_number(row.run)} | {ratio}{flag} |")
    titles = {str(c.get("name")): str(c.get("title")) for c in [*base.get("checks", []), *run.get("checks", [])]}
    for heading, found in (("New findings", comparison.new), ("Fixed findings", comparison.fixed)):
        shown = min(len(found), SHOWN_FINDINGS)
        lines += ["", f"### {heading}: {len(found)}{showing(shown, len(found))}", ""]
        lines += _finding_lines(found, titles) or ["None."]
    changed = _status_changes(base, run)
    if changed:
        lines += ["", "### Checks whose status changed", "", "| check | base | run |", "|---|---|---|", *changed]
    lines += ["", f"Rule: a regression is a worse verdict, a new finding, a p95 latency higher by more than "
                  f"{threshold.percent:g} % and {threshold.latency_ms:g} ms, or deliveries/s lower by more than "
                  f"{threshold.percent:g} % and {threshold.rate:g}/s (each from {MIN_SAMPLES} samples or more).", ""]
    return "\n".join(lines)


def _status_changes(base: dict[str, Any], run: dict[str, Any]) -> list[str]:
    before = {str(c.get("name")): c for c in base.get("checks") or []}
    rows = []
    for check in run.get("checks") or []:
        old = before.get(str(check.get("name")), {}).get("status", "absent")
        if old != check.get("status"):
            rows.append(f"| {_cell(str(check.get('title')))} | {old} | {check.get('status')} |")
    return rows


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number, 0 or more")
    return value


def add_parser(sub: Any) -> None:
    compare_parser = sub.add_parser(
        "compare", help="what changed between two run folders; exit 1 on a regression",
        description="Compare RUN with BASE_RUN (two run folders with results.json): verdict, new and fixed findings, "
                    "fan-out and join latency, deliveries/s, as Markdown. Exit 0: no regression, 1: a regression, "
                    "2: bad input.")
    compare_parser.add_argument("base_dir", metavar="BASE_RUN", type=Path, help="the run to compare with (e.g. main's)")
    compare_parser.add_argument("run_dir", metavar="RUN", type=Path, help="the run under judgement")
    compare_parser.add_argument("--max-regression", metavar="PCT", type=_non_negative, default=25.0,
                                help="how much worse, in percent, a p95 latency or deliveries/s may get (default 25)")
    compare_parser.add_argument("--min-latency-ms", metavar="MS", type=_non_negative, default=50.0,
                                help="a p95 latency must also be this much higher to count (default 50)")
    compare_parser.add_argument("--min-rate", metavar="PER_S", type=_non_negative, default=1.0,
                                help="deliveries/s must also be this much lower to count (default 1)")
    compare_parser.add_argument("--out", type=Path, metavar="FILE.md", help="also write the Markdown to this file")
    compare_parser.set_defaults(run=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    if args.out is not None and (args.out.is_dir() or not args.out.parent.is_dir()):
        raise UsageError(f"--out {args.out}: give a file in an existing folder")
    threshold = Threshold(args.max_regression, args.min_latency_ms, args.min_rate)
    comparison = compare(args.base_dir, args.run_dir, threshold)
    text = render_comparison(comparison, threshold)
    if args.out is not None:
        write_atomic(args.out, text)
    print(text, end="")
    return EXIT_REGRESSION if comparison.regressions else EXIT_SAME

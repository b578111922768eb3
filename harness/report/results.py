"""The verdict of a run as data: ``results.json`` (schema ``relay-harness/results/v1``).

    {
      "schema": "relay-harness/results/v1",
      "verdict": "pass" | "fail" | "inconclusive",   # the rule: harness/checkers/__init__.py
      "verdict_reason": str,                # one line: why (e.g. "0 of 36 connects succeeded")
      "partial": bool,                      # the run was interrupted: the report covers what it saw
      "score": float | null,                # weighted pass rate of the checks that passed or failed, percent
      "seed": int, "profile": str | null, "replay": str,   # the command that replays the run
      "rules": "protocol" | "reference",    # the rule set the checks applied
      "exercised": {"records", "connects", "connects_ok", "sessions", "sends", "deliveries"},
      "counts": {"operations": n, "clients": n, "faults": n, "violations": n,
                 "explained": n,        # findings an injected fault explains
                 "behind": n},          # findings only the local stack's lag explains: not judged
      "checks": [{"name", "title", "weight", "status": "pass"|"fail"|"not exercised"|"error"|"skipped",
                  "skipped", "error", "checked", "notes", "violations": [finding], "explained": [finding],
                  "explained_count"}],
      "series": {"t": [...s], "deliveries_per_s": [...], "p50_ms": [...], "p95_ms": [...], "p99_ms": [...]},
      "faults": [{"start_s", "end_s", "fault", "rule"}],
      "resources": run.json's "resources" (CPU of the load generator and the stack), or null,
      "processes": {"sampled": bool, "note": str,   # why nothing was sampled, or ""
                    "roles": {role: {"t": [...s], "rss_mb": [...], "fds": [...], "cpu_percent": [...]}},
                    "summary": {role: {"samples", "rss_start_mb", "rss_end_mb", "rss_peak_mb",
                                       "fds_start", "fds_end", "fds_peak"}}},
                   # resources.jsonl over the charts' time axis; roles "stack", "store", "proxy"
      "lag": {"spans", "seconds", "max_queued_ms", "invocations"},   # the local stack behind its load
                   # (checkers/model.py lag_spans; all 0 when it kept up or ran elsewhere)
      "stats": Locust's table (locust_stats.json), or null
    }
    finding: {"invariant", "message", "excerpt": [history records], "explained_by": [fault log entries],
              "explained_by_count"}
"""

from __future__ import annotations

import json
import shlex
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..checkers import exercise, lag_summary, reliability_score, run_checkers, unjudged, verdict
from ..checkers.model import CheckResult, Run
from ..client import parse_payload

SCHEMA = "relay-harness/results/v1"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _axis(run: Run) -> tuple[float, float]:
    """The charts' time axis in wall-clock ms: from the first history record to the last one, or to the
    moment the load stopped (run.json ``ended_t``) when that is earlier (what follows is teardown)."""
    start = min((r["t"] for r in run.history), default=0)
    end = run.end_t
    ended = run.info.get("ended_t")
    if isinstance(ended, (int, float)) and start < ended < end:
        end = ended
    return start, end


def time_series(run: Run) -> dict[str, list[float]]:
    """Per whole second of the run (``t``: the second's start, s from the first history record):
    deliveries and fan-out latency percentiles (send -> receipt, ms). Only whole seconds are kept:
    the first starts at the first record, and a trailing part-second is left out, as its count would
    plot as a collapse of the throughput. A run shorter than a second has an empty series."""
    start, end = _axis(run)
    latencies: dict[int, list[float]] = defaultdict(list)
    for record in run.received("MESSAGE"):
        if record.get("via") == "HEARTBEAT":
            continue
        payload = parse_payload(record["msg"].get("payload"))
        if payload is not None:
            latencies[int((record["t"] - start) // 1000)].append(max(0.0, record["t"] - payload["ts"]))
    seconds = range(int((end - start) // 1000)) if run.history else range(0)
    series: dict[str, list[float]] = {"t": [], "deliveries_per_s": [], "p50_ms": [], "p95_ms": [], "p99_ms": []}
    for second in seconds:
        values = latencies.get(second, [])
        series["t"].append(float(second))
        series["deliveries_per_s"].append(float(len(values)))
        for key, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
            series[key].append(round(_percentile(values, q), 1) if values else 0.0)
    return series


def process_usage(run: Run) -> dict[str, Any]:
    """The target's processes over the charts' time axis (resources.jsonl, s from the first history
    record), per role: RSS in MB, open descriptors, CPU in % of one core; and each role's first, last
    and highest figures there. Not sampled: why, in one line."""
    if not run.resources:
        note = ("the relay ran elsewhere (--host): only the embedded local stack and its proxy are sampled"
                if run.info.get("stack") is None else "no resources.jsonl in the run folder (--sample-interval 0, "
                                                      "or a run from before sampling)")
        return {"sampled": False, "note": note, "roles": {}, "summary": {}}
    start, end = _axis(run)
    roles: dict[str, dict[str, list[float]]] = {}
    for sample in sorted(run.resources, key=lambda r: r["t"]):
        if run.history and not start <= sample["t"] <= end:
            continue
        series = roles.setdefault(sample["role"], {"t": [], "rss_mb": [], "fds": [], "cpu_percent": []})
        series["t"].append(round((sample["t"] - start) / 1000, 3))
        series["rss_mb"].append(round(sample["rss_bytes"] / 2**20, 1))
        series["fds"].append(sample["fds"])
        series["cpu_percent"].append(sample.get("cpu"))
    summary = {role: {"samples": len(s["t"]), "rss_start_mb": s["rss_mb"][0], "rss_end_mb": s["rss_mb"][-1],
                      "rss_peak_mb": max(s["rss_mb"]), "fds_start": s["fds"][0], "fds_end": s["fds"][-1],
                      "fds_peak": max(s["fds"])} for role, s in roles.items()}
    return {"sampled": True, "note": "" if roles else "no sample fell within the load", "roles": roles,
            "summary": summary}


def fault_spans(run: Run) -> list[dict[str, Any]]:
    """Faults on the charts' time axis (s from the first history record): entries of one rule less
    than a second apart merge into one span, from its first injected fault to the end of its last
    one, so a rule whose window never closes ends where its faults stopped. Spans are cut at the end
    of the history (or where the load stopped); faults injected after it (teardown) are left out."""
    start, end = _axis(run)
    end_s = (end - start) / 1000
    spans: list[dict[str, Any]] = []
    open_spans: dict[str, dict[str, Any]] = {}
    for fault in sorted(run.faults, key=lambda f: f["t"]):
        rule = (fault.get("rule") or {}).get("id", fault["fault"])
        params = fault.get("params") or {}
        at = max((fault["t"] - start) / 1000, 0.0)
        if at > end_s or not run.history:
            continue
        until = round(min(at + float(params.get("seconds", 0)) + float(params.get("ms", 0)) / 1000, end_s), 3)
        current = open_spans.get(rule)
        if current and at - current["end_s"] <= 1.0:
            current["end_s"] = max(current["end_s"], until)
            current["count"] += 1
            continue
        current = {"start_s": round(at, 3), "end_s": until, "fault": fault["fault"], "rule": rule, "count": 1}
        open_spans[rule] = current
        spans.append(current)
    return spans


def replay_command(info: dict[str, Any]) -> str:
    """The command that replays the run: its own command line with its seed, as ``locust``, and
    without ``--run-dir`` (a replay writing into this folder would overwrite the evidence)."""
    command: list[str] = []
    args = iter(info.get("command") or ["locust", "-f", "scenarios/relay.py"])
    for arg in args:
        if arg == "--run-dir":
            next(args, None)
        elif not arg.startswith("--run-dir="):
            command.append(arg)
    if command and command[0].endswith(("locust", "__main__.py")):
        command[0] = "locust"
    if not any(arg == "--seed" or arg.startswith("--seed=") for arg in command) and info.get("seed") is not None:
        command += ["--seed", str(info["seed"])]
    return shlex.join(command)


def build_results(run_dir: Path, partial: bool = False) -> tuple[dict[str, Any], list[CheckResult], Run]:
    run = Run.load(run_dir)
    checks = run_checkers(run)
    stats_path = run_dir / "locust_stats.json"
    exercised = exercise(run)
    outcome, reason = verdict(checks, exercised, run.lags)
    results = {
        "schema": SCHEMA, "generated": time.time(), "run_dir": str(run_dir),
        "verdict": outcome, "verdict_reason": reason, "partial": partial or bool(run.info.get("partial")),
        "score": reliability_score(checks), "seed": run.info.get("seed"), "profile": run.info.get("profile"),
        "replay": replay_command(run.info), "rules": run.rules, "exercised": exercised,
        "counts": {"operations": len(run.history), "clients": len(run.by_client), "faults": len(run.faults),
                   "violations": sum(len(c.violations) for c in checks),
                   "explained": sum(len(c.explained) - unjudged(c) for c in checks),
                   "behind": sum(unjudged(c) for c in checks)},
        "checks": [c.as_dict() for c in checks],
        "series": time_series(run), "faults": fault_spans(run),
        "resources": run.info.get("resources"), "processes": process_usage(run), "lag": lag_summary(run.lags),
        "stats": json.loads(stats_path.read_text()) if stats_path.exists() else None,
    }
    return results, checks, run

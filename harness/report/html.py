"""``report.html``: one self-contained page (no scripts, no network): verdict, score, findings with
the history that shows them, latency and throughput over time with the faults shaded, Locust's
table, the seed and the command that replays the run."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from .charts import line_chart
from .markdown import behind_text, check_note, cpu_warning, process_lines, score_text, showing, verdict_line

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:960px;color:#222}
h1{margin-bottom:.2rem} .verdict{font-size:1.4rem;font-weight:700;padding:.3rem .8rem;border-radius:4px}
.pass{background:#d8f3dc;color:#1b4332} .fail{background:#ffd6d6;color:#8b0000}
.inconclusive{background:#ffe8a3;color:#5c4200} .skipped,.not-exercised{color:#666}
.error{color:#8b0000;font-weight:600}
.reason{font-weight:600} .warning{background:#fff4d1;border-left:4px solid #d99a00;padding:.4rem .8rem}
table{border-collapse:collapse;width:100%;margin:1rem 0} th,td{border-bottom:1px solid #ddd;padding:.35rem;
text-align:left;font-size:.9rem;vertical-align:top} td:nth-child(2){white-space:nowrap}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;font-size:.78rem}
.chart{width:100%;height:auto;margin:.5rem 0} .chart-title{font-size:14px;font-weight:600}
.axis{font-size:11px;fill:#555} .grid{stroke:#eee} .fault-band{fill:#d62728;opacity:.15}
.fault-tick{stroke:#d62728;stroke-width:2;opacity:.6} code{background:#f0f0f0;padding:0 .2rem;word-break:break-all}
details{margin:.4rem 0} .note{color:#555;font-size:.9rem}
"""
VIOLATIONS_SHOWN, EXPLAINED_SHOWN = 25, 10


def _records(records: list[dict[str, Any]]) -> str:
    return escape("\n".join(json.dumps(record, separators=(",", ":")) for record in records))


def _finding(finding: dict[str, Any]) -> str:
    excerpt, causes = finding.get("excerpt") or [], finding.get("explained_by") or []
    explained = ""
    if causes:
        cut = showing(len(causes), finding.get("explained_by_count", len(causes)))
        explained = f"<p class='note'>Explained by{cut}:</p><pre>{_records(causes)}</pre>"
    cut = showing(len(excerpt), finding.get("excerpt_count", len(excerpt)))
    return (f"<details><summary>{escape(finding['message'])}</summary>"
            f"<p class='note'>{escape(finding['invariant'])}; the history that shows it{cut}:</p>"
            f"<pre>{_records(excerpt) or '(no records)'}</pre>{explained}</details>")


def _findings(checks: list[dict[str, Any]]) -> str:
    parts = []
    for check in checks:
        title, violations = escape(check["title"]), check.get("violations") or []
        if violations:
            parts.append(f"<h3>{title}: {len(violations)} violation(s){showing(VIOLATIONS_SHOWN, len(violations))}"
                         "</h3>")
            parts += [_finding(f) for f in violations[:VIOLATIONS_SHOWN]]
        explained = check.get("explained") or []
        if explained:
            total = check.get("explained_count", len(explained))
            parts.append(f"<h3>{title}: {total} explained by injected faults or the local stack's lag"
                         f"{showing(min(EXPLAINED_SHOWN, len(explained)), total)}</h3>")
            parts += [_finding(f) for f in explained[:EXPLAINED_SHOWN]]
    return "".join(parts) or "<p>No violation, and no loss to explain.</p>"


def _check_rows(checks: list[dict[str, Any]]) -> str:
    return "".join(
        f"<tr><td>{escape(c['title'])}</td><td class='{c['status'].replace(' ', '-')}'>{escape(c['status'])}</td>"
        f"<td>{c.get('checked', 0)}</td><td>{len(c.get('violations') or [])}</td>"
        f"<td>{c.get('explained_count', 0)}</td><td>{escape(check_note(c))}</td></tr>" for c in checks)


def _stats_table(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "<p class='note'>No Locust statistics in this run folder.</p>"
    rows = "".join(
        f"<tr><td>{escape(str(e['type']))}</td><td>{escape(str(e['name']))}</td><td>{e['requests']}</td>"
        f"<td>{e['failures']}</td><td>{_ms(e['median_ms'])}</td><td>{_ms(e['p95_ms'])}</td><td>{_ms(e['p99_ms'])}"
        f"</td><td>{_ms(e['max_ms'])}</td><td>{e['rps']:.1f}</td></tr>" for e in stats["entries"])
    return ("<table><tr><th>type</th><th>name</th><th>requests</th><th>failures</th><th>median ms</th>"
            f"<th>p95 ms</th><th>p99 ms</th><th>max ms</th><th>req/s</th></tr>{rows}</table>")


def _ms(value: Any) -> str:
    return "" if value is None else f"{float(value):.0f}"


def _process_charts(results: dict[str, Any], x_max: float, bands: list, ticks: list) -> str:
    """Memory and open descriptors of the stack, its store and the proxy over the run (resources.jsonl), with the
    same fault marks, and a line per role; or why they were not sampled."""
    processes = results.get("processes")
    if not processes:
        return ""
    lines = "".join(f"<li>{escape(line)}</li>" for line in process_lines(results))
    roles = processes.get("roles") or {}
    if not roles:
        return f"<ul class='note'>{lines}</ul>"
    memory = line_chart("Memory (RSS) of the stack, its store and the proxy", "MB",
                        {role: list(zip(s["t"], s["rss_mb"], strict=True)) for role, s in roles.items()},
                        x_max, bands, ticks)
    files = line_chart("Open file descriptors of the stack, its store and the proxy", "fds",
                       {role: list(zip(s["t"], s["fds"], strict=True)) for role, s in roles.items()},
                       x_max, bands, ticks)
    return f"{memory}\n{files}\n<ul class='note'>{lines}</ul>"


def _charts(results: dict[str, Any]) -> str:
    """Latency, then memory and open descriptors of the target's processes, then throughput, per
    whole second (plotted at the middle of each second; resource samples where they were taken),
    with the faults as bands (windows, or several faults in a row) and ticks (a single instant fault)."""
    series, faults = results["series"], results.get("faults") or []
    if faults:
        note = (f"Red: the {len(faults)} stretch(es) of injected faults; hover over one for the rule and count.")
    elif (results.get("counts") or {}).get("faults"):
        note = "Faults were injected only outside the plotted time (before the first or after the last whole second)."
    else:
        note = "No fault was injected in this run."
    if not series["t"]:
        return f"<p class='note'>The run lasted less than a whole second: nothing to plot. {note}</p>"
    x_max = series["t"][-1] + 1
    windows = [f for f in faults if f["end_s"] - f["start_s"] >= 0.5 or f["count"] > 1]
    bands = [(f["start_s"], max(f["end_s"], f["start_s"] + 0.5),
              f"{f['rule']}: {f['fault']} x{f['count']}, {f['start_s']:.1f}-{f['end_s']:.1f} s") for f in windows]
    ticks = [(f["start_s"], f"{f['rule']}: {f['fault']} at {f['start_s']:.1f} s") for f in faults if f not in windows]
    middles = [t + 0.5 for t in series["t"]]
    latency = line_chart("Message fan-out latency (send -> receipt)", "ms",
                         {name: list(zip(middles, series[key], strict=True))
                          for name, key in (("p50", "p50_ms"), ("p95", "p95_ms"), ("p99", "p99_ms"))},
                         x_max, bands, ticks)
    throughput = line_chart("Deliveries per second", "deliveries/s",
                            {"deliveries": list(zip(middles, series["deliveries_per_s"], strict=True))},
                            x_max, bands, ticks)
    return f"<p class='note'>{note}</p>\n{latency}\n{_process_charts(results, x_max, bands, ticks)}\n{throughput}"


def render_html(results: dict[str, Any]) -> str:
    """The page for results.json's shape (harness/report/results.py); older files without
    ``verdict_reason`` or ``resources`` render too."""
    verdict, reason = verdict_line(results)
    counts = results.get("counts") or {}
    reason_html = f" &nbsp; <span class='reason'>{escape(reason)}</span>" if reason else ""
    warning = cpu_warning(results)
    warning_html = f"<p class='warning'><strong>Warning.</strong> {escape(warning)}</p>" if warning else ""
    partial = ("<p class='warning'>Partial: the run was interrupted; this covers what it saw.</p>"
               if results.get("partial") else "")
    rules = f", rule set <code>{escape(str(results['rules']))}</code>" if results.get("rules") else ""
    behind = escape(behind_text(counts))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{verdict}: relay reliability report</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>
<body>
<h1>Relay reliability report</h1>
<p><span class="verdict {escape(verdict.lower())}">{escape(verdict)}</span>{reason_html}</p>
<p>Reliability score <strong>{score_text(results)}</strong></p>
{partial}
{warning_html}
<p>Seed <code>{escape(str(results.get('seed')))}</code>, chaos profile
<code>{escape(str(results.get('profile') or 'none'))}</code>{rules};
{counts.get('operations', 0)} history records from {counts.get('clients', 0)} clients;
{counts.get('faults', 0)} faults injected; {counts.get('explained', 0)} losses explained by them{behind}.</p>
<p>Replay: <code>{escape(results.get('replay', ''))}</code></p>
<h2>Checks</h2>
<table><tr><th>check</th><th>status</th><th>checked</th><th>violations</th><th>explained</th><th>notes</th></tr>
{_check_rows(results.get('checks', []))}</table>
<h2>Over time</h2>
{_charts(results)}
<h2>Findings</h2>
{_findings(results.get('checks', []))}
<h2>Locust statistics</h2>
{_stats_table(results.get('stats'))}
</body></html>
"""

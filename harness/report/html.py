"""``report.html``: one self-contained page (no scripts, no network): verdict, score, findings with
the history that shows them, latency and throughput over time with the faults shaded, Locust's
table, the seed and the command that replays the run."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from .charts import line_chart

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:960px;color:#222}
h1{margin-bottom:.2rem} .verdict{font-size:1.4rem;font-weight:700;padding:.3rem .8rem;border-radius:4px}
.pass{background:#d8f3dc;color:#1b4332} .fail{background:#ffd6d6;color:#8b0000} .skipped{color:#777}
table{border-collapse:collapse;width:100%;margin:1rem 0} th,td{border-bottom:1px solid #ddd;padding:.35rem;
text-align:left;font-size:.9rem} pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;font-size:.78rem}
.chart{width:100%;height:auto;margin:.5rem 0} .chart-title{font-size:14px;font-weight:600}
.axis{font-size:11px;fill:#555} .grid{stroke:#eee} .fault-band{fill:#d62728;opacity:.15}
.fault-tick{stroke:#d62728;stroke-width:2;opacity:.6} code{background:#f0f0f0;padding:0 .2rem}
details{margin:.4rem 0} .note{color:#555;font-size:.9rem}
"""


def _finding(finding: dict[str, Any]) -> str:
    excerpt = "\n".join(json.dumps(record, separators=(",", ":")) for record in finding["excerpt"])
    explained = ""
    if finding.get("explained_by"):
        faults = "\n".join(json.dumps(f, separators=(",", ":")) for f in finding["explained_by"])
        explained = f"<p class='note'>Explained by:</p><pre>{escape(faults)}</pre>"
    return (f"<details><summary>{escape(finding['message'])}</summary>"
            f"<p class='note'>{escape(finding['invariant'])}; the history that shows it:</p>"
            f"<pre>{escape(excerpt) or '(no records)'}</pre>{explained}</details>")


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


def render_html(results: dict[str, Any]) -> str:
    verdict = results["verdict"]
    score = "n/a" if results["score"] is None else f"{results['score']:.1f}%"
    series = results["series"]
    x_max = series["t"][-1] if series["t"] else 1.0
    bands = [(f["start_s"], max(f["end_s"], f["start_s"] + 0.5), f"{f['rule']}: {f['fault']} x{f['count']}")
             for f in results["faults"] if f["end_s"] - f["start_s"] >= 0.5 or f["count"] > 1]
    ticks = [(f["start_s"], f"{f['rule']}: {f['fault']}") for f in results["faults"]
             if not (f["end_s"] - f["start_s"] >= 0.5 or f["count"] > 1)]
    latency = line_chart("Message fan-out latency (send -> receipt)", "ms",
                         {name: list(zip(series["t"], series[key], strict=True))
                          for name, key in (("p50", "p50_ms"), ("p95", "p95_ms"), ("p99", "p99_ms"))},
                         x_max, bands, ticks)
    throughput = line_chart("Deliveries per second", "deliveries/s",
                            {"deliveries": list(zip(series["t"], series["deliveries_per_s"], strict=True))},
                            x_max, bands, ticks)
    rows = "".join(f"<tr><td>{escape(c['title'])}</td><td class='{c['status']}'>{c['status']}</td>"
                   f"<td>{c['checked']}</td><td>{len(c['violations'])}</td><td>{c['explained_count']}</td>"
                   f"<td>{escape(c['skipped'] or '; '.join(c['notes']))}</td></tr>" for c in results["checks"])
    findings = []
    for check in results["checks"]:
        if check["violations"]:
            findings.append(f"<h3>{escape(check['title'])}: {len(check['violations'])} violation(s)</h3>")
            findings += [_finding(f) for f in check["violations"][:25]]
        if check["explained"]:
            findings.append(f"<h3>{escape(check['title'])}: {check['explained_count']} explained by injected "
                            "faults</h3>")
            findings += [_finding(f) for f in check["explained"][:10]]
    counts = results["counts"]
    partial = "<p class='verdict fail'>Partial: the run was interrupted; this covers what it saw.</p>" \
        if results["partial"] else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Relay reliability report</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>
<body>
<h1>Relay reliability report</h1>
<p><span class="verdict {verdict}">{verdict.upper()}</span> &nbsp; reliability score <strong>{score}</strong></p>
{partial}
<p>Seed <code>{results['seed']}</code>, chaos profile <code>{escape(str(results['profile'] or 'none'))}</code>;
{counts['operations']} history records from {counts['clients']} clients; {counts['faults']} faults injected;
{counts['explained']} losses explained by them.</p>
<p>Replay: <code>{escape(results['replay'])}</code></p>
<h2>Checks</h2>
<table><tr><th>check</th><th>status</th><th>checked</th><th>violations</th><th>explained</th><th>notes</th></tr>
{rows}</table>
<h2>Over time</h2>
<p class="note">Shaded: injected faults (hover for the rule).</p>
{latency}
{throughput}
<h2>Findings</h2>
{''.join(findings) or '<p>No violation, and no loss to explain.</p>'}
<h2>Locust statistics</h2>
{_stats_table(results['stats'])}
</body></html>
"""

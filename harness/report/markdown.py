"""``summary.md``: short enough for a CI job summary."""

from __future__ import annotations

from typing import Any


def render_summary(results: dict[str, Any]) -> str:
    verdict = "PASS" if results["verdict"] == "pass" else "FAIL"
    partial = " (partial: the run was interrupted)" if results["partial"] else ""
    score = "n/a" if results["score"] is None else f"{results['score']:.1f}%"
    counts = results["counts"]
    lines = [f"## Relay reliability: {verdict}{partial}", "",
             f"Score **{score}** · seed `{results['seed']}` · profile `{results['profile'] or 'none'}` · "
             f"{counts['operations']} history records, {counts['clients']} clients, {counts['faults']} faults "
             f"injected, {counts['explained']} losses explained by them", "",
             "| check | status | checked | violations |", "|---|---|---|---|"]
    for check in results["checks"]:
        status = check["status"] if check["status"] != "skipped" else "skipped"
        lines.append(f"| {check['title']} | {status} | {check['checked']} | {len(check['violations'])} |")
    shown = [(c["title"], v) for c in results["checks"] for v in c["violations"]][:10]
    if shown:
        lines += ["", "Violations:"]
        lines += [f"- **{title}**: {finding['message']}" for title, finding in shown]
    lines += ["", f"Replay: `{results['replay']}`", ""]
    return "\n".join(lines)

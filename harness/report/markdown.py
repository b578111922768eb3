"""``summary.md``: short enough for a CI job summary. Also the phrases every writer shares (verdict
line, CPU warning, "showing N of M"), so the HTML, Markdown and JUnit reports say the same thing.

The writers read results.json's shape (harness/report/results.py) with defaults, so a results.json
written before ``verdict_reason``, ``resources`` or the ``not exercised`` / ``error`` statuses
existed still renders.
"""

from __future__ import annotations

from typing import Any

SUMMARY_VIOLATIONS = 10


def verdict_line(results: dict[str, Any]) -> tuple[str, str]:
    """(``PASS`` | ``FAIL`` | ``INCONCLUSIVE``, the one-line reason or "")."""
    return str(results.get("verdict", "")).upper(), str(results.get("verdict_reason") or "")


def showing(shown: int, total: int) -> str:
    """" (showing 10 of 101)" when a list is cut, else ""."""
    return f" (showing {shown} of {total})" if total > shown else ""


def score_text(results: dict[str, Any]) -> str:
    return "n/a" if results.get("score") is None else f"{results['score']:.1f}%"


def cpu_warning(results: dict[str, Any]) -> str:
    """One line when the load generator or the stack ran short of CPU (latencies are then partly the
    harness's own), from results.json ``resources``, and when the local stack fell behind its load
    (``lag``); "" when none of these happened or nothing was measured."""
    resources = results.get("resources") or {}
    short = [str(part) for part in resources.get("short_of_cpu") or []]
    lag = results.get("lag") or {}
    lines = []
    if short:
        peaks = []
        for part in short:
            measured = resources.get(part.replace(" ", "_")) or {}
            if part == "machine":
                peaks.append(f"machine (all {measured.get('cores')} cores at least 95% busy for "
                             f"{100 * float(measured.get('saturated_share') or 0):.0f}% of the run)")
                continue
            peak = measured.get("peak_cpu_percent")
            peaks.append(part if peak is None else f"{part} (peak {float(peak):.0f}% CPU)")
        lines.append(f"Short of CPU: the {' and the '.join(peaks)}. Latencies and throughput in this run are partly "
                     "the harness's own waiting, not only the relay's; rerun with fewer users or on a quieter "
                     "machine.")
    if lag.get("spans"):
        lines.append(f"The local stack fell behind its load: {lag['invocations']} invocation(s) waited up to "
                     f"{lag['max_queued_ms'] / 1000:.1f} s for a free function instance (Lambda would have started "
                     f"another), over {lag['seconds']:.0f} s in {lag['spans']} span(s); what only that explains is "
                     "not judged.")
    return " ".join(lines)


def behind_text(counts: dict[str, Any]) -> str:
    """``, N not judged (the local stack fell behind)`` when there are such findings, else ""."""
    behind = counts.get("behind") or 0
    return f", {behind} not judged (the local stack fell behind)" if behind else ""


def process_lines(results: dict[str, Any]) -> list[str]:
    """One line per sampled role (RSS and open descriptors at the start, end and peak of the load),
    or one line saying why nothing was sampled; none for a results.json from before sampling."""
    processes = results.get("processes")
    if not processes:
        return []
    if not processes.get("summary"):
        return [f"Processes not sampled: {processes.get('note') or 'no sample'}."]
    return [f"{role}: RSS {s['rss_start_mb']:.0f} MB at the start, {s['rss_end_mb']:.0f} MB at the end, peak "
            f"{s['rss_peak_mb']:.0f} MB; open fds {s['fds_start']} at the start, {s['fds_end']} at the end, peak "
            f"{s['fds_peak']} ({s['samples']} samples)" for role, s in processes["summary"].items()]


def check_note(check: dict[str, Any]) -> str:
    """What the status column alone does not say: the exception, why it was skipped, its notes."""
    if check.get("status") == "error":
        return f"the checker failed: {check.get('error') or 'no detail'}"
    if check.get("status") == "not exercised":
        return "checked nothing" + "".join(f"; {note}" for note in check.get("notes") or [])
    return check.get("skipped") or "; ".join(check.get("notes") or [])


def render_summary(results: dict[str, Any]) -> str:
    verdict, reason = verdict_line(results)
    partial = " (partial: the run was interrupted)" if results.get("partial") else ""
    counts = results.get("counts") or {}
    lines = [f"## Relay reliability: {verdict}{partial}", ""]
    if reason:
        lines += [f"**{verdict}:** {reason}", ""]
    if warning := cpu_warning(results):
        lines += [f"> **Warning.** {warning}", ""]
    lines += [f"Score **{score_text(results)}** · seed `{results.get('seed')}` · profile "
              f"`{results.get('profile') or 'none'}` · {counts.get('operations', 0)} history records, "
              f"{counts.get('clients', 0)} clients, {counts.get('faults', 0)} faults injected, "
              f"{counts.get('explained', 0)} losses explained by them{behind_text(counts)}", "",
              "| check | status | checked | violations | notes |", "|---|---|---|---|---|"]
    for check in results.get("checks", []):
        note = check_note(check).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {check['title']} | {check['status']} | {check.get('checked', 0)} | "
                     f"{len(check.get('violations') or [])} | {note} |")
    if processes := process_lines(results):
        lines += ["", "Processes of the target (resources.jsonl):"] + [f"- {line}" for line in processes]
    found = [(c["title"], v) for c in results.get("checks", []) for v in c.get("violations") or []]
    if found:
        shown = found[:SUMMARY_VIOLATIONS]
        lines += ["", f"Violations{showing(len(shown), len(found))}:"]
        lines += [f"- **{title}**: {finding['message']}" for title, finding in shown]
    lines += ["", f"Replay: `{results.get('replay', '')}`", ""]
    return "\n".join(lines)

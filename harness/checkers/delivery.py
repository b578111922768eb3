"""Delivery: no duplicate delivery to a member, no phantom, per-sender order kept at each receiver,
and every send reaches every member connected throughout; each loss is attributed to an injected
fault on that connection in that window, or reported as unexplained (a relay bug)."""

from __future__ import annotations

from collections import Counter, defaultdict

from .model import GRACE_S, CheckResult, Finding, Run, excerpt

_ORDER_FAULTS = {"reorder", "delay", "latency", "pause", "duplicate", "slicer", "bandwidth"}


def _sequence(pid: str) -> tuple[str, int] | None:
    sender, _, number = pid.rpartition("-")
    return (sender, int(number)) if number.isdigit() else None


def check(run: Run) -> CheckResult:
    result = CheckResult("delivery", "Message delivery", weight=3)
    invokes = {r["pid"]: r for r in run.history if r["op"] == "send" and r["phase"] == "invoke" and r.get("pid")}
    sent_ok = [r for r in run.history if r["op"] == "send" and r["phase"] == "ok" and r.get("pid")]
    receipts = [r for r in run.history if r["op"] == "recv" and r.get("pid")]
    result.checked = len(sent_ok)

    for record in receipts:
        if record["pid"] not in invokes:
            result.violations.append(Finding("no phantom delivery", f"{record['client']} received {record['pid']}, "
                                             "which nobody sent", excerpt([record])))

    received_by: dict[str, list[dict]] = defaultdict(list)
    for record in receipts:
        received_by[record["client"]].append(record)
    for client, records in received_by.items():
        counts = Counter(r["pid"] for r in records if r.get("via") != "HEARTBEAT")
        for pid, count in counts.items():
            if count < 2:
                continue
            copies = [r for r in records if r["pid"] == pid]
            faults = [f for f in run.faults_near(client, copies[0]["t"], copies[-1]["t"]) if f["fault"] == "duplicate"]
            finding = Finding("no duplicate delivery", f"{client} received {pid} {count} times", excerpt(copies),
                              faults)
            (result.explained if faults else result.violations).append(finding)
        _order(run, client, records, result)

    _losses(run, sent_ok, invokes, received_by, result)
    return result


def _order(run: Run, client: str, records: list[dict], result: CheckResult) -> None:
    last: dict[str, tuple[int, dict]] = {}
    seen: set[str] = set()
    for record in records:
        if record.get("via") == "HEARTBEAT" or record["pid"] in seen:
            continue
        seen.add(record["pid"])
        parsed = _sequence(record["pid"])
        if parsed is None:
            continue
        sender, number = parsed
        if sender in last and number < last[sender][0]:
            earlier = last[sender][1]
            faults = [f for f in run.faults_near(client, earlier["t"], record["t"]) + run.faults_near(
                sender, earlier["t"] - 1000 * GRACE_S, record["t"]) if f["fault"] in _ORDER_FAULTS]
            finding = Finding("per-sender order kept", f"{client} received {record['pid']} after {earlier['pid']}",
                              excerpt([earlier, record]), faults)
            (result.explained if faults else result.violations).append(finding)
        last[sender] = (max(number, last.get(sender, (number, record))[0]), record)


def _members_over_time(run: Run) -> dict[str, list[tuple[str, float, float]]]:
    """session -> (client, in the session from t, until t)."""
    spans: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for client, records in run.by_client.items():
        current: tuple[str, float] | None = None
        for record in records:
            message = record.get("msg") or {}
            kind = message.get("type") if record["op"] == "recv" else None
            if kind == "SESSION_CONNECT":
                if current and current[0] != message.get("sessionId"):
                    spans[current[0]].append((client, current[1], record["t"]))
                    current = None
                if current is None:
                    current = (message.get("sessionId"), record["t"])
            elif current and (kind in ("SESSION_END", "CONNECTION_OVERWRITE", "INVALID_CONNECTION")):
                spans[current[0]].append((client, current[1], record["t"]))
                current = None
        if current:
            spans[current[0]].append((client, current[1], float("inf")))
    return spans


def _losses(run: Run, sent_ok: list[dict], invokes: dict[str, dict], received_by: dict[str, list[dict]],
            result: CheckResult) -> None:
    members = _members_over_time(run)
    got = {client: {r["pid"] for r in records} for client, records in received_by.items()}
    grace = GRACE_S * 1000
    for send in sent_ok:
        session = send.get("session")
        window_end = send["t"] + grace
        if not session or window_end > run.end_t:
            continue
        sender_in = [s for s in members.get(session, []) if s[0] == send["client"] and s[1] <= send["t"] <= s[2]]
        if not sender_in:
            continue
        for client, joined, left in members.get(session, []):
            if not (joined <= send["t"] and left >= window_end):
                continue
            if not run.connected_throughout(client, send["t"], window_end):
                continue
            if send["pid"] in got.get(client, set()):
                continue
            faults = run.faults_near(client, send["t"], window_end) + run.faults_near(send["client"], send["t"],
                                                                                      window_end)
            pinned = bool((invokes[send["pid"]].get("msg") or {}).get("pinned"))
            message = f"{send['pid']} from {send['client']} never reached {client}"
            if faults:
                message += f" (explained by {len(faults)} injected fault(s)"
                message += "; pinned, so HEARTBEAT could bring it back)" if pinned else "; not recoverable)"
            nearby = [r for r in run.by_client.get(client, []) if send["t"] - 500 <= r["t"] <= window_end][:8]
            shown = [invokes[send["pid"]], send, *nearby]
            finding = Finding("every send reaches every member connected throughout", message, excerpt(shown),
                              faults)
            (result.explained if faults else result.violations).append(finding)

"""Pinned convergence: once faults that could keep it away have ended, every connected member's
HEARTBEAT brings back the session's latest pinned message. "Faults that could keep it away" are
those on that member's own sockets, proxy-wide ones and stack-side ones: under a fault that goes on
all run (a lossy network), members whose last hit is early are still checked.

``time`` may be a number or a numeric string (the original Simple Relay sends ``pinnedMessage.time`` as a string)."""

from __future__ import annotations

from collections import defaultdict

from .model import GRACE_S, CheckResult, Finding, Run, excerpt, fault_span, number


def _time(message: dict) -> float:
    return number(message.get("time")) or 0.0


def check(run: Run) -> CheckResult:
    result = CheckResult("pinned", "Pinned message convergence", weight=1)
    latest: dict[str, dict] = {}
    known: dict[tuple[str, str], float] = defaultdict(float)
    for record in run.received():
        message = record["msg"]
        session = record.get("session")
        if message.get("type") == "MESSAGE" and message.get("pinned") and session:
            if _time(message) > _time(latest.get(session, {}).get("msg", {})):
                latest[session] = record
            known[(record["client"], session)] = max(known[(record["client"], session)], _time(message))
        elif message.get("type") == "SESSION_CONNECT" and isinstance(message.get("pinnedMessage"), dict):
            key = (record["client"], message.get("sessionId"))
            known[key] = max(known[key], _time(message["pinnedMessage"]))
    grace = GRACE_S * 1000
    members: dict[str, set[str]] = defaultdict(set)
    for record in run.received("SESSION_CONNECT"):
        members[record["msg"].get("sessionId")].add(record["client"])
    answers: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for record in run.history:
        if record["op"] == "heartbeat" and record["phase"] == "ok" and record.get("session") in latest:
            answers[(record["client"], record["session"])].append(record)
    last_fault = _last_fault_by_client(run)
    for session, pinned in latest.items():
        for client in members.get(session, ()):
            settled_from = max(pinned["t"], last_fault.get(client, 0), last_fault.get(None, 0)) + grace
            answered = [r for r in answers.get((client, session), []) if r["t"] >= settled_from]
            if not answered:
                continue
            result.checked += 1
            if known[(client, session)] < _time(pinned["msg"]):
                result.violations.append(Finding(
                    "pinned message converges", f"{client} heartbeated in session {session} after faults ended but "
                    f"never got its latest pinned message (time {pinned['msg'].get('time')})",
                    excerpt([pinned, answered[-1]])))
    if not latest:
        result.notes.append("no pinned message was sent in this run")
    elif not result.checked:
        result.notes.append(f"{len(latest)} session(s) had pinned messages, but no member heartbeated in them "
                            f"{GRACE_S:.0f} s after the last pin and the last fault")
    return result


def _last_fault_by_client(run: Run) -> dict[str | None, float]:
    """When the last fault that could touch each client's traffic stopped acting (ms); key None: the
    proxy-wide and stack-side faults, which touch everyone."""
    ends: dict[str | None, float] = defaultdict(float)
    for (client, _), faults in run.faults_by_socket.items():
        for fault in faults:
            ends[client] = max(ends[client], fault["t"] + 1000 * fault_span(fault))
    for fault in run.proxy_wide + run.stack_faults:
        ends[None] = max(ends[None], fault["t"] + 1000 * fault_span(fault))
    return ends

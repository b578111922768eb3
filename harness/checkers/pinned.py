"""Pinned convergence: after faults end, every connected member's HEARTBEAT brings back the
session's latest pinned message."""

from __future__ import annotations

from collections import defaultdict

from .model import GRACE_S, CheckResult, Finding, Run, excerpt


def check(run: Run) -> CheckResult:
    result = CheckResult("pinned", "Pinned message convergence", weight=1)
    latest: dict[str, dict] = {}
    known: dict[tuple[str, str], int] = defaultdict(int)
    for record in run.received():
        message = record["msg"]
        session = record.get("session")
        if message.get("type") == "MESSAGE" and message.get("pinned") and session:
            if message.get("time", 0) > latest.get(session, {}).get("msg", {}).get("time", 0):
                latest[session] = record
            known[(record["client"], session)] = max(known[(record["client"], session)], message.get("time", 0))
        elif message.get("type") == "SESSION_CONNECT" and message.get("pinnedMessage"):
            key = (record["client"], message.get("sessionId"))
            known[key] = max(known[key], message["pinnedMessage"].get("time", 0))
    grace = GRACE_S * 1000
    for session, pinned in latest.items():
        settled_from = max(pinned["t"], run.last_fault_t) + grace
        members = {r["client"] for r in run.received("SESSION_CONNECT") if r["msg"].get("sessionId") == session}
        for client in members:
            answered = [r for r in run.by_client.get(client, []) if r["op"] == "heartbeat" and r["phase"] == "ok"
                        and r["t"] >= settled_from and r.get("session") == session]
            if not answered:
                continue
            result.checked += 1
            if known[(client, session)] < pinned["msg"]["time"]:
                result.violations.append(Finding(
                    "pinned message converges", f"{client} heartbeated in session {session} after faults ended but "
                    f"never got its latest pinned message (time {pinned['msg']['time']})",
                    excerpt([pinned, answered[-1]])))
    if not latest:
        result.notes.append("no pinned message was sent in this run")
    return result

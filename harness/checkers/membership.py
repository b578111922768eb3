"""Membership safety: no over-full session; members agree on the session and on slots; no member
in two sessions; a private session holds only those who joined it."""

from __future__ import annotations

from collections import defaultdict

from .model import CheckResult, Finding, Run, excerpt


def _who(record: dict) -> str:
    return record.get("member") or f"client {record['client']}"


def check(run: Run) -> CheckResult:
    result = CheckResult("membership", "Membership safety", weight=3)
    starts = run.received("SESSION_CONNECT")
    by_session: dict[str, list[dict]] = defaultdict(list)
    for record in starts:
        by_session[record["msg"].get("sessionId")].append(record)
    for session_id, records in by_session.items():
        result.checked += 1
        sizes = {len(r["msg"].get("memberPresence") or []) for r in records}
        types = {r["msg"].get("sessionType") for r in records}
        if len(sizes) > 1 or len(types) > 1:
            result.violations.append(Finding(
                "members agree on the session", f"session {session_id}: members were told different shapes "
                f"(sizes {sorted(sizes)}, types {sorted(map(str, types))})", excerpt(records)))
        size = max(sizes)
        slots: dict[int, set[str]] = defaultdict(set)
        for record in records:
            slots[record["msg"].get("memberNum", -1)].add(_who(record))
        for num, members in sorted(slots.items()):
            if not 0 <= num < size:
                result.violations.append(Finding("slots are 0..N-1", f"session {session_id}: slot {num} outside "
                                                 f"0..{size - 1}", excerpt(records)))
            if len(members) > 1:
                held = [r for r in records if r["msg"].get("memberNum") == num]
                result.violations.append(Finding(
                    "one member per slot",
                    f"session {session_id}: slot {num} held by {len(members)} members: {', '.join(sorted(members))}",
                    excerpt(held)))
        members = {_who(r) for r in records}
        if len(members) > size:
            result.violations.append(Finding("no over-full session", f"session {session_id} held {len(members)} "
                                             f"members, its target is {size}", excerpt(records)))

    sessions_of: dict[str, set[str]] = defaultdict(set)
    for record in starts:
        if record.get("member"):
            sessions_of[record["member"]].add(record["msg"].get("sessionId"))
    for member, sessions in sessions_of.items():
        if len(sessions) > 1:
            shown = [r for r in starts if r.get("member") == member]
            result.violations.append(Finding("no member in two sessions", f"member {member} was put in "
                                             f"{len(sessions)} sessions", excerpt(shown)))

    _private_sessions(run, by_session, result)
    return result


def _private_sessions(run: Run, by_session: dict[str, list[dict]], result: CheckResult) -> None:
    hosts: dict[str, set[str]] = defaultdict(set)
    for record in run.received("PRIVATE_SESSION_PENDING"):
        hosts[record["msg"].get("sessionId")].add(record["client"])
    invited: dict[str, set[str]] = defaultdict(set)
    for record in run.history:
        if record["op"] == "connect" and record["phase"] == "invoke" and (record.get("msg") or {}).get("sessionId"):
            invited[record["msg"]["sessionId"]].add(record["client"])
    for session_id, host_clients in hosts.items():
        allowed_clients = host_clients | invited[session_id]
        allowed_members = {r.get("member") for r in run.history if r["client"] in allowed_clients and r.get("member")}
        for record in by_session.get(session_id, []):
            if record["client"] in allowed_clients or record.get("member") in allowed_members:
                continue
            result.violations.append(Finding("a private session holds only those who joined it",
                                             f"private session {session_id} started with {_who(record)}, who never "
                                             "asked to join it", excerpt([record])))

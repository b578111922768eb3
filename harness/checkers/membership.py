"""Membership safety: no over-full session; members agree on the session and on slots; no member
in two sessions; a private session holds only those who joined it; a MESSAGE names a slot of its
session (protocol: ``memberNum`` is the sender's slot, 0..N-1)."""

from __future__ import annotations

from collections import defaultdict

from .model import CheckResult, Finding, Run, excerpt, slot


def _identities(run: Run) -> dict[tuple[str, object], str]:
    """(client, session attempt) -> its member id, from any record of that attempt: a record made
    before the client learnt its id (its CONNECTION frame was lost) still speaks for that member."""
    members: dict[tuple[str, object], str] = {}
    for record in run.history:
        if record.get("member"):
            members.setdefault((record["client"], record.get("attempt")), record["member"])
    return members


def _who(record: dict, identities: dict[tuple[str, object], str]) -> str:
    key = (record["client"], record.get("attempt"))
    return record.get("member") or identities.get(key) or f"client {key[0]} attempt {key[1] or '?'}"


def check(run: Run) -> CheckResult:
    result = CheckResult("membership", "Membership safety", weight=3)
    identities = _identities(run)
    starts = run.received("SESSION_CONNECT")
    by_session: dict[str, list[dict]] = defaultdict(list)
    for record in starts:
        by_session[record["msg"].get("sessionId")].append(record)
    sizes_of: dict[str, int] = {}
    for session_id, records in by_session.items():
        result.checked += 1
        sizes = {len(r["msg"].get("memberPresence") or []) for r in records}
        types = {r["msg"].get("sessionType") for r in records}
        if len(sizes) > 1 or len(types) > 1:
            result.violations.append(Finding(
                "members agree on the session", f"session {session_id}: members were told different shapes "
                f"(sizes {sorted(sizes)}, types {sorted(map(str, types))})", excerpt(records)))
        size = sizes_of[session_id] = max(sizes)
        slots: dict[int | None, set[str]] = defaultdict(set)
        for record in records:
            slots[slot(record["msg"].get("memberNum"))].add(_who(record, identities))
        for num, members in sorted(slots.items(), key=lambda item: (item[0] is None, item[0] or 0)):
            if num is None or not 0 <= num < size:
                result.violations.append(Finding("slots are 0..N-1", f"session {session_id}: slot {num} outside "
                                                 f"0..{size - 1}", excerpt(records)))
            if len(members) > 1:
                held = [r for r in records if slot(r["msg"].get("memberNum")) == num]
                result.violations.append(Finding(
                    "one member per slot",
                    f"session {session_id}: slot {num} held by {len(members)} members: {', '.join(sorted(members))}",
                    excerpt(held)))
        members = {_who(r, identities) for r in records}
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

    _private_sessions(run, by_session, result, identities)
    _message_slots(run, sizes_of, result)
    return result


def _message_slots(run: Run, sizes_of: dict[str, int], result: CheckResult) -> None:
    """Every relayed MESSAGE names the sender's slot: a whole number in 0..N-1 of its session."""
    wrong: dict[str, list[dict]] = defaultdict(list)
    for record in run.received("MESSAGE"):
        size = sizes_of.get(record.get("session"))
        if size is None:
            continue
        result.checked += 1
        num = slot(record["msg"].get("memberNum"))
        if num is None or not 0 <= num < size:
            wrong[record["session"]].append(record)
    for session_id, records in wrong.items():
        nums = sorted({repr(r["msg"].get("memberNum")) for r in records})
        result.violations.append(Finding("a MESSAGE names a slot of its session",
                                         f"session {session_id}: {len(records)} MESSAGE(s) with memberNum "
                                         f"{', '.join(nums)}, outside 0..{sizes_of[session_id] - 1}", excerpt(records)))


def _private_sessions(run: Run, by_session: dict[str, list[dict]], result: CheckResult,
                      identities: dict[tuple[str, object], str]) -> None:
    hosts: dict[str, set[str]] = defaultdict(set)
    for record in run.received("PRIVATE_SESSION_PENDING"):
        hosts[record["msg"].get("sessionId")].add(record["client"])
    invited: dict[str, set[str]] = defaultdict(set)
    for record in run.history:
        if record["op"] == "connect" and record["phase"] == "invoke" and (record.get("msg") or {}).get("sessionId"):
            invited[record["msg"]["sessionId"]].add(record["client"])
    members_of: dict[str, set[str]] = defaultdict(set)
    for record in run.history:
        if record.get("member"):
            members_of[record["client"]].add(record["member"])
    for session_id, host_clients in hosts.items():
        allowed_clients = host_clients | invited[session_id]
        allowed_members = set().union(*(members_of[client] for client in allowed_clients))
        for record in by_session.get(session_id, []):
            if record["client"] in allowed_clients or record.get("member") in allowed_members:
                continue
            result.violations.append(Finding("a private session holds only those who joined it",
                                             f"private session {session_id} started with "
                                             f"{_who(record, identities)}, who never "
                                             "asked to join it", excerpt([record])))

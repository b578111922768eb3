"""Matchmaking liveness: two players waiting for the same public (type, size) at the same time, for
longer than a bound after the last fault ends, means the relay failed to match them. (Refusals and
failed handshakes are judged by the client-visible errors check.)"""

from __future__ import annotations

from collections import defaultdict

from .model import CheckResult, Finding, Run, excerpt

BOUND_S = 20.0


def _waits(run: Run) -> dict[tuple[str, str], list[tuple[str, float, float, dict]]]:
    """(sessionType, targetNumMembers) -> (client, waiting from t, until t, connect record)."""
    waits: dict[tuple[str, str], list[tuple[str, float, float, dict]]] = defaultdict(list)
    for client, records in run.by_client.items():
        pending: tuple[tuple[str, str], float, dict] | None = None
        for record in records:
            query = record.get("msg") or {}
            if record["op"] == "connect" and record["phase"] == "invoke":
                public = "targetNumMembers" in query and query.get("private") != "true"
                pending = ((query.get("sessionType", ""), query.get("targetNumMembers", "")), 0.0, record) \
                    if public else None
            elif record["op"] == "connect" and record["phase"] == "ok" and pending:
                pending = (pending[0], record["t"], pending[2])
            elif pending and pending[1] and (
                    (record["op"] == "recv" and record["msg"].get("type") == "SESSION_CONNECT")
                    or (record["op"] == "close" and record["phase"] in ("invoke", "info"))):
                waits[pending[0]].append((client, pending[1], record["t"], pending[2]))
                pending = None
            elif record["op"] == "connect" and record["phase"] == "fail":
                pending = None
        if pending and pending[1]:
            waits[pending[0]].append((client, pending[1], float(run.end_t), pending[2]))
    return waits


def check(run: Run, bound_s: float = BOUND_S) -> CheckResult:
    result = CheckResult("liveness", "Matchmaking liveness", weight=2)
    bound = bound_s * 1000
    for pool, waits in _waits(run).items():
        # Sweep by start time: the earlier waiter that overlaps a wait the longest is the one that
        # waits longest, so one pass finds, for every wait, whether some earlier one left both unmatched.
        waits.sort(key=lambda w: w[1])
        result.checked += len(waits)
        longest: tuple[str, float, float, dict] | None = None
        for client, start, end, record in waits:
            if longest is not None:
                other, _, other_end, other_record = longest
                together = min(end, other_end) - max(start, run.last_fault_t)
                if together > bound:
                    result.violations.append(Finding(
                        "matched within a bound", f"{other} and {client} both waited for a {pool[0]!r} session of "
                        f"{pool[1]} for {together / 1000:.0f} s (bound {bound_s:.0f} s, after the last fault) without "
                        "being matched", excerpt([other_record, record])))
            if longest is None or end > longest[2]:
                longest = (client, start, end, record)
    return result

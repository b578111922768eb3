"""Matchmaking liveness: as many players as a session holds, all waiting for the same public (type,
size) at the same time for longer than a bound after the last fault ends, means the relay failed to
match them (fewer may wait together as long as they like: their session is not full yet).
(Refusals and failed handshakes are judged by the client-visible errors check.)"""

from __future__ import annotations

import heapq
from collections import defaultdict

from .model import CheckResult, Finding, Run, excerpt, number

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


def _size(target: object) -> int:
    """Players a session of this ``targetNumMembers`` holds (a number or a numeric string, as
    ``model.number`` reads them; 2 if neither)."""
    value = number(target)
    return max(2, int(value)) if value is not None else 2


def check(run: Run, bound_s: float = BOUND_S) -> CheckResult:
    result = CheckResult("liveness", "Matchmaking liveness", weight=2)
    bound = bound_s * 1000
    for pool, waits in _waits(run).items():
        size = _size(pool[1])
        # Sweep by start time: each wait is judged with the size - 1 earlier waits that are still
        # waiting and wait the longest, so one pass finds every full session's worth left unmatched.
        waits.sort(key=lambda w: w[1])
        result.checked += len(waits)
        active: list[tuple[float, int]] = []  # (end, index) of the earlier waits, a min-heap by end
        for index, (client, start, end, record) in enumerate(waits):
            while active and active[0][0] <= start:
                heapq.heappop(active)
            others = heapq.nlargest(size - 1, active)
            if len(others) == size - 1:
                together = min([end, *(other_end for other_end, _ in others)]) - max(start, run.last_fault_t)
                if together > bound:
                    group = [*sorted((waits[i] for _, i in others), key=lambda w: w[1]), (client, start, end, record)]
                    result.violations.append(Finding(
                        "matched within a bound", f"{', '.join(w[0] for w in group)} all waited for a {pool[0]!r} "
                        f"session of {pool[1]} for {together / 1000:.0f} s (bound {bound_s:.0f} s, after the last "
                        "fault) without being matched", excerpt([w[3] for w in group])))
            heapq.heappush(active, (end, index))
    return result

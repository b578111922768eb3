"""END_SESSION: every member connected at that moment gets SESSION_END, and nothing more is relayed
in that session afterwards.

- Told: after a member sends END_SESSION (and is not answered INVALID_CONNECTION, which means there
  was nothing left to end), each socket of that session open at that moment must receive
  SESSION_END within ``GRACE_S``. A socket that the client itself closed or moved away from
  (CONNECTION_OVERWRITE) before then is not judged. INVALID_CONNECTION counts as being told only
  within ``RACE_S`` of the END_SESSION: the member's own action then reached the relay between
  the end and its SESSION_END; later, it means the relay never told it.
- Nothing after: a MESSAGE whose SEND_MESSAGE was sent more than ``IN_FLIGHT_S`` after the first
  SESSION_END of its session was received must not be delivered to anyone. Frames sent before that
  moment may still arrive (they were in flight, or in a fan-out that had already started).
"""

from __future__ import annotations

from collections import defaultdict

from ..history import Record
from .model import GRACE_S, CheckResult, Finding, Run, excerpt
from .sockets import Socket, by_session, load_end, record_type, sockets

RACE_S = 2.0
IN_FLIGHT_S = 1.0


def check(run: Run) -> CheckResult:
    result = CheckResult("session_end", "END_SESSION ends the session for everyone", weight=2)
    all_sockets = sockets(run)
    sessions = by_session(all_sockets)
    ends: dict[str, list[Record]] = defaultdict(list)
    for record in run.history:
        if record["op"] == "end" and record["phase"] == "ok" and record.get("session"):
            ends[record["session"]].append(record)
    for session, records in ends.items():
        end = min(records, key=lambda r: float(r["t"]))
        _told(run, result, session, end, sessions.get(session, []))
    _nothing_after(run, result, sessions)
    return result


def _ender_socket(end: Record, members: list[Socket]) -> Socket | None:
    return next((s for s in members if s.client == end["client"] and s.conn == end.get("conn")
                 and s.open_at(float(end["t"]))), None)


def _told(run: Run, result: CheckResult, session: str, end: Record, members: list[Socket]) -> None:
    t_end = float(end["t"])
    deadline = t_end + GRACE_S * 1000
    if deadline > load_end(run):
        return
    ender = _ender_socket(end, members)
    if ender is not None and any(t_end <= float(r["t"]) <= deadline for r in ender.records
                                 if record_type(r) in ("INVALID_CONNECTION", "CONNECTION_OVERWRITE")):
        return  # the relay had nothing left to end for this socket
    for socket in members:
        if not socket.open_at(t_end) or not socket.received("SESSION_CONNECT"):
            continue
        verdict, evidence = _outcome(socket, t_end, deadline)
        if verdict is None:
            continue
        result.checked += 1
        if verdict == "told":
            continue
        faults = run.faults_around(socket.client, socket.conn, t_end, deadline) + run.faults_around(
            end["client"], end["conn"], t_end, deadline)
        finding = Finding("every connected member gets SESSION_END",
                          f"{socket.client} was in session {session} when {end['client']} ended it, and {verdict}",
                          excerpt([end, *evidence]), faults)
        (result.explained if faults else result.violations).append(finding)


def _outcome(socket: Socket, t_end: float, deadline: float) -> tuple[str | None, list[Record]]:
    """("told" | what went wrong | None when not judged, the records that show it)."""
    for record in socket.records:
        t = float(record["t"])
        kind = record_type(record)
        if kind == "SESSION_END" and t <= deadline:
            return "told", [record]
        if t < t_end:
            continue
        if t > deadline:
            break
        if kind == "INVALID_CONNECTION":
            if t <= t_end + RACE_S * 1000:
                return "told", [record]
            return (f"was answered INVALID_CONNECTION {(t - t_end) / 1000:.1f} s later, never told SESSION_END",
                    [record])
        if kind == "CONNECTION_OVERWRITE" or (record["op"] == "close" and record["phase"] == "invoke"):
            return None, []
        if record["op"] == "close" and record["phase"] == "info":
            return "its socket was closed by the relay without SESSION_END", [record]
    if socket.closed < deadline:
        return None, []
    return f"got no SESSION_END within {GRACE_S:.0f} s", [r for r in socket.records
                                                        if t_end - 500 <= float(r["t"]) <= deadline][:8]


def _nothing_after(run: Run, result: CheckResult, sessions: dict[str, list[Socket]]) -> None:
    ended_at: dict[str, float] = {}
    for session, members in sessions.items():
        times = [float(r["t"]) for s in members for r in s.received("SESSION_END")]
        if times:
            ended_at[session] = min(times)
    result.checked += len(ended_at)
    sends = {r["pid"]: r for r in run.history if r["op"] == "send" and r["phase"] == "invoke" and r.get("pid")}
    late: dict[str, list[Record]] = defaultdict(list)  # session -> its sends relayed too late, and their receipts
    for record in run.history:
        send = sends.get(record.get("pid")) if record["op"] == "recv" else None
        if send is None or send.get("session") not in ended_at:
            continue
        if float(send["t"]) > ended_at[send["session"]] + IN_FLIGHT_S * 1000:
            late[send["session"]].append(record)
    for session, receipts in late.items():
        pids = sorted({r["pid"] for r in receipts}, key=lambda pid: float(sends[pid]["t"]))
        first = sends[pids[0]]
        after = (float(first["t"]) - ended_at[session]) / 1000
        result.violations.append(Finding(
            "nothing is relayed after SESSION_END",
            f"{len(pids)} message(s) sent in session {session} after it ended (SESSION_END) still reached "
            f"{', '.join(sorted({r['client'] for r in receipts}))}; the first, {pids[0]}, was sent {after:.1f} s after",
            excerpt([first, *[r for r in receipts if r["pid"] == pids[0]]])))

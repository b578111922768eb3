"""Recovery: a HEARTBEAT that says ``waitingFor`` a notice is answered with that notice, whenever
the relay has it to give. It is the protocol's only way back from a lost CONNECTION,
PRIVATE_SESSION_PENDING or SESSION_CONNECT frame.

Judged on each HEARTBEAT answer whose request is unambiguous (exactly one heartbeat outstanding on
that socket when it came), for what the request asked:
- CONNECTION: always due (the relay answered, so it knows the member).
- SESSION_CONNECT: due when the heartbeat was sent more than ``MARGIN_S`` after some member of the
  socket's session had received a SESSION_CONNECT of it (the session had surely started).
- PRIVATE_SESSION_PENDING: due on a private host's socket when the answer came more than
  ``MARGIN_S`` before any guest started connecting to that session (it was surely still pending).
The socket's session is the one its records name, or else the session of the MESSAGEs it received.
An answer's contents cannot be changed by a wire fault (a damaged frame is not JSON), so nothing
here is explained by faults.
"""

from __future__ import annotations

from collections import defaultdict

from ..history import Record
from .model import CheckResult, Finding, Run, excerpt
from .sockets import INF, Socket, record_type, sockets

MARGIN_S = 0.5


def check(run: Run) -> CheckResult:
    result = CheckResult("recovery", "HEARTBEAT waitingFor brings lost notices back", weight=2)
    started: dict[str, float] = {}
    for record in run.received("SESSION_CONNECT"):
        session = record["msg"].get("sessionId")
        started[session] = min(started.get(session, INF), float(record["t"]))
    guests: dict[str, float] = {}
    for record in run.history:
        query = record.get("msg") if record["op"] == "connect" and record["phase"] == "invoke" else None
        if isinstance(query, dict) and query.get("sessionId"):
            guests[query["sessionId"]] = min(guests.get(query["sessionId"], INF), float(record["t"]))
    send_session = {r["pid"]: r.get("session") for r in run.history if r["op"] == "send" and r.get("pid")}
    margin = MARGIN_S * 1000

    for socket in sockets(run):
        session = socket.session or next((send_session.get(r.get("pid")) for r in socket.received("MESSAGE")
                                          if send_session.get(r.get("pid"))), None)
        private_host = socket.query.get("private") == "true"
        missed: dict[str, list[Record]] = defaultdict(list)
        for heartbeat, answer in _answered(socket):
            asked = (heartbeat.get("msg") or {}).get("waitingFor")
            asked = asked if isinstance(asked, list) else []
            t_asked, t_answered = float(heartbeat["t"]), float(answer[0]["t"])
            due = [kind for kind in asked if kind == "CONNECTION"
                   or (kind == "SESSION_CONNECT" and t_asked > started.get(session, INF) + margin)
                   or (kind == "PRIVATE_SESSION_PENDING" and private_host and session is not None
                       and t_answered < guests.get(session, INF) - margin)]
            given = {record_type(r) for r in answer}
            for kind in due:
                result.checked += 1
                if kind not in given:
                    missed[kind] += [heartbeat, *answer]
        for kind, records in missed.items():
            times = sum(1 for r in records if r["op"] == "heartbeat")
            result.violations.append(Finding(
                "HEARTBEAT waitingFor is answered", f"{socket.client} asked for {kind} with HEARTBEAT waitingFor "
                f"{times} time(s) on socket {socket.conn} and no answer brought it ({_why(kind, session)})",
                excerpt(records)))
    return result


def _why(kind: str, session: str | None) -> str:
    if kind == "SESSION_CONNECT":
        return f"session {session} had already started"
    if kind == "PRIVATE_SESSION_PENDING":
        return f"private session {session} was still waiting for its guest"
    return "the relay knew the member, since it answered"


def _answered(socket: Socket) -> list[tuple[Record, list[Record]]]:
    """(heartbeat invoke, [HEARTBEAT, the messages that came with it]) for each unambiguous answer."""
    pairs: list[tuple[Record, list[Record]]] = []
    pending: list[Record] = []
    answer: list[Record] | None = None
    for record in socket.records:
        if record["op"] == "heartbeat" and record["phase"] == "invoke":
            pending.append(record)
        elif record_type(record) == "HEARTBEAT":
            answer = [record]
            if len(pending) == 1:
                pairs.append((pending[0], answer))
            pending = []
        elif record["op"] == "recv":
            if answer is not None and record.get("via") == "HEARTBEAT":
                answer.append(record)
            else:
                answer = None
    return pairs

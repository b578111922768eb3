"""Clean-up during play: expiry never takes a live player. A socket whose HEARTBEAT was answered
less than ``LIVE_S`` ago is live; the relay must not close it, forget it (INVALID_CONNECTION) or end
its session (SESSION_END) unless a member of that session sent END_SESSION.

``LIVE_S`` is 10 s: the protocol's shortest expiries are 30 s (connection, member) and 60 s
(session), and a relay that pushes an expiry only once half of it is used (as the reference
relay does) still leaves 15 s after any answered HEARTBEAT. Endings a fault on that client's
socket could have caused (a reset, a close, a damaged frame...) are explained, not violations.

With the relay's expiry settings in force known (run.json ``stack_options.expiries_s``; a template
may name them as it likes), a socket is live for a third of the shortest of them when that is less
than 10 s (an expiry a user set below the protocol's 30 s), and the 30 s below is that shortest.
When the user set the stack's parameters and none is known as an expiry, the protocol's figures
are assumed, and a note says so.

What counts as checked: sockets that were live while the clean-up function ran (invocations of a
function whose name contains "cleanup"); with no invocation log (a relay the harness did not
start), sockets that were live for longer than the shortest connection expiry (30 s).
"""

from __future__ import annotations

import bisect
from collections import defaultdict

from ..history import Record
from .model import SOCKET_ENDING, CheckResult, Finding, Run, excerpt
from .sockets import INF, Socket, load_end, record_type, sockets

LIVE_S = 10.0
SHORTEST_EXPIRY_S = 30.0
_SOCKET_FAULTS = SOCKET_ENDING | {"corrupt", "truncate", "pause", "refuse"}


def check(run: Run) -> CheckResult:
    result = CheckResult("live_cleanup", "Clean-up spares live players", weight=2)
    cleanups = sorted(float(i["t"]) for i in run.invocations if "cleanup" in str(i.get("function", "")).lower())
    ended_by_member: dict[str, float] = defaultdict(lambda: INF)
    for record in run.history:
        if record["op"] == "end" and record["phase"] in ("invoke", "ok") and record.get("session"):
            ended_by_member[record["session"]] = min(ended_by_member[record["session"]], float(record["t"]))
    horizon = load_end(run)
    expiries = run.expiries_s or {}
    shortest = min([SHORTEST_EXPIRY_S, *expiries.values()])
    live = min(LIVE_S, shortest / 3) * 1000
    for socket in sockets(run):
        beats = [float(r["t"]) for r in socket.received("HEARTBEAT")]
        if not beats:
            continue
        if _live_across_cleanup(socket, beats, cleanups, horizon, live, shortest):
            result.checked += 1
        ending = _ending(socket)
        if ending is None or float(ending["t"]) > horizon:
            continue
        t = float(ending["t"])
        kind = record_type(ending) or "socket closed by the relay"
        if kind != "socket closed by the relay" and ended_by_member[socket.session or ""] <= t:
            continue  # a member ended the session
        last_beat = max((b for b in beats if b <= t), default=None)
        if last_beat is None or t - last_beat > live:
            continue
        faults = [f for f in run.faults_around(socket.client, socket.conn, last_beat, t)
                  if kind != "socket closed by the relay" or f["fault"] in _SOCKET_FAULTS]
        answered = next(r for r in socket.received("HEARTBEAT") if float(r["t"]) == last_beat)
        finding = Finding("no live player is cleaned up",
                          f"{socket.client}'s socket {socket.conn} got {kind} {(t - last_beat) / 1000:.1f} s after its "
                          f"HEARTBEAT was answered (session {socket.session}, no END_SESSION)",
                          excerpt([answered, ending]), faults)
        (result.explained if faults else result.violations).append(finding)
    if not cleanups and result.checked:
        result.notes.append(f"no clean-up invocations logged: counted sockets live for over {shortest:g} s")
    if live < LIVE_S * 1000:
        result.notes.append(f"a live socket is one answered within the last {live / 1000:g} s: the shortest expiry "
                            f"in force is {min(expiries, key=expiries.__getitem__)}={shortest:g} s")
    if run.expiries_unknown:
        result.notes.append("the relay's expiry settings in force are not known (no template parameter named like an "
                            f"expiry): the protocol's shortest ({SHORTEST_EXPIRY_S:g} s) is assumed")
    return result


def _live_across_cleanup(socket: Socket, beats: list[float], cleanups: list[float], horizon: float, live: float,
                         shortest: float) -> bool:
    if cleanups:
        # the clean-ups while the socket was open (``socket.open_at``): cleanups are sorted
        during = cleanups[bisect.bisect_left(cleanups, socket.opened):bisect.bisect_left(cleanups, socket.closed)]
        return any(any(c - live <= b <= c for b in beats) for c in during)
    return min(socket.closed, horizon) - socket.opened > shortest * 1000


def _ending(socket: Socket) -> Record | None:
    """The first thing on this socket by which the relay let its player go."""
    for record in socket.records:
        if record_type(record) in ("SESSION_END", "INVALID_CONNECTION"):
            return record
        if record["op"] == "close":
            return record if record["phase"] == "info" else None
    return None

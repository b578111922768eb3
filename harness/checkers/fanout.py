"""A socket that is gone in the middle of a fan-out does not stop it: when a member's socket ends
around the time a message is sent in its session (the relay may still list it, and its send then
gets 410 from ``@connections``), every other member connected throughout still gets the message.

The history cannot see the relay's 410s, so the sends judged are those made while a socket of
the session ended within ``GONE_BEFORE_S`` before to ``GONE_AFTER_S`` after the send (the relay
has not yet processed its ``$disconnect``, or processes it during the fan-out). A loss is explained
only by a fault that could have hit that very message: one on the receiver's downstream or the
sender's upstream at that moment (and naming the payload id when the fault log gives them), or a
proxy-wide fault then.
"""

from __future__ import annotations

from typing import Any

from ..history import Record
from .model import GRACE_S, CheckResult, Finding, Run, excerpt
from .sockets import Socket, by_session, load_end, sockets

GONE_BEFORE_S = 1.0
GONE_AFTER_S = 0.5


def check(run: Run) -> CheckResult:
    result = CheckResult("fanout", "A gone socket does not stop a fan-out", weight=2)
    sessions = by_session(sockets(run))
    got: dict[str, set[str]] = {}
    for record in run.history:
        if record["op"] == "recv" and record.get("pid"):
            got.setdefault(record["client"], set()).add(record["pid"])
    horizon = load_end(run)
    grace = GRACE_S * 1000
    for send in run.history:
        if send["op"] != "send" or send["phase"] != "ok" or not send.get("pid") or not send.get("session"):
            continue
        t = float(send["t"])
        members = sessions.get(send["session"], [])
        if t + grace > horizon:
            continue
        gone = [s for s in members if s.client != send["client"]
                and t - GONE_BEFORE_S * 1000 <= s.closed <= t + GONE_AFTER_S * 1000]
        if not gone:
            continue
        gone_clients = {s.client for s in gone}
        receivers = [s for s in members if s.client not in gone_clients and s.opened <= t
                     and s.closed >= t + grace and s.received("SESSION_CONNECT")]
        for receiver in receivers:
            result.checked += 1
            if send["pid"] in got.get(receiver.client, set()):
                continue
            faults = _could_hit(run, send, receiver, t, t + grace, run.last_receipts.get(send["pid"]))
            names = ", ".join(sorted(gone_clients))
            finding = Finding("a gone socket does not stop a fan-out",
                              f"{send['pid']} from {send['client']} never reached {receiver.client}, sent while "
                              f"{names}'s socket went away in session {send['session']}",
                              excerpt([send, *_around(gone, receiver, t)]), faults)
            (result.explained if faults else result.violations).append(finding)
    return result


def _around(gone: list[Socket], receiver: Socket, t: float) -> list[Record]:
    closes = [r for s in gone for r in s.records if r["op"] == "close" and float(r["t"]) == s.closed]
    nearby = [r for r in receiver.records if t - 500 <= float(r["t"]) <= t + GRACE_S * 1000][:6]
    return closes + nearby


def _could_hit(run: Run, send: Record, receiver: Socket, start: float, end: float,
               delivered_t: float | None) -> list[dict[str, Any]]:
    """Faults that could have lost this message (``Run.loss_faults``: that message dropped on either
    socket, either socket ended before the others had it, a stack-side fault), or a proxy-wide one
    in its window."""
    return run.loss_faults(send["pid"], send["client"], send["conn"], receiver.client, receiver.conn, start, end,
                           delivered_t) + [
        f for f in run.proxy_wide_index.within(start - 1000, end) if start - 1000 <= float(f["t"]) <= end]

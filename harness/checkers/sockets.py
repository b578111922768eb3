"""Client sockets as the history tells them: when each opened and ended, who ended it, and which
session it belongs to. Shared by the checkers of protocol rules that speak of "a connected member"."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..history import Record
from .model import Run

INF = float("inf")


@dataclass
class Socket:
    client: str
    conn: int
    opened: float  # wall-clock ms of the connect/rejoin ``ok``
    closed: float = INF  # when it ended (INF: it outlived the history)
    closed_by: str | None = None  # "client" (the client closed it) or "relay" (closed from the other side)
    session: str | None = None  # the session attempt it belongs to (the last one its records name)
    query: dict[str, Any] = field(default_factory=dict)  # what it asked for: the connect/rejoin query
    records: list[Record] = field(default_factory=list)  # its records from the open on, in client order

    def open_at(self, t: float) -> bool:
        return self.opened <= t < self.closed

    def received(self, kind: str) -> list[Record]:
        return [r for r in self.records if record_type(r) == kind]


def record_type(record: Record) -> Any:
    """The ``type`` of a received message (None for any other record)."""
    message = record.get("msg")
    return message.get("type") if record["op"] == "recv" and isinstance(message, dict) else None


def sockets(run: Run) -> list[Socket]:
    """Every socket that opened, in client order."""
    found: list[Socket] = []
    for client, records in run.by_client.items():
        live: dict[Any, Socket] = {}
        queries: dict[Any, dict[str, Any]] = {}
        for record in records:
            conn = record.get("conn")
            if record["op"] in ("connect", "rejoin") and record["phase"] == "invoke":
                queries[conn] = record.get("msg") if isinstance(record.get("msg"), dict) else {}
            if record["op"] in ("connect", "rejoin") and record["phase"] == "ok":
                live[conn] = Socket(client, conn, float(record["t"]), query=queries.pop(conn, {}))
                live[conn].session = record.get("session") or live[conn].query.get("sessionId")
                found.append(live[conn])
                continue
            socket = live.get(conn)
            if socket is None:
                continue
            socket.records.append(record)
            if record.get("session"):
                socket.session = record["session"]
            if record_type(record) == "SESSION_CONNECT" and record["msg"].get("sessionId"):
                socket.session = record["msg"]["sessionId"]
            if record["op"] == "close" and record["phase"] in ("invoke", "info"):
                socket.closed = float(record["t"])
                socket.closed_by = "client" if record["phase"] == "invoke" else "relay"
                del live[conn]
    return found


def by_session(all_sockets: list[Socket]) -> dict[str, list[Socket]]:
    grouped: dict[str, list[Socket]] = defaultdict(list)
    for socket in all_sockets:
        if socket.session:
            grouped[socket.session].append(socket)
    return grouped


def load_end(run: Run) -> float:
    """Wall-clock ms after which nothing is judged: the load's end (``ended_t``) or the last record."""
    ended = run.info.get("ended_t")
    try:
        return min(float(run.end_t), float(ended)) if ended is not None else float(run.end_t)
    except (TypeError, ValueError):
        return float(run.end_t)

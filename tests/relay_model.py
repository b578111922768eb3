"""A model of the Simple Relay protocol (docs/protocol.md) for the state-machine test: who is in which
session, and the frames each socket must get for one client step, each exactly once.

The model is the relay's state as the protocol describes it, with no I/O. Each step returns a
``Delivery``: socket label -> the frames (lists of expected messages) that socket must get, in order.
Values the relay chooses (member ids, session ids, a pinned message's time) are ``Learn`` slots:
the first frame that carries one binds it, every later one must agree (``Model.matches``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

Frame = list[dict[str, Any]]
Delivery = dict[str, list[Frame]]


@dataclass(frozen=True)
class Learn:
    """A value the relay picks: bound by the first message that carries it."""

    key: tuple[Any, ...]


ANY = Learn(("any",))  # never bound: any value passes (a non-pinned message's time)


@dataclass
class Slot:
    client: str
    member: Learn  # the member id
    socket: str | None  # the socket holding the slot; None while the member is away


@dataclass
class Session:
    label: str  # the model's name for it: s1, s2, ...
    type: str
    size: int
    private: bool
    slots: list[Slot] = field(default_factory=list)
    pinned: dict[str, Any] | None = None  # {"payload", "time": Learn, "memberNum"}
    ended: bool = False

    @property
    def id(self) -> Learn:
        return Learn(("session", self.label))

    @property
    def started(self) -> bool:
        return len(self.slots) >= self.size

    def num(self, socket: str) -> int | None:
        return next((n for n, s in enumerate(self.slots) if s.socket == socket), None)

    def connected(self) -> list[tuple[int, Slot]]:
        return [(n, s) for n, s in enumerate(self.slots) if s.socket is not None]


def _connect(session: Session, num: int) -> dict[str, Any]:
    message = {"type": "SESSION_CONNECT", "sessionType": session.type, "sessionId": session.id, "memberNum": num,
               "memberPresence": [s.socket is not None for s in session.slots]}
    if session.pinned is not None:
        message["pinnedMessage"] = dict(session.pinned)
    return message


def _pending(session: Session) -> dict[str, Any]:
    return {"type": "PRIVATE_SESSION_PENDING", "sessionId": session.id, "targetNumMembers": session.size}


@dataclass
class Model:
    sessions: list[Session] = field(default_factory=list)
    open_public: dict[tuple[str, int], Session] = field(default_factory=dict)  # (type, size) -> waiting session
    member_of: dict[str, Session] = field(default_factory=dict)  # client -> its live session
    memberships: dict[str, int] = field(default_factory=dict)  # client -> how many times it joined
    pins: int = 0
    bindings: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    def copy(self) -> Model:
        return copy.deepcopy(self)

    # ---- lookups -------------------------------------------------------------------------
    def caller(self, socket: str) -> tuple[Session, int] | None:
        """The live session and slot a socket acts for (its connection record), if any."""
        for session in self.sessions:
            num = None if session.ended else session.num(socket)
            if num is not None:
                return session, num
        return None

    def slot_of(self, client: str) -> tuple[Session, int] | None:
        session = self.member_of.get(client)
        if session is None:
            return None
        return session, next(n for n, s in enumerate(session.slots) if s.client == client)

    def bound(self, value: Any) -> Any:
        return self.bindings.get(value.key) if isinstance(value, Learn) else value

    # ---- joining -------------------------------------------------------------------------
    def _member(self, client: str) -> Learn:
        self.memberships[client] = self.memberships.get(client, 0) + 1
        return Learn(("member", client, self.memberships[client]))

    def _new_session(self, session_type: str, size: int, private: bool) -> Session:
        session = Session(f"s{len(self.sessions) + 1}", session_type, size, private)
        self.sessions.append(session)
        return session

    def _join(self, session: Session, client: str, socket: str) -> Delivery:
        member = self._member(client)
        session.slots.append(Slot(client, member, socket))
        self.member_of[client] = session
        num = len(session.slots) - 1
        mine: Frame = [{"type": "CONNECTION", "memberId": member}]
        if session.private and not session.started:
            mine.append(_pending(session))
        delivery: Delivery = {}
        if session.started:  # the join filled it: everyone connected learns their slot
            for other, slot in session.connected():
                if other == num:
                    mine.append(_connect(session, num))
                    delivery[socket] = [mine]
                else:
                    delivery[slot.socket] = [[_connect(session, other)]]
        else:
            delivery[socket] = [mine]
        return delivery

    def join_public(self, client: str, socket: str, session_type: str, size: int) -> Delivery:
        session = self.open_public.get((session_type, size))
        if session is None:
            session = self.open_public[(session_type, size)] = self._new_session(session_type, size, False)
        delivery = self._join(session, client, socket)
        if session.started:
            del self.open_public[(session_type, size)]
        return delivery

    def host_private(self, client: str, socket: str, session_type: str, size: int) -> Delivery:
        return self._join(self._new_session(session_type, size, True), client, socket)

    def private_session(self, session_id: str) -> Session | None:
        return next((s for s in self.sessions if s.private and self.bound(s.id) == session_id), None)

    def join_private(self, client: str, socket: str, session_id: str) -> Delivery | None:
        """None: the handshake is refused (the session ended, or is full)."""
        session = self.private_session(session_id)
        if session is None or session.ended or session.started:
            return None
        return self._join(session, client, socket)

    def rejoin(self, client: str, socket: str) -> Delivery | None:
        """``memberId=M`` on a new socket; None: refused (M has no live session)."""
        found = self.slot_of(client)
        if found is None:
            return None
        session, num = found
        slot = session.slots[num]
        old, slot.socket = slot.socket, socket
        delivery: Delivery = {}
        if session.started:
            delivery[socket] = [[_connect(session, num)]]
            if old is None:
                for other, peer in session.connected():
                    if other != num:
                        delivery[peer.socket] = [[{"type": "MEMBER_RECONNECT", "memberNum": num}]]
        else:
            mine: Frame = [{"type": "CONNECTION", "memberId": slot.member}]
            if session.private:
                mine.append(_pending(session))
            delivery[socket] = [mine]
        if old is not None:
            delivery[old] = [[{"type": "CONNECTION_OVERWRITE"}]]
        return delivery

    # ---- leaving -------------------------------------------------------------------------
    def _forget(self, session: Session) -> None:
        session.ended = True
        for key, waiting in list(self.open_public.items()):
            if waiting is session:
                del self.open_public[key]
        for slot in session.slots:
            if self.member_of.get(slot.client) is session:
                del self.member_of[slot.client]

    def disconnect(self, socket: str) -> Delivery:
        """The socket closed ($disconnect): before the start its member leaves (the others move up a
        slot); after it the slot waits for a rejoin and the others hear MEMBER_DISCONNECT."""
        found = self.caller(socket)
        if found is None:
            return {}
        session, num = found
        if session.started:
            session.slots[num].socket = None
            return {peer.socket: [[{"type": "MEMBER_DISCONNECT", "memberNum": num}]]
                    for _, peer in session.connected()}
        slot = session.slots.pop(num)
        del self.member_of[slot.client]
        if not session.slots:
            self._forget(session)
        return {}

    def end(self, socket: str) -> Delivery:
        found = self.caller(socket)
        if found is None:
            return {socket: [[{"type": "INVALID_CONNECTION"}]]}
        session, _ = found
        delivery = {peer.socket: [[{"type": "SESSION_END"}]] for _, peer in session.connected()}
        self._forget(session)
        return delivery

    # ---- actions -------------------------------------------------------------------------
    def send(self, socket: str, payload: str, pinned: bool) -> Delivery:
        found = self.caller(socket)
        if found is None:
            return {socket: [[{"type": "INVALID_CONNECTION"}]]}
        session, num = found
        message: dict[str, Any] = {"type": "MESSAGE", "payload": payload, "time": ANY, "memberNum": num}
        if pinned:
            self.pins += 1
            message["time"] = Learn(("pin", self.pins))
            message["pinned"] = True
            session.pinned = {"payload": payload, "time": message["time"], "memberNum": num}
        return {peer.socket: [[dict(message)]] for _, peer in session.connected()}

    def heartbeat(self, socket: str, waiting_for: set[str], after: int | None) -> Delivery:
        found = self.caller(socket)
        if found is None:
            return {socket: [[{"type": "INVALID_CONNECTION"}]]}
        session, num = found
        frame: Frame = [{"type": "HEARTBEAT"}]
        if "CONNECTION" in waiting_for:
            frame.append({"type": "CONNECTION", "memberId": session.slots[num].member})
        if "PRIVATE_SESSION_PENDING" in waiting_for and session.private and not session.started:
            frame.append(_pending(session))
        if "SESSION_CONNECT" in waiting_for and session.started:
            frame.append(_connect(session, num))
        pinned = session.pinned
        if after is not None and pinned is not None:
            time = self.bound(pinned["time"])
            if time is None or time > after:  # a pin nobody saw yet is newer than any the client saw
                frame.append({"type": "MESSAGE", **pinned, "pinned": True})
        return {socket: [frame]}

    # ---- comparing -----------------------------------------------------------------------
    def matches(self, expected: Any, observed: Any) -> bool:
        """Does ``observed`` fit ``expected``? Binds the Learn slots it meets first (on a match)."""
        fresh: dict[tuple[Any, ...], Any] = {}
        if not self._fits(expected, observed, fresh):
            return False
        self.bindings.update(fresh)
        return True

    def _fits(self, expected: Any, observed: Any, fresh: dict[tuple[Any, ...], Any]) -> bool:
        if isinstance(expected, Learn):
            if expected == ANY:
                return True
            known = self.bindings.get(expected.key, fresh.get(expected.key))
            if known is None:
                fresh[expected.key] = observed
                return observed is not None
            return known == observed
        if isinstance(expected, dict):
            return (isinstance(observed, dict) and expected.keys() == observed.keys()
                    and all(self._fits(v, observed[k], fresh) for k, v in expected.items()))
        if isinstance(expected, list):
            return (isinstance(observed, list) and len(expected) == len(observed)
                    and all(self._fits(e, o, fresh) for e, o in zip(expected, observed, strict=True)))
        return type(expected) is type(observed) and expected == observed


def merge(first: Delivery, then: Delivery) -> Delivery:
    """Two deliveries one after the other."""
    out = {socket: list(frames) for socket, frames in first.items()}
    for socket, frames in then.items():
        out.setdefault(socket, []).extend(frames)
    return out


def show(value: Any) -> Any:
    """An expected frame as a developer reads it: Learn slots as <member c0#1>, <session s2>, ..."""
    if isinstance(value, Learn):
        return "<any>" if value == ANY else "<" + " ".join(map(str, value.key)) + ">"
    if isinstance(value, dict):
        return {k: show(v) for k, v in value.items()}
    if isinstance(value, list):
        return [show(v) for v in value]
    return value

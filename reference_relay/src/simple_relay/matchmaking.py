"""$connect: public matchmaking, private sessions and rejoins, each as one conditional transaction.

Every attempt reads fresh state and writes with conditions on exactly what it read; a lost race
raises Contention and ``retry_on_contention`` runs the attempt again, so concurrent joiners all end
up in a session and no session ever holds more than its target.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ids import new_id
from .inbound import ConnectRequest, HostPrivate, JoinPrivate, PublicMatch, Rejoin
from .model import open_pointer_id
from .store import Contention, Store, expires_in, retry_on_contention


class Refused(Exception):
    """A join that fails for a real reason: the handshake is refused with this status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Joined:
    session_id: str
    member_id: str


def join(store: Store, request: ConnectRequest, conn_id: str) -> Joined:
    if isinstance(request, PublicMatch):
        attempts = iter(range(1 << 30))
        # The first try trusts the open pointer's count and skips reading the session; a try that
        # lost a race (or met a stale pointer) reads the session too.
        return retry_on_contention(
            lambda: _join_public(store, request, conn_id, trust_pointer=next(attempts) == 0))
    if isinstance(request, HostPrivate):
        return retry_on_contention(lambda: _create(store, request.session_type, request.target_num_members,
                                                   conn_id, private=True))
    if isinstance(request, JoinPrivate):
        return retry_on_contention(lambda: _join_private(store, request, conn_id))
    return retry_on_contention(lambda: _rejoin(store, request, conn_id))


def _new_session_item(store: Store, session_type: str, target: int, member_id: str, conn_id: str,
                      private: bool) -> dict:
    return {"Put": {
        "TableName": store.settings.sessions_table,
        "Item": {"id": new_id(), "type": session_type, "targetNumMembers": target,
                 "members": [{"memberId": member_id, "connId": conn_id}], "isPrivate": private,
                 "expireAfter": expires_in(store.settings.session_expiry)},
        "ConditionExpression": "attribute_not_exists(#id)",
        "ExpressionAttributeNames": {"#id": "id"},
    }}


def _create(store: Store, session_type: str, target: int, conn_id: str, private: bool) -> Joined:
    member_id = new_id()
    session_put = _new_session_item(store, session_type, target, member_id, conn_id, private)
    session_id = session_put["Put"]["Item"]["id"]
    items = [session_put, store.put_member(member_id, session_id, conn_id, new=True),
             store.put_connection(conn_id, session_id, member_id)]
    if not private:
        items.append({"Put": {
            "TableName": store.settings.sessions_table,
            "Item": {"id": open_pointer_id(session_type, target), "openSessionId": session_id, "numWaiting": 1,
                     "expireAfter": expires_in(store.settings.session_expiry)},
            "ConditionExpression": "attribute_not_exists(#id)",
            "ExpressionAttributeNames": {"#id": "id"},
        }})
    store.transact(items)
    return Joined(session_id, member_id)


def _append_member(store: Store, session_id: str, seen: int, conn_id: str, extra: list[dict]) -> Joined:
    """Take the next slot of a session that had exactly ``seen`` members when read."""
    member_id = new_id()
    store.transact([
        {"Update": {
            "TableName": store.settings.sessions_table,
            "Key": {"id": session_id},
            "UpdateExpression": "SET #members = list_append(#members, :new), expireAfter = :exp",
            "ConditionExpression": "attribute_exists(#id) AND size(#members) = :seen",
            "ExpressionAttributeNames": {"#id": "id", "#members": "members"},
            "ExpressionAttributeValues": {":new": [{"memberId": member_id, "connId": conn_id}],
                                          ":seen": seen,
                                          ":exp": expires_in(store.settings.session_expiry)},
        }},
        store.put_member(member_id, session_id, conn_id, new=True),
        store.put_connection(conn_id, session_id, member_id),
        *extra,
    ])
    return Joined(session_id, member_id)


def _join_public(store: Store, request: PublicMatch, conn_id: str, trust_pointer: bool) -> Joined:
    pointer_id = open_pointer_id(request.session_type, request.target_num_members)
    pointer = store.open_pointer(pointer_id)
    if pointer is None:
        return _create(store, request.session_type, request.target_num_members, conn_id, private=False)
    session_id = pointer["openSessionId"]
    if trust_pointer:
        # Joins and departures move numWaiting in the same transaction as the member list, so it
        # is the list's length; the append below is conditioned on exactly that.
        seen = int(pointer["numWaiting"])
    else:
        session = store.session(session_id)
        if session is None or session.started or session.is_private:
            # A stale pointer (its session ended or expired): retire it and try again.
            store.transact([store.pointer_write(pointer_id, session_id, None)])
            raise Contention("stale open-session pointer")
        seen = len(session.members)
    waiting = seen + 1
    full = waiting >= request.target_num_members  # the session starts: nobody else may find it
    pointer = store.pointer_write(pointer_id, session_id, None if full else waiting)
    return _append_member(store, session_id, seen, conn_id, [pointer])


def _join_private(store: Store, request: JoinPrivate, conn_id: str) -> Joined:
    session = store.session(request.session_id)
    if session is None or not session.is_private:
        raise Refused(404, f"no private session {request.session_id}: it ended, expired or never existed")
    if session.type != request.session_type:
        raise Refused(400, f"session {session.id} is of sessionType {session.type!r}, "
                           f"not {request.session_type!r}")
    if session.started:
        raise Refused(409, f"session {session.id} is full ({session.target_num_members} members)")
    return _append_member(store, session.id, len(session.members), conn_id, [])


def _rejoin(store: Store, request: Rejoin, conn_id: str) -> Joined:
    member = store.member(request.member_id)
    session_id = member["sessionId"] if member else request.session_id
    if session_id is None:
        raise Refused(404, f"unknown member {request.member_id}: its record expired; "
                           "rejoin with memberId=M&sessionId=S")
    if request.session_id is not None and request.session_id != session_id:
        raise Refused(409, f"member {request.member_id} belongs to another session than {request.session_id}")
    session = store.session(session_id)
    num = session.member_num(request.member_id) if session else None
    if session is None or num is None:
        raise Refused(404, f"member {request.member_id} has no live session to rejoin")
    old_conn = session.members[num].conn_id
    slot = f"#members[{num}]"
    condition = f"{slot}.memberId = :mid AND " + (
        f"{slot}.connId = :old" if old_conn else f"attribute_not_exists({slot}.connId)")
    values = {":mid": request.member_id, ":conn": conn_id,
              ":exp": expires_in(store.settings.session_expiry)}
    if old_conn:
        values[":old"] = old_conn
    items = [
        {"Update": {
            "TableName": store.settings.sessions_table,
            "Key": {"id": session.id},
            "UpdateExpression": f"SET {slot}.connId = :conn, expireAfter = :exp",
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#members": "members"},
            "ExpressionAttributeValues": values,
        }},
        store.put_member(request.member_id, session.id, conn_id, new=False),
        store.put_connection(conn_id, session.id, request.member_id),
    ]
    if old_conn:
        items.append(store.delete_connection(old_conn))
    store.transact(items)
    return Joined(session.id, request.member_id)

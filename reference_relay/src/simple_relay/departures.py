"""Members leaving: a socket going away, and a whole session ending.

A socket can go away in three ways ($disconnect, a 410 while sending to it, or expiry); all
three take the same path here, which is idempotent, so it does not matter how many of them fire.
"""

from __future__ import annotations

from typing import Any

from .model import Session, open_pointer_id
from .store import Store, retry_on_contention


def depart(store: Store, conn_id: str, expired_before: int | None = None) -> None:
    """Before the start the member gives up its slot; after it, the slot waits for a rejoin.

    With ``expired_before``, only a connection that was not refreshed since it expired leaves.
    """
    retry_on_contention(lambda: _depart(store, conn_id, expired_before))


def _pointer_write(store: Store, session: Session, remaining: int) -> list[dict[str, Any]]:
    if session.is_private or session.started:
        return []
    pointer_id = open_pointer_id(session.type, session.target_num_members)
    pointer = store.open_pointer(pointer_id)
    if pointer is None or pointer.get("openSessionId") != session.id:
        return []
    return [store.pointer_write(pointer_id, session.id, remaining or None)]


def _depart(store: Store, conn_id: str, expired_before: int | None) -> None:
    connection = store.connection(conn_id)
    if connection is None:
        return
    if expired_before is not None and int(connection.get("expireAfter", 0)) >= expired_before:
        return
    session = store.session(connection["sessionId"])
    num = session.member_num_by_connection(conn_id) if session else None
    if session is None or num is None:
        # The session ended or the member moved to a newer socket: only the record is left.
        store.write("delete_item", TableName=store.settings.connections_table, Key={"id": conn_id})
        return
    member_id = session.members[num].member_id
    slot = f"#members[{num}]"
    names = {"#members": "members"}
    same_slot = f"{slot}.connId = :conn AND {slot}.memberId = :mid"
    values = {":conn": conn_id, ":mid": member_id}
    items: list[dict[str, Any]] = [store.delete_connection(conn_id)]
    if expired_before is not None:
        items[0]["Delete"].update(ConditionExpression="expireAfter < :now",
                                  ExpressionAttributeValues={":now": expired_before})
    member_record = store.member(member_id)
    if session.started:
        items.append({"Update": {
            "TableName": store.settings.sessions_table, "Key": {"id": session.id},
            "UpdateExpression": f"REMOVE {slot}.connId", "ConditionExpression": same_slot,
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}})
        if member_record is not None and member_record.get("connId") == conn_id:
            items.append({"Update": {
                "TableName": store.settings.members_table, "Key": {"id": member_id},
                "UpdateExpression": "REMOVE connId", "ConditionExpression": "connId = :conn",
                "ExpressionAttributeValues": {":conn": conn_id}}})
    else:
        remaining = len(session.members) - 1
        guard = f"{same_slot} AND size(#members) = :n"
        guarded = {"Key": {"id": session.id}, "TableName": store.settings.sessions_table,
                   "ConditionExpression": guard, "ExpressionAttributeNames": names,
                   "ExpressionAttributeValues": {**values, ":n": len(session.members)}}
        if remaining == 0:
            items.append({"Delete": guarded})
        else:
            items.append({"Update": {**guarded, "UpdateExpression": f"REMOVE {slot}"}})
        if member_record is not None:
            items.append(store.delete_member(member_id))
        items.extend(_pointer_write(store, session, remaining))
    store.transact(items)


def end_session(store: Store, session: Session, expired_before: int | None = None) -> None:
    """Delete the session and its members' records; the stream tells the connected members.

    With ``expired_before``, only if the session has not been refreshed since it expired.
    """
    condition = "attribute_exists(#id)"
    values: dict[str, Any] = {}
    if expired_before is not None:
        condition += " AND expireAfter < :now"
        values[":now"] = expired_before
    delete: dict[str, Any] = {"TableName": store.settings.sessions_table, "Key": {"id": session.id},
                              "ConditionExpression": condition, "ExpressionAttributeNames": {"#id": "id"}}
    if values:
        delete["ExpressionAttributeValues"] = values
    items: list[dict[str, Any]] = [{"Delete": delete}]
    for member in session.members:
        items.append(store.delete_member(member.member_id))
        if member.conn_id:
            items.append(store.delete_connection(member.conn_id))
    items.extend(_pointer_write(store, session, 0))
    store.transact(items)

"""The WebSocket API's function: $connect, $disconnect and the $default actions."""

from __future__ import annotations

import logging
from typing import Any

from . import messages
from .config import MAX_FRAME_BYTES, now_ms, now_s
from .delivery import fan_out, send_or_depart
from .departures import depart, end_session
from .inbound import BadRequest, EndSession, Heartbeat, SendMessage, parse_action, parse_connect_query
from .matchmaking import Refused, join
from .model import Session, open_pointer_id
from .postman import DeliveryFailed, Postman, endpoint_from_event
from .store import Busy, Store, default_store, expires_in, retry_on_contention

log = logging.getLogger(__name__)


def _response(status: int, body: str = "") -> dict[str, Any]:
    return {"statusCode": status, "body": body}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    route = event["requestContext"]["routeKey"]
    conn_id = event["requestContext"]["connectionId"]
    store = default_store()
    if route == "$connect":
        return _connect(store, event, conn_id)
    if route == "$disconnect":
        depart(store, conn_id)
        return _response(200)
    return _act(store, Postman(endpoint_from_event(event)), conn_id, event.get("body"))


def _connect(store: Store, event: dict[str, Any], conn_id: str) -> dict[str, Any]:
    try:
        request = parse_connect_query(event.get("queryStringParameters"))
        joined = join(store, request, conn_id)
    except BadRequest as exc:
        return _response(400, exc.reason)
    except Refused as exc:
        return _response(exc.status, exc.reason)
    except Busy as exc:
        return _response(503, str(exc))
    log.info("connection %s joined session %s as member %s", conn_id, joined.session_id, joined.member_id)
    return _response(200)


class _Caller:
    """The member behind a connection, as the store sees it now."""

    def __init__(self, store: Store, conn_id: str) -> None:
        connection = store.connection(conn_id)
        self.connection = connection
        self.session: Session | None = store.session(connection["sessionId"]) if connection else None
        num = self.session.member_num_by_connection(conn_id) if self.session else None
        self.member_num = num
        self.member_id = self.session.members[num].member_id if self.session and num is not None else None

    @property
    def valid(self) -> bool:
        return self.member_num is not None


def _act(store: Store, postman: Postman, conn_id: str, body: str | None) -> dict[str, Any]:
    try:
        action = parse_action(body)
    except BadRequest as exc:
        send_or_depart(store, postman, conn_id, [messages.error(exc.reason)])
        return _response(400, exc.reason)
    caller = _Caller(store, conn_id)
    if not caller.valid:
        send_or_depart(store, postman, conn_id, [messages.invalid_connection()])
        return _response(410, "connection has no live session")
    if isinstance(action, SendMessage):
        return _send_message(store, postman, conn_id, caller, action)
    if isinstance(action, Heartbeat):
        return _heartbeat(store, postman, conn_id, caller, action)
    assert isinstance(action, EndSession)
    return _end_session(store, postman, conn_id)


def _send_message(store: Store, postman: Postman, conn_id: str, caller: _Caller, action: SendMessage
                  ) -> dict[str, Any]:
    session = caller.session
    assert session is not None and caller.member_num is not None
    sent_at = now_ms()
    frame = [messages.message(action.payload, sent_at, caller.member_num, action.pinned)]
    size = len(messages.encode(frame))
    if size > MAX_FRAME_BYTES:
        reason = (f"payload too large: the MESSAGE frame would be {size} bytes, over the "
                  f"{MAX_FRAME_BYTES}-byte WebSocket message limit")
        send_or_depart(store, postman, conn_id, [messages.error(reason)])
        return _response(413, reason)
    if action.pinned and not _pin(store, session.id, action.payload, sent_at, caller.member_num):
        send_or_depart(store, postman, conn_id, [messages.invalid_connection()])
        return _response(410, "session ended")
    failures = fan_out([m.conn_id for _, m in session.connected_members()],
                       lambda conn: send_or_depart(store, postman, conn, frame))
    unexpected = [error for _, error in failures if not isinstance(error, DeliveryFailed)]
    if unexpected:
        raise unexpected[0]
    failed = [str(error) for _, error in failures]
    if failed:
        log.warning("MESSAGE from %s not delivered to: %s", conn_id, "; ".join(failed))
    return _response(200)


def _pin(store: Store, session_id: str, payload: str, sent_at: int, member_num: int) -> bool:
    """Store the pinned message unless a newer one is there; False if the session is gone."""
    stored = store.write(
        "update_item", TableName=store.settings.sessions_table, Key={"id": session_id},
        UpdateExpression="SET pinnedMessage = :p",
        ConditionExpression="attribute_exists(#id) AND (attribute_not_exists(pinnedMessage) "
                            "OR pinnedMessage.#time <= :t)",
        ExpressionAttributeNames={"#id": "id", "#time": "time"},
        ExpressionAttributeValues={":p": {"payload": payload, "time": sent_at, "memberNum": member_num},
                                   ":t": sent_at})
    return stored or store.session(session_id) is not None


def _due(item: dict[str, Any] | None, expiry: int) -> bool:
    """Only push an expiry once half of it is used: keeps writes, and the sessions stream, quiet
    under frequent heartbeats."""
    return item is not None and int(item.get("expireAfter", 0)) - now_s() < expiry // 2


def _push_expiry(store: Store, table: str, key: str, expiry: int) -> None:
    store.write("update_item", TableName=table, Key={"id": key}, UpdateExpression="SET expireAfter = :exp",
                ConditionExpression="attribute_exists(#id)", ExpressionAttributeNames={"#id": "id"},
                ExpressionAttributeValues={":exp": expires_in(expiry)})


def _refresh_expiry(store: Store, caller: _Caller, conn_id: str) -> None:
    session = caller.session
    assert session is not None and caller.member_id is not None
    settings = store.settings
    if _due(caller.connection, settings.connection_expiry):
        _push_expiry(store, settings.connections_table, conn_id, settings.connection_expiry)
    if _due(store.member(caller.member_id), settings.member_expiry):
        _push_expiry(store, settings.members_table, caller.member_id, settings.member_expiry)
    if _due({"expireAfter": session.expire_after}, settings.session_expiry):
        _push_expiry(store, settings.sessions_table, session.id, settings.session_expiry)
        if not session.is_private and not session.started:
            # A waiting public session must stay findable as long as it lives.
            store.write("update_item", TableName=settings.sessions_table,
                        Key={"id": open_pointer_id(session.type, session.target_num_members)},
                        UpdateExpression="SET expireAfter = :exp", ConditionExpression="openSessionId = :sid",
                        ExpressionAttributeValues={":exp": expires_in(settings.session_expiry),
                                                   ":sid": session.id})


def _heartbeat(store: Store, postman: Postman, conn_id: str, caller: _Caller, action: Heartbeat
               ) -> dict[str, Any]:
    session = caller.session
    assert session is not None and caller.member_num is not None and caller.member_id is not None
    _refresh_expiry(store, caller, conn_id)
    frame = [messages.heartbeat()]
    if "CONNECTION" in action.waiting_for:
        frame.append(messages.connection(caller.member_id))
    if "PRIVATE_SESSION_PENDING" in action.waiting_for and session.is_private and not session.started:
        frame.append(messages.private_session_pending(session.id, session.target_num_members))
    if "SESSION_CONNECT" in action.waiting_for and session.started:
        frame.append(messages.session_connect(session.type, session.id, caller.member_num, session.presence,
                                              session.pinned_message))
    pinned = session.pinned_message
    if action.incl_messages_after is not None and pinned and pinned["time"] > action.incl_messages_after:
        frame.append(messages.message(pinned["payload"], pinned["time"], pinned["memberNum"], pinned=True))
    send_or_depart(store, postman, conn_id, frame)
    return _response(200)


def _end_session(store: Store, postman: Postman, conn_id: str) -> dict[str, Any]:
    def attempt() -> bool:
        caller = _Caller(store, conn_id)
        if caller.session is None or not caller.valid:
            return False
        end_session(store, caller.session)
        return True

    if not retry_on_contention(attempt):
        send_or_depart(store, postman, conn_id, [messages.invalid_connection()])
        return _response(410, "session already ended")
    return _response(200)

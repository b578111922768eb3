"""The relay -> client messages of the protocol. Every frame is a JSON array of them."""

from __future__ import annotations

import json
from typing import Any

Message = dict[str, Any]


def encode(messages: list[Message]) -> bytes:
    return json.dumps(messages, separators=(",", ":"), ensure_ascii=False).encode()


def connection(member_id: str) -> Message:
    return {"type": "CONNECTION", "memberId": member_id}


def private_session_pending(session_id: str, target_num_members: int) -> Message:
    return {
        "type": "PRIVATE_SESSION_PENDING",
        "sessionId": session_id,
        "targetNumMembers": target_num_members,
    }


def session_connect(
    session_type: str,
    session_id: str,
    member_num: int,
    member_presence: list[bool],
    pinned_message: dict[str, Any] | None,
) -> Message:
    message: Message = {
        "type": "SESSION_CONNECT",
        "sessionType": session_type,
        "sessionId": session_id,
        "memberNum": member_num,
        "memberPresence": member_presence,
    }
    if pinned_message is not None:
        message["pinnedMessage"] = pinned_message
    return message


def message(payload: str, time_ms: int, member_num: int, pinned: bool) -> Message:
    body: Message = {"type": "MESSAGE", "payload": payload, "time": time_ms, "memberNum": member_num}
    if pinned:
        body["pinned"] = True
    return body


def heartbeat() -> Message:
    return {"type": "HEARTBEAT"}


def member_disconnect(member_num: int) -> Message:
    return {"type": "MEMBER_DISCONNECT", "memberNum": member_num}


def member_reconnect(member_num: int) -> Message:
    return {"type": "MEMBER_RECONNECT", "memberNum": member_num}


def session_end() -> Message:
    return {"type": "SESSION_END"}


def connection_overwrite() -> Message:
    return {"type": "CONNECTION_OVERWRITE"}


def invalid_connection() -> Message:
    return {"type": "INVALID_CONNECTION"}


def error(reason: str) -> Message:
    """Protocol extension: a refused action is answered instead of silently ignored."""
    return {"type": "ERROR", "reason": reason}

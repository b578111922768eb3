"""Parsing of what clients send: the $connect query string and the $default action bodies.

Each parser returns a small typed request or raises ``BadRequest`` with a one-line reason that
says what was wrong and what would be accepted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .config import MAX_TARGET_MEMBERS

_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SESSION_TYPE_PATTERN = re.compile(r"[^\x00-\x1f\x7f]{1,64}")
WAITABLE = ("CONNECTION", "PRIVATE_SESSION_PENDING", "SESSION_CONNECT")
ACTIONS = ("END_SESSION", "HEARTBEAT", "SEND_MESSAGE")


class BadRequest(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PublicMatch:
    session_type: str
    target_num_members: int


@dataclass(frozen=True)
class HostPrivate:
    session_type: str
    target_num_members: int


@dataclass(frozen=True)
class JoinPrivate:
    session_type: str
    session_id: str


@dataclass(frozen=True)
class Rejoin:
    member_id: str
    session_id: str | None


ConnectRequest = PublicMatch | HostPrivate | JoinPrivate | Rejoin


@dataclass(frozen=True)
class SendMessage:
    payload: str
    pinned: bool


@dataclass(frozen=True)
class Heartbeat:
    incl_messages_after: int | None
    waiting_for: frozenset[str]


@dataclass(frozen=True)
class EndSession:
    pass


Action = SendMessage | Heartbeat | EndSession


def _id(params: dict[str, str], name: str) -> str:
    value = params[name]
    if not _ID_PATTERN.fullmatch(value):
        raise BadRequest(f"{name}={value!r} is not an id: expected 1-64 characters of A-Z a-z 0-9 _ -")
    return value


def _target(params: dict[str, str]) -> int:
    raw = params.get("targetNumMembers")
    if raw is None:
        raise BadRequest("targetNumMembers is missing: add targetNumMembers=N (a whole number from 2 up)")
    if not raw.isdigit() or not 2 <= int(raw) <= MAX_TARGET_MEMBERS:
        raise BadRequest(f"targetNumMembers={raw!r} must be a whole number from 2 to {MAX_TARGET_MEMBERS}")
    return int(raw)


def parse_connect_query(params: dict[str, str] | None) -> ConnectRequest:
    params = params or {}
    if "memberId" in params:
        clashing = sorted({"sessionType", "targetNumMembers", "private"} & params.keys())
        if clashing:
            raise BadRequest(
                f"memberId rejoins an existing session and cannot be combined with {', '.join(clashing)}"
            )
        session_id = _id(params, "sessionId") if "sessionId" in params else None
        return Rejoin(_id(params, "memberId"), session_id)

    session_type = params.get("sessionType")
    if session_type is None:
        raise BadRequest("sessionType is missing: connect with sessionType=T&targetNumMembers=N, "
                         "sessionType=T&sessionId=S, or memberId=M to rejoin")
    if not _SESSION_TYPE_PATTERN.fullmatch(session_type):
        raise BadRequest("sessionType must be 1-64 characters with no control characters")

    private = params.get("private")
    if private not in (None, "true", "false"):
        raise BadRequest(f"private={private!r} must be 'true' or 'false'")

    if "sessionId" in params:
        if private is not None:
            raise BadRequest("private and sessionId exclude each other: host with private=true, "
                             "or join with sessionId=S")
        if "targetNumMembers" in params:
            raise BadRequest("joining a private session takes no targetNumMembers: its host chose it")
        return JoinPrivate(session_type, _id(params, "sessionId"))

    target = _target(params)
    if private == "true":
        return HostPrivate(session_type, target)
    return PublicMatch(session_type, target)


def parse_action(body: str | None) -> Action:
    if not body:
        raise BadRequest("empty frame: send a JSON object such as {\"action\":\"HEARTBEAT\"}")
    try:
        data: Any = json.loads(body)
    except ValueError as exc:
        raise BadRequest(f"frame is not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(data, dict):
        raise BadRequest(f"frame must be a JSON object with an 'action', not a JSON {type(data).__name__}")
    action = data.get("action")
    if action == "SEND_MESSAGE":
        payload = data.get("payload")
        if not isinstance(payload, str):
            raise BadRequest("SEND_MESSAGE needs 'payload' as a string")
        pinned = data.get("pinned", False)
        if not isinstance(pinned, bool):
            raise BadRequest("SEND_MESSAGE 'pinned' must be true or false")
        return SendMessage(payload, pinned)
    if action == "HEARTBEAT":
        after = data.get("inclMessagesAfter")
        if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
            raise BadRequest("HEARTBEAT 'inclMessagesAfter' must be a whole number of ms since the epoch")
        waiting = data.get("waitingFor", [])
        if not isinstance(waiting, list) or any(w not in WAITABLE for w in waiting):
            raise BadRequest(f"HEARTBEAT 'waitingFor' must be a list drawn from {', '.join(WAITABLE)}")
        return Heartbeat(after, frozenset(waiting))
    if action == "END_SESSION":
        return EndSession()
    raise BadRequest(f"unknown action {action!r}: expected one of {', '.join(ACTIONS)}")

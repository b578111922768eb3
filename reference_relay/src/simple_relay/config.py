"""Settings read from the function's environment, which the SAM template sets."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

# API Gateway's limit on one WebSocket message, which PostToConnection enforces too.
MAX_FRAME_BYTES = 128 * 1024
# Keeps a session item (and an END_SESSION transaction: 1 + 2 per member) well inside
# DynamoDB's 100-item transaction limit.
MAX_TARGET_MEMBERS = 32


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise RuntimeError(f"environment variable {name}={raw!r} must be a whole number of seconds") from None


@dataclass(frozen=True)
class Settings:
    sessions_table: str
    connections_table: str
    members_table: str
    connection_expiry: int
    member_expiry: int
    session_expiry: int
    delivery_record_expiry: int
    cleanup_rule_name: str
    websocket_api_endpoint: str

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            sessions_table=env.get("SESSIONS_TABLE", "sessions"),
            connections_table=env.get("CONNECTIONS_TABLE", "connections"),
            members_table=env.get("MEMBERS_TABLE", "members"),
            connection_expiry=_int_env("CONNECTION_EXPIRY_SECONDS", 600),
            member_expiry=_int_env("MEMBER_EXPIRY_SECONDS", 3600),
            session_expiry=_int_env("SESSION_EXPIRY_SECONDS", 7200),
            delivery_record_expiry=_int_env("DELIVERY_RECORD_EXPIRY_SECONDS", 7200),
            cleanup_rule_name=env.get("CLEANUP_RULE_NAME", ""),
            websocket_api_endpoint=env.get("WEBSOCKET_API_ENDPOINT", ""),
        )


def now_ms() -> int:
    return int(time.time() * 1000)


def now_s() -> int:
    return int(time.time())

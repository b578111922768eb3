"""The HTTPS API's function: ``GET /ping`` and ``GET /notifyDisconnect/{memberId}``."""

from __future__ import annotations

from typing import Any

from .postman import Postman
from .store import default_store


def _text(status: int, body: str) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"content-type": "text/plain"}, "body": body}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    route = event.get("routeKey", "")
    if route == "GET /ping":
        return _text(200, "pong")
    if route == "GET /notifyDisconnect/{memberId}":
        member_id = (event.get("pathParameters") or {}).get("memberId", "")
        store = default_store()
        member = store.member(member_id) if member_id else None
        if member and member.get("connId"):
            # Closing the socket makes API Gateway run $disconnect, which does the bookkeeping.
            Postman(store.settings.websocket_api_endpoint).close(member["connId"])
        return _text(200, "ok")
    return _text(404, f"no route for {route!r}")

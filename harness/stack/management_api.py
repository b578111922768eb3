"""API Gateway's management API (``@connections``) over HTTP, for boto3's apigatewaymanagementapi.

The HTTP layer only; what a connection is lives behind the ``Connections`` interface, which the
local WebSocket gateway implements for real sockets and ``RecordingConnections`` implements for
tests. It listens over plain HTTP, or over HTTPS with the stack's local CA (the endpoint the
events' ``domainName`` names). Answers as API Gateway does: 410 GoneException for an unknown or
closed connection, 413 PayloadTooLargeException over 128 KB.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import unquote

from ..http_server import LoopbackHTTPServer

MAX_POST_BYTES = 128 * 1024


class Throttled(Exception):
    """Raised by ``Connections.post`` to answer 429 LimitExceededException, as API Gateway does."""


class Connections(Protocol):
    def post(self, conn_id: str, data: bytes) -> bool:
        """Queue ``data`` as one message to the socket; False if there is no such open socket."""

    def describe(self, conn_id: str) -> dict[str, Any] | None:
        """GetConnection's body, or None if there is no such open socket."""

    def close(self, conn_id: str) -> bool:
        """Close the socket; False if there is no such open socket."""


class _Handler(BaseHTTPRequestHandler):
    server: ManagementApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _conn_id(self) -> str | None:
        marker = "/@connections/"
        path = self.path.split("?", 1)[0]
        if marker not in path:
            return None
        return unquote(path.split(marker, 1)[1])

    def _reply(self, status: int, body: dict[str, Any] | None = None, error: str | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        if error:
            self.send_header("x-amzn-ErrorType", error)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _gone(self, conn_id: str) -> None:
        self._reply(410, {"message": f"connection {conn_id} is gone"}, "GoneException")

    def _route(self, action: Callable[[str], None]) -> None:
        conn_id = self._conn_id()
        if conn_id is None:
            self._reply(404, {"message": f"no route for {self.command} {self.path}"}, "NotFoundException")
            return
        action(conn_id)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)

        def post(conn_id: str) -> None:
            if len(data) > MAX_POST_BYTES:
                self._reply(413, {"message": f"{len(data)} bytes is over the {MAX_POST_BYTES}-byte limit"},
                            "PayloadTooLargeException")
                return
            try:
                delivered = self.server.connections.post(conn_id, data)
            except Throttled:
                self._reply(429, {"message": "Rate exceeded"}, "LimitExceededException")
                return
            if delivered:
                self._reply(200)
            else:
                self._gone(conn_id)

        self._route(post)

    def do_GET(self) -> None:
        def get(conn_id: str) -> None:
            info = self.server.connections.describe(conn_id)
            if info is None:
                self._gone(conn_id)
            else:
                self._reply(200, info)

        self._route(get)

    def do_DELETE(self) -> None:
        def delete(conn_id: str) -> None:
            if self.server.connections.close(conn_id):
                self._reply(204)
            else:
                self._gone(conn_id)

        self._route(delete)


class ManagementApiServer(LoopbackHTTPServer):
    def __init__(self, connections: Connections, host: str = "127.0.0.1", port: int = 0,
                 tls: ssl.SSLContext | None = None) -> None:
        """Over HTTPS with ``tls`` (see ``local_ca``): the endpoint ``https://{domainName}/{stage}``."""
        super().__init__(_Handler, host, port, "management API (HTTPS)" if tls else "management API", tls=tls)
        self.connections = connections


def describe_connection(connected_at: float, last_active_at: float, source_ip: str, user_agent: str
                        ) -> dict[str, Any]:
    def stamp(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")

    # The wire names, as botocore's model spells them (it maps them to ConnectedAt, Identity, ...).
    return {"connectedAt": stamp(connected_at), "lastActiveAt": stamp(last_active_at),
            "identity": {"sourceIp": source_ip, "userAgent": user_agent}}


class RecordingConnections:
    """Connections that only record what was sent to them; for tests of handlers without sockets."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.frames: dict[str, list[list[dict[str, Any]]]] = {}
        self.closed: set[str] = set()
        self.throttled: set[str] = set()
        self._opened_at: dict[str, float] = {}

    def open(self, conn_id: str) -> None:
        with self._lock:
            self.frames.setdefault(conn_id, [])
            self._opened_at[conn_id] = time.time()

    def drop(self, conn_id: str) -> None:
        """The socket went away without the relay asking (so sends now get 410)."""
        with self._lock:
            self.closed.add(conn_id)

    def post(self, conn_id: str, data: bytes) -> bool:
        with self._lock:
            if conn_id in self.throttled:
                raise Throttled(conn_id)
            if conn_id not in self.frames or conn_id in self.closed:
                return False
            self.frames[conn_id].append(json.loads(data))
            self._lock.notify_all()
            return True

    def describe(self, conn_id: str) -> dict[str, Any] | None:
        with self._lock:
            if conn_id not in self.frames or conn_id in self.closed:
                return None
            opened = self._opened_at[conn_id]
            return describe_connection(opened, opened, "127.0.0.1", "recording")

    def close(self, conn_id: str) -> bool:
        with self._lock:
            if conn_id not in self.frames or conn_id in self.closed:
                return False
            self.closed.add(conn_id)
            self._lock.notify_all()
            return True

    def messages(self, conn_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for frame in self.frames.get(conn_id, []) for m in frame]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        with self._lock:
            return self._lock.wait_for(predicate, timeout)

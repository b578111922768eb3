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


def _answer(status: int, body: dict[str, Any] | None = None, error: str | None = None
            ) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json"}
    if error:
        headers["x-amzn-ErrorType"] = error
    return status, headers, json.dumps(body).encode() if body is not None else b""


def answer(connections: Connections, method: str, path: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """API Gateway's answer to one ``@connections`` request: status, headers, body. The HTTP
    listeners and the functions' worker processes (``python_worker.ConnectionsShortcut``) both
    answer through here."""
    marker = "/@connections/"
    path = path.split("?", 1)[0]
    if marker not in path or method not in ("POST", "GET", "DELETE"):
        return _answer(404, {"message": f"no route for {method} {path}"}, "NotFoundException")
    conn_id = unquote(path.split(marker, 1)[1])
    gone = _answer(410, {"message": f"connection {conn_id} is gone"}, "GoneException")
    if method == "POST":
        if len(data) > MAX_POST_BYTES:
            return _answer(413, {"message": f"{len(data)} bytes is over the {MAX_POST_BYTES}-byte limit"},
                           "PayloadTooLargeException")
        try:
            delivered = connections.post(conn_id, data)
        except Throttled:
            return _answer(429, {"message": "Rate exceeded"}, "LimitExceededException")
        return _answer(200) if delivered else gone
    if method == "GET":
        info = connections.describe(conn_id)
        return gone if info is None else _answer(200, info)
    return _answer(204) if connections.close(conn_id) else gone


class _Handler(BaseHTTPRequestHandler):
    server: ManagementApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        status, headers, body = answer(self.server.connections, self.command, self.path, data)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET = do_DELETE = _serve


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

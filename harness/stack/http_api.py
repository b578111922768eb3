"""The local HTTP API: requests matched to the template's ``HttpApi`` routes, payload format 2.0."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..http_server import LoopbackHTTPServer
from .events import http_event
from .logs import StackLog
from .runtime import Function


@dataclass(frozen=True)
class HttpRoute:
    method: str
    path: str  # as in the template: /notifyDisconnect/{memberId}
    function: Function

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.method not in ("ANY", method):
            return None
        pattern = re.sub(r"\\\{(\w+)(?:\\\+)?\\\}", lambda m: f"(?P<{m.group(1)}>[^/]+)", re.escape(self.path))
        found = re.fullmatch(pattern, path)
        return {k: unquote(v) for k, v in found.groupdict().items()} if found else None


class _Handler(BaseHTTPRequestHandler):
    server: HttpApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        stage_prefix = f"/{self.server.stage}"
        if path.startswith(stage_prefix + "/"):
            path = path[len(stage_prefix):]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        for route in self.server.routes:
            params = route.match(self.command, path)
            if params is None:
                continue
            event = http_event(self.command, route.path, path, path_parameters=params,
                               stage=self.server.stage, domain=self.headers.get("Host", "127.0.0.1"))
            event["rawQueryString"] = parts.query
            if parts.query:
                event["queryStringParameters"] = dict(parse_qsl(parts.query, keep_blank_values=True))
            event["headers"] = {k.lower(): v for k, v in self.headers.items()}
            if body:
                event["body"] = body.decode("utf-8", "replace")
            invocation = route.function.invoke(event)
            if invocation.failed:
                self._reply(500, {"content-type": "application/json"}, b'{"message":"Internal Server Error"}')
            else:
                self._reply(*_response(invocation.payload))
            return
        self._reply(404, {"content-type": "application/json"}, b'{"message":"Not Found"}')

    def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve


def _response(payload: Any) -> tuple[int, dict[str, str], bytes]:
    """Payload format 2.0: a dict with statusCode is a response; anything else is a 200 JSON body."""
    if isinstance(payload, dict) and "statusCode" in payload:
        body = payload.get("body") or ""
        if payload.get("isBase64Encoded"):
            data = base64.b64decode(body)
        else:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        headers = {k: str(v) for k, v in (payload.get("headers") or {}).items()}
        return int(payload["statusCode"]), headers, data
    return 200, {"content-type": "application/json"}, json.dumps(payload).encode()


class HttpApiServer(LoopbackHTTPServer):
    def __init__(self, routes: list[HttpRoute], stage: str, log: StackLog, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        super().__init__(_Handler, host, port, "HTTP API")
        self.routes = routes
        self.stage = stage
        self.log = log

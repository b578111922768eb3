"""The local API Gateway WebSocket API: real sockets in, API-Gateway-shaped Lambda events out.

It also implements the ``Connections`` interface behind the management API, so a relay's
``PostToConnection`` / ``DeleteConnection`` reach these sockets. Differences from API Gateway,
plainly: the 32 KB frame quota is not enforced (the 128 KB message quota is, with close 1009);
messages from one socket are handled one at a time, in arrival order; route responses
(two-way routes) are not sent back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..loop_thread import LoopThread
from .events import websocket_event
from .logs import StackLog
from .management_api import describe_connection
from .ports import PortInUse
from .runtime import Function

_ID_ALPHABET = string.ascii_letters + string.digits


def new_connection_id() -> str:
    """Shaped like API Gateway's: 16 characters ending in '=' (so it must be URL-encoded)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(15)) + "="


@dataclass(frozen=True)
class Quotas:
    """API Gateway's WebSocket quotas, as defaults you can change."""

    max_message_bytes: int = 128 * 1024
    idle_timeout: float = 600.0
    max_connection_duration: float = 7200.0


@dataclass
class _Live:
    conn_id: str
    websocket: ServerConnection
    source_ip: str
    user_agent: str
    connected_at: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.monotonic)
    opened: float = field(default_factory=time.monotonic)


def select_route(expression: str, body: str | bytes, routes: dict[str, Function]) -> str | None:
    """API Gateway's route selection for ``$request.body.<path>``, falling back to ``$default``."""
    prefix = "$request.body."
    if expression.startswith(prefix) and isinstance(body, str):
        try:
            value: Any = json.loads(body)
        except ValueError:
            value = None
        for part in expression[len(prefix):].split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str) and value in routes:
            return value
    return "$default" if "$default" in routes else None


class WebSocketGateway:
    def __init__(self, routes: dict[str, Function], selection_expression: str, *, stage: str, log: StackLog,
                 quotas: Quotas | None = None, api_id: str = "local", callback_domain: str | None = None) -> None:
        """``callback_domain``: the events' ``requestContext.domainName``, where
        ``https://{domainName}/{stage}`` reaches ``@connections`` (on AWS one execute-api host serves
        both; here the HTTPS management listener's ``host:port``). Default: this socket's own."""
        self.routes = routes
        self.callback_domain = callback_domain
        self.selection_expression = selection_expression
        self.stage = stage
        self.api_id = api_id
        self.log = log
        self.quotas = quotas or Quotas()
        self.server: Server | None = None
        self._live: dict[str, _Live] = {}
        self._runner: LoopThread | None = None
        self._closing = False
        self._closing_tasks: set[asyncio.Task] = set()
        self.host = ""
        self.port = 0

    # ---- lifecycle ------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    @property
    def domain(self) -> str:
        if self.callback_domain:
            return self.callback_domain
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self, host: str = "127.0.0.1", port: int = 0) -> WebSocketGateway:
        self._runner = LoopThread("websocket-api")

        async def listen() -> Server:
            try:
                return await serve(self._session, host, port, process_request=self._handshake, ping_interval=None,
                                   max_size=self.quotas.max_message_bytes, max_queue=64, close_timeout=2)
            except OSError as exc:
                raise PortInUse(f"WebSocket API: cannot listen on {host}:{port} ({exc.strerror}); "
                                "pick another --port or stop what holds it") from None

        self.server = self._runner.start(listen)
        self.host, self.port = next(iter(self.server.sockets)).getsockname()[:2]
        return self

    def stop(self) -> None:
        """Close every socket (1001) without invoking anything more: no backlog, no $disconnect."""
        if self._runner is None or self.server is None:
            return
        self._closing = True

        async def shutdown() -> None:
            assert self.server is not None
            self.server.close()
            try:
                await asyncio.wait_for(self.server.wait_closed(), timeout=5)
            except TimeoutError:
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()

        self._runner.stop(shutdown())
        self.server = None

    # ---- sockets --------------------------------------------------------------------------
    def _event(self, route_key: str, conn_id: str, **kwargs: Any) -> dict[str, Any]:
        return websocket_event(route_key, conn_id, domain=self.domain, stage=self.stage, api_id=self.api_id,
                               **kwargs)

    async def _invoke(self, route_key: str, event: dict[str, Any]) -> Any:
        function = self.routes[route_key]
        return await asyncio.get_running_loop().run_in_executor(None, function.invoke, event)

    async def _handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        conn_id = new_connection_id()
        connection.conn_id = conn_id  # type: ignore[attr-defined]
        if "$connect" not in self.routes:
            return None
        _, _, raw_query = request.path.partition("?")
        pairs = parse_qsl(raw_query, keep_blank_values=True)
        headers = {k: v for k, v in request.headers.raw_items()}
        source_ip = connection.remote_address[0] if connection.remote_address else "127.0.0.1"
        event = self._event("$connect", conn_id, query=dict(pairs), headers=headers, source_ip=source_ip)
        if pairs:
            multi: dict[str, list[str]] = {}
            for key, value in pairs:
                multi.setdefault(key, []).append(value)
            event["multiValueQueryStringParameters"] = multi
        invocation = await self._invoke("$connect", event)
        if invocation.failed:
            self.log.line("websocket", f"{conn_id} $connect failed: {invocation.error.get('errorType')}")
            return connection.respond(500, "Internal server error\n")
        payload = invocation.payload if isinstance(invocation.payload, dict) else {}
        status = int(payload.get("statusCode", 200))
        if not 200 <= status < 300:
            self.log.line("websocket", f"{conn_id} $connect refused with {status}: {payload.get('body', '')}")
            return connection.respond(status, f"{payload.get('body') or 'Forbidden'}\n")
        return None

    async def _session(self, websocket: ServerConnection) -> None:
        conn_id: str = websocket.conn_id  # type: ignore[attr-defined]
        source_ip = websocket.remote_address[0] if websocket.remote_address else "127.0.0.1"
        user_agent = websocket.request.headers.get("User-Agent", "") if websocket.request else ""
        live = _Live(conn_id, websocket, source_ip, user_agent)
        self._live[conn_id] = live
        self.log.line("websocket", f"{conn_id} connected")
        watchdog = asyncio.create_task(self._watch(live))
        try:
            async for message in websocket:
                live.last_active = time.monotonic()
                await self._dispatch(live, message)
        except ConnectionClosed:
            pass
        finally:
            watchdog.cancel()
            self._live.pop(conn_id, None)
            code = websocket.close_code if websocket.close_code is not None else 1006
            reason = websocket.close_reason or ""
            self.log.line("websocket", f"{conn_id} closed with {code} {reason}".rstrip())
            if "$disconnect" in self.routes and not self._closing:
                event = self._event("$disconnect", conn_id)
                event["requestContext"].update(disconnectStatusCode=code, disconnectReason=reason)
                await self._invoke("$disconnect", event)

    async def _dispatch(self, live: _Live, message: str | bytes) -> None:
        if self._closing:
            return
        route_key = select_route(self.selection_expression, message, self.routes)
        if route_key is None:
            await self._error_frame(live, "Forbidden", "")
            return
        if isinstance(message, bytes):
            event = self._event(route_key, live.conn_id, body=base64.b64encode(message).decode())
            event["isBase64Encoded"] = True
        else:
            event = self._event(route_key, live.conn_id, body=message)
        invocation = await self._invoke(route_key, event)
        if invocation.failed:
            await self._error_frame(live, "Internal server error", invocation.request_id)

    async def _error_frame(self, live: _Live, message: str, request_id: str) -> None:
        frame = {"message": message, "connectionId": live.conn_id, "requestId": request_id}
        with contextlib.suppress(ConnectionClosed):
            await live.websocket.send(json.dumps(frame))

    async def _watch(self, live: _Live) -> None:
        """Close idle and over-long connections with 1001, as API Gateway does."""
        while True:
            now = time.monotonic()
            idle_left = live.last_active + self.quotas.idle_timeout - now
            age_left = live.opened + self.quotas.max_connection_duration - now
            if idle_left <= 0 or age_left <= 0:
                reason = "Going away" if idle_left <= 0 else "Connection duration exceeded"
                self.log.line("websocket", f"{live.conn_id} closed by the gateway: {reason}")
                await live.websocket.close(1001, reason)
                return
            await asyncio.sleep(min(idle_left, age_left))

    # ---- the Connections interface (called from handler threads) --------------------------
    def _call(self, coroutine: Any) -> Any:
        assert self._runner is not None
        return self._runner.call(coroutine)

    def post(self, conn_id: str, data: bytes) -> bool:
        async def send() -> bool:
            live = self._live.get(conn_id)
            if live is None:
                return False
            try:
                await live.websocket.send(data.decode("utf-8"))
            except UnicodeDecodeError:
                await live.websocket.send(data)
            except ConnectionClosed:
                return False
            return True

        return self._call(send())

    def describe(self, conn_id: str) -> dict[str, Any] | None:
        live = self._live.get(conn_id)
        if live is None:
            return None
        last_active = live.connected_at + (live.last_active - live.opened)
        return describe_connection(live.connected_at, last_active, live.source_ip, live.user_agent)

    def close(self, conn_id: str) -> bool:
        async def close() -> bool:
            live = self._live.get(conn_id)
            if live is None:
                return False
            task = asyncio.get_running_loop().create_task(live.websocket.close(1000, ""))
            self._closing_tasks.add(task)
            task.add_done_callback(self._closing_tasks.discard)
            return True

        return self._call(close())

"""The local API Gateway WebSocket API: real sockets in, API-Gateway-shaped Lambda events out.

It also implements the ``Connections`` interface behind the management API, so a relay's
``PostToConnection`` / ``DeleteConnection`` reach these sockets. The rules it keeps, and where each
comes from, are README's table "What the local WebSocket API refuses, as API Gateway does":
- quotas (API Gateway's "Quotas for configuring and running a WebSocket API"): a frame over 32 KB
  or a message over 128 KB closes the socket with 1009; 10 min idle and 2 h connection close
  it with 1001; a posted message over 32 KB reaches the client in frames of at most 32 KB;
- a binary frame closes the socket with 1003, nothing invoked ("Binary media types for WebSocket
  APIs": API Gateway does not support binary frames in incoming payloads);
- each message is invoked as it arrives, without waiting for the socket's previous message to be
  handled (API Gateway promises no order); a message still waiting for a free function instance
  when its socket closes is dropped, never invoked;
- ``$connect``'s ``Sec-WebSocket-Protocol`` response header is the handshake's subprotocol
  ("Set up a $connect route that requires a WebSocket subprotocol").
Two-way routes, authorizers and non-proxy integrations are refused when the stack starts
(``websocket_template``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import string
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State

from ..loop_thread import LoopThread
from .events import websocket_event
from .logs import StackLog
from .management_api import describe_connection
from .ports import PortInUse
from .runtime import Function
from .websocket_template import parse_selection, selection_key

_ID_ALPHABET = string.ascii_letters + string.digits


def new_connection_id() -> str:
    """Shaped like API Gateway's: 16 characters ending in '=' (so it must be URL-encoded)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(15)) + "="


# How long a handshake may take, its $connect invocation included: API Gateway's integration timeout
# (29 s) and a margin; websockets' default (10 s) dropped handshakes whose $connect ran as long as a
# 10 s function timeout (a store outage's retries) without any HTTP answer.
_HANDSHAKE_TIMEOUT_S = 35.0


@dataclass(frozen=True)
class Quotas:
    """API Gateway's WebSocket quotas (bytes and seconds), as defaults you can change. Source: API
    Gateway's "Quotas for configuring and running a WebSocket API": WebSocket frame size 32 KB,
    message payload size 128 KB, idle connection timeout 10 minutes, connection duration 2 hours."""

    max_message_bytes: int = 128 * 1024
    idle_timeout: float = 600.0
    max_connection_duration: float = 7200.0
    max_frame_bytes: int = 32 * 1024


@dataclass
class _Live:
    conn_id: str
    websocket: ServerConnection
    source_ip: str
    user_agent: str
    connected_at: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.monotonic)
    opened: float = field(default_factory=time.monotonic)
    closed: bool = False
    waiting: int = 0  # messages read from the socket that wait for a free function instance
    dispatches: set[asyncio.Task] = field(default_factory=set)


def select_route(expression: str, body: str | bytes, routes: dict[str, Function]) -> str | None:
    """API Gateway's route selection: the route whose key is what the expression gives for the
    message body (``websocket_template.parse_selection``), else ``$default``, else None. A body that
    is not JSON, or has no value at a path the expression reads, goes to ``$default``."""
    selection = parse_selection(expression)
    if selection is not None and isinstance(body, str):
        needs_body = any(isinstance(part, list) for part in selection)
        try:
            value: Any = json.loads(body) if needs_body else None
        except ValueError:
            value = None
        key = selection_key(selection, value) if value is not None or not needs_body else None
        if key is not None and key in routes:
            return key
    return "$default" if "$default" in routes else None


def text_fragments(text: str, limit: int) -> list[str]:
    """``text`` cut into pieces whose UTF-8 encodings are at most ``limit`` bytes, never inside a
    character (as API Gateway sends a posted message over the 32 KB frame quota: in frames)."""
    data = text.encode("utf-8")
    pieces = []
    start = 0
    while start < len(data):
        end = min(start + limit, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a continuation byte: back off
            end -= 1
        pieces.append(data[start:end].decode("utf-8"))
        start = end
    return pieces or [""]


class WebSocketGateway:
    def __init__(self, routes: dict[str, Function], selection_expression: str, *, stage: str, log: StackLog,
                 quotas: Quotas | None = None, api_id: str = "local", callback_domain: str | None = None,
                 concurrency: int = 16) -> None:
        """``callback_domain``: the events' ``requestContext.domainName``, where
        ``https://{domainName}/{stage}`` reaches ``@connections`` (on AWS one execute-api host serves
        both; here the HTTPS management listener's ``host:port``). Default: this socket's own.
        ``concurrency``: invocations of one function at a time (as ``--concurrency``); more
        messages for it wait in the gateway, and are dropped if their socket closes meanwhile."""
        self.routes = routes
        self.callback_domain = callback_domain
        self.selection_expression = selection_expression
        self.stage = stage
        self.api_id = api_id
        self.log = log
        self.quotas = quotas or Quotas()
        self.concurrency = concurrency
        self.server: Server | None = None
        self._live: dict[str, _Live] = {}
        self._runner: LoopThread | None = None
        self._closing = False
        self._closing_tasks: set[asyncio.Task] = set()
        functions = {id(f): f for f in routes.values()}
        self._executor = ThreadPoolExecutor(max_workers=max(1, concurrency * len(functions)),
                                            thread_name_prefix="websocket-invoke")
        self._slots: dict[int, asyncio.Semaphore] = {}
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
            self._slots = {key: asyncio.Semaphore(self.concurrency) for key in {id(f) for f in self.routes.values()}}
            try:
                return await serve(self._session, host, port, process_request=self._handshake,
                                   process_response=self._subprotocol, ping_interval=None,
                                   max_size=(self.quotas.max_message_bytes, self.quotas.max_frame_bytes),
                                   max_queue=64, close_timeout=2, open_timeout=_HANDSHAKE_TIMEOUT_S)
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
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.server = None

    # ---- sockets --------------------------------------------------------------------------
    def _event(self, route_key: str, conn_id: str, **kwargs: Any) -> dict[str, Any]:
        return websocket_event(route_key, conn_id, domain=self.domain, stage=self.stage, api_id=self.api_id,
                               **kwargs)

    async def _invoke(self, route_key: str, event: dict[str, Any], live: _Live | None = None,
                      queued: bool = False) -> Any:
        """Invoke the route's function once one of its ``concurrency`` slots is free. A ``queued``
        message (no slot was free when it arrived) whose socket closed while it waited is dropped:
        None, nothing invoked."""
        function = self.routes[route_key]
        arrived = time.monotonic()
        async with self._slots[id(function)]:
            if live is not None and queued:
                live.waiting -= 1
                if live.closed:
                    return None
            waited_ms = (time.monotonic() - arrived) * 1000
            return await asyncio.get_running_loop().run_in_executor(self._executor, function.invoke, event, waited_ms)

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
        answered = {str(k).lower(): v for k, v in (payload.get("headers") or {}).items()}
        connection.subprotocol_answer = answered.get("sec-websocket-protocol")  # type: ignore[attr-defined]
        return None

    def _subprotocol(self, connection: ServerConnection, request: Request, response: Response) -> None:
        """The ``Sec-WebSocket-Protocol`` header $connect answered with becomes the handshake's."""
        answer = getattr(connection, "subprotocol_answer", None)
        if response.status_code == 101 and answer:
            response.headers["Sec-WebSocket-Protocol"] = str(answer)

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
                if isinstance(message, bytes):
                    self.log.line("websocket", f"{conn_id} sent a binary frame: closed with 1003, nothing invoked")
                    await websocket.close(CloseCode.UNSUPPORTED_DATA, "Binary frames are not supported")
                    break
                self._dispatch(live, message)
        except ConnectionClosed:
            pass
        finally:
            watchdog.cancel()
            live.closed = True
            self._live.pop(conn_id, None)
            code = websocket.close_code if websocket.close_code is not None else 1006
            reason = websocket.close_reason or ""
            self.log.line("websocket", f"{conn_id} closed with {code} {reason}".rstrip())
            if live.waiting:
                self.log.line("websocket", f"{conn_id} {live.waiting} message(s) waiting for a free function "
                                           "instance dropped, not invoked: the socket closed")
            if "$disconnect" in self.routes and not self._closing:
                event = self._event("$disconnect", conn_id)
                event["requestContext"].update(disconnectStatusCode=code, disconnectReason=reason)
                await self._invoke("$disconnect", event)

    def _dispatch(self, live: _Live, message: str) -> None:
        """Start the message's invocation now, without waiting for the socket's earlier ones."""
        if self._closing:
            return
        route_key = select_route(self.selection_expression, message, self.routes)
        if route_key is None:
            self._spawn(live, self._error_frame(live, "Forbidden", ""))
            return
        queued = self._slots[id(self.routes[route_key])].locked()
        live.waiting += queued
        event = self._event(route_key, live.conn_id, body=message)
        self._spawn(live, self._route(live, route_key, event, queued))

    def _spawn(self, live: _Live, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        live.dispatches.add(task)
        task.add_done_callback(live.dispatches.discard)

    async def _route(self, live: _Live, route_key: str, event: dict[str, Any], queued: bool) -> None:
        invocation = await self._invoke(route_key, event, live, queued)
        if invocation is not None and invocation.failed:
            await self._error_frame(live, "Internal server error", invocation.request_id)

    async def _error_frame(self, live: _Live, message: str, request_id: str) -> None:
        frame = {"message": message, "connectionId": live.conn_id, "requestId": request_id}
        with contextlib.suppress(ConnectionClosed):
            await live.websocket.send(json.dumps(frame))

    async def _watch(self, live: _Live) -> None:
        """Close idle and over-long connections with 1001, as API Gateway does (a message either
        way is activity: one the client sends, one posted to it)."""
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
        """Send ``data`` as one message: text when it is UTF-8 (else binary), in frames of at most
        ``max_frame_bytes`` as API Gateway sends a message over its 32 KB frame quota."""
        limit = self.quotas.max_frame_bytes

        async def send() -> bool:
            live = self._open(conn_id)
            if live is None:
                return False
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                message: Any = [data[i:i + limit] for i in range(0, len(data), limit)] or [b""]
            else:
                message = text_fragments(text, limit)
            try:
                await live.websocket.send(message[0] if len(message) == 1 else message)
            except ConnectionClosed:
                return False
            live.last_active = time.monotonic()
            return True

        return self._call(send())

    def _open(self, conn_id: str) -> _Live | None:
        """The socket, if it is open: one the gateway or the client has begun to close is gone."""
        live = self._live.get(conn_id)
        return live if live is not None and live.websocket.state is State.OPEN else None

    def connection_ids(self) -> list[str]:
        """The open sockets' connection ids, oldest first."""
        return list(self._live)

    def describe(self, conn_id: str) -> dict[str, Any] | None:
        live = self._open(conn_id)
        if live is None:
            return None
        last_active = live.connected_at + (live.last_active - live.opened)
        return describe_connection(live.connected_at, last_active, live.source_ip, live.user_agent)

    def close(self, conn_id: str) -> bool:
        async def close() -> bool:
            live = self._open(conn_id)
            if live is None:
                return False
            task = asyncio.get_running_loop().create_task(live.websocket.close(1000, ""))
            self._closing_tasks.add(task)
            task.add_done_callback(self._closing_tasks.discard)
            return True

        return self._call(close())

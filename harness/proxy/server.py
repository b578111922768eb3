"""The chaos proxy's I/O: accept, forward the upgrade, then relay frames through the fault rules.

Layers: ``frames`` parses (no I/O), ``faults`` says what a rule is, this module decides and acts.
Each connection has two pumps (client->upstream is "upstream", upstream->client "downstream") and
two lanes that write, in order, what the pumps let through, with delays and shaping.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from ..faults.decisions import decide, uniform
from ..faults.log import FaultLog
from ..loop_thread import LoopThread
from .faults import CONNECTION_FAULTS, PROXY_FAULTS, FaultSpec
from .frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_TEXT,
    FrameParser,
    Message,
    MessageAssembler,
    ProtocolError,
    close_payload,
    encode_frame,
    new_mask,
)
from .tls import UpstreamTls, upstream_tls

HEAD_LIMIT = 16 * 1024
HANDSHAKE_TIMEOUT = 10.0
READ_SIZE = 256 * 1024
_HIGH_WATER = 1 << 20


class UpstreamError(Exception):
    pass


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (it roughly halves the proxy's added latency), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _http_response(status: int, reason: str, text: str) -> bytes:
    body = (text + "\n").encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANDSHAKE_TIMEOUT)
    except asyncio.LimitOverrunError:
        raise ValueError(f"request head over {HEAD_LIMIT} bytes") from None
    except asyncio.IncompleteReadError:
        raise ValueError("connection closed before the end of the request head") from None
    except TimeoutError:
        raise ValueError(f"no complete request head within {HANDSHAKE_TIMEOUT:.0f} s") from None
    if len(head) > HEAD_LIMIT:
        raise ValueError(f"request head over {HEAD_LIMIT} bytes")
    return head


def _parse_head(head: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    try:
        text = head.decode("latin-1")
        request_line, *lines = text[:-4].split("\r\n")
        method, target, version = request_line.split(" ")
    except ValueError:
        raise ValueError("malformed HTTP request line") from None
    if not version.startswith("HTTP/1."):
        raise ValueError(f"unsupported HTTP version {version!r}")
    headers = []
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"malformed header line {line[:40]!r}")
        headers.append((name.strip(), value.strip()))
    return method, target, headers


def _header(headers: list[tuple[str, str]], name: str) -> str:
    return next((v for k, v in headers if k.lower() == name), "")


class Lane:
    """One direction's writer: keeps order, applies delays, latency, bandwidth and slicing."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.queue: deque[tuple[float, bytes]] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.last_release = 0.0
        self.bandwidth: float | None = None  # bytes per second
        self.slicer: tuple[int, float] | None = None  # (bytes, seconds between slices)
        self.not_before = 0.0  # shaping: when the next write may start
        self.held: list[list[Any]] = []  # reordered messages: [messages still to pass, deadline, data]
        self.closed = False

    @property
    def shaped(self) -> bool:
        return self.bandwidth is not None or self.slicer is not None

    def send(self, data: bytes, delay: float = 0.0) -> None:
        if self.closed:
            return
        if delay <= 0 and not self.shaped and not self.queue and not self.held:
            self.writer.write(data)
            return
        self._enqueue(data, delay)
        self._release_held(passed=1)

    def _enqueue(self, data: bytes, delay: float) -> None:
        release = max(self.last_release, time.monotonic() + delay)
        self.last_release = release
        self.queue.append((release, data))
        self._ensure_task()
        self.wake.set()

    def hold(self, data: bytes, messages: int, max_wait: float) -> None:
        self.held.append([messages, time.monotonic() + max_wait, data])
        self._ensure_task()
        self.wake.set()

    def _release_held(self, passed: int) -> None:
        now = time.monotonic()
        for entry in list(self.held):
            entry[0] -= passed
            if entry[0] <= 0 or entry[1] <= now:
                self.held.remove(entry)
                self._enqueue(entry[2], 0.0)

    def _ensure_task(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self.closed:
            if not self.queue:
                self.wake.clear()
                if self.held:
                    next_deadline = min(entry[1] for entry in self.held)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), max(0.0, next_deadline - time.monotonic()))
                    self._release_held(passed=0)
                else:
                    await self.wake.wait()
                continue
            release, data = self.queue[0]
            wait = release - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self.queue.popleft()
            await self._write_shaped(data)

    async def _write_shaped(self, data: bytes) -> None:
        """Writes on a schedule kept in absolute time: timers are coarse (uvloop's are 1 ms), so
        many small waits are added up and slept in one go once they are worth a timer."""
        chunks = [data]
        pause = 0.0
        if self.slicer is not None:
            size, pause = self.slicer
            chunks = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
        for chunk in chunks:
            if self.closed:
                return
            self.writer.write(chunk)
            await self.writer.drain()
            now = time.monotonic()
            self.not_before = max(self.not_before, now)
            if self.bandwidth is not None:
                self.not_before += len(chunk) / self.bandwidth
            self.not_before += pause
            if self.not_before - now > 0.002:
                await asyncio.sleep(self.not_before - now)

    async def drain(self) -> None:
        transport = self.writer.transport
        if transport.get_write_buffer_size() > _HIGH_WATER:
            await self.writer.drain()

    async def flush(self, timeout: float = 5.0) -> None:
        """Let what is queued go out (a closing peer still gets delayed frames), within a bound."""
        if self.held:
            for entry in self.held:
                self._enqueue(entry[2], 0.0)
            self.held.clear()
        deadline = time.monotonic() + timeout
        while (self.queue or self.held) and time.monotonic() < deadline and self.task and not self.task.done():
            await asyncio.sleep(0.01)

    def close(self) -> None:
        self.closed = True
        if self.task is not None:
            self.task.cancel()


@dataclass
class Connection:
    id: str
    key: str  # deterministic: the client's socket name (or request target) and its occurrence number
    tags: dict[str, str]
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    opened: float = field(default_factory=time.time)
    lanes: dict[str, Lane] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=lambda: {"upstream": 0, "downstream": 0})
    applied: dict[str, int] = field(default_factory=dict)  # rule name -> times applied here
    matched: dict[str, int] = field(default_factory=dict)  # direction/rule -> messages it matched here
    blackholed: set[str] = field(default_factory=set)
    limits: dict[str, int] = field(default_factory=dict)  # direction -> bytes left (limit_data)
    latency: dict[str, tuple[float, float]] = field(default_factory=dict)  # direction -> (ms, jitter ms)
    tasks: list[asyncio.Task] = field(default_factory=list)
    closing: bool = False

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "key": self.key, "tags": self.tags, "opened": self.opened,
                "frames": dict(self.counters), "blackholed": sorted(self.blackholed)}


class ChaosProxy:
    """A WebSocket-aware proxy with seeded faults. Start it in its own thread with ``start()``."""

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0, *, seed: int = 0,
                 faults: list[FaultSpec] | None = None, fault_log: FaultLog | None = None,
                 name: str = "relay", tls: UpstreamTls | None = None) -> None:
        """``tls``: for a wss:// upstream, whose certificates to trust (default: ``upstream_tls(host)``)."""
        parts = urlsplit(upstream)
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
            raise ValueError(f"upstream {upstream!r} must be ws://HOST:PORT[/path] or wss://HOST[:PORT][/path]")
        secure = parts.scheme in ("wss", "https")
        self.upstream_url = upstream
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or (443 if secure else 80)
        self.upstream_path = parts.path.rstrip("/")
        # The Host header: the URL's host, and its port only when the URL names one.
        authority = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self.upstream_authority = f"{authority}:{parts.port}" if parts.port else authority
        self.tls = (tls or upstream_tls(parts.hostname)) if secure else None
        self.host = host
        self.port = port
        self.seed = seed
        self.name = name
        self.fault_log = fault_log or FaultLog()
        self.faults: list[FaultSpec] = list(faults or [])
        self.connections: dict[str, Connection] = {}
        self.server: asyncio.Server | None = None
        self.started = time.monotonic()
        self.paused_until = 0.0
        self.refusing_until = 0.0
        self._ids = itertools.count(1)
        self._occurrences: dict[str, int] = {}
        self._runner: LoopThread | None = None
        self._timeline: list[asyncio.TimerHandle] = []
        self._background: set[asyncio.Task] = set()
        self._handlers: set[asyncio.Task] = set()
        self.errors: deque[str] = deque(maxlen=1000)  # protocol violations seen, newest last

    # ---- lifecycle ------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    async def serve(self) -> None:
        self.server = await asyncio.start_server(self._accept, self.host, self.port, limit=READ_SIZE,
                                                 reuse_address=True)
        self.host, self.port = self.server.sockets[0].getsockname()[:2]
        self.started = time.monotonic()
        for spec in self.faults:
            self._schedule_proxy_fault(spec)

    def start(self) -> ChaosProxy:
        """Run in a background thread (for tests, Locust and the CLI); returns once listening."""
        self._runner = LoopThread("chaos-proxy", new_event_loop)
        self._runner.start(self.serve)
        return self

    def stop(self) -> None:
        if self._runner is None:
            return
        self._runner.stop(self._shutdown())
        self._runner = None

    async def _shutdown(self) -> None:
        for handle in self._timeline:
            handle.cancel()
        if self.server is not None:
            self.server.close()
        for connection in list(self.connections.values()):
            self._abort(connection)
        pending = [*self._handlers, *self._background]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def call(self, coroutine: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the proxy's loop from another thread."""
        assert self._runner is not None, "the proxy is not running"
        return self._runner.call(coroutine, timeout)

    # ---- control (thread-safe through call) -------------------------------------------------
    async def add_fault(self, spec: FaultSpec) -> None:
        if any(f.name == spec.name for f in self.faults):
            raise ValueError(f"a fault named {spec.name!r} exists; remove it first or pick another name")
        self.faults.append(spec)
        self._schedule_proxy_fault(spec, relative_to_now=True)

    async def remove_fault(self, name: str) -> bool:
        before = len(self.faults)
        self.faults = [f for f in self.faults if f.name != name]
        return len(self.faults) < before

    async def reset(self) -> None:
        """Remove every fault, end pauses and refusals (Toxiproxy's POST /reset)."""
        self.faults = []
        for handle in self._timeline:
            handle.cancel()
        self._timeline = []
        self.paused_until = self.refusing_until = 0.0

    async def disconnect_all(self, code: int = 1001, reason: str = "Going away", rule: str = "control") -> int:
        connections = list(self.connections.values())
        for connection in connections:
            self.fault_log.record("wire", "mass_disconnect", {"conn": connection.key}, {"code": code}, rule, 0)
            await self._close_both(connection, code, reason)
        return len(connections)

    async def pause(self, seconds: float, rule: str = "control") -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)
        self.fault_log.record("wire", "pause", {"proxy": self.name}, {"seconds": seconds}, rule, 0)

    async def refuse(self, seconds: float, rule: str = "control") -> None:
        self.refusing_until = max(self.refusing_until, time.monotonic() + seconds)
        self.fault_log.record("wire", "refuse", {"proxy": self.name}, {"seconds": seconds}, rule, 0)

    def _spawn(self, coroutine: Any) -> None:
        """A task the loop must not lose (asyncio keeps only weak references to tasks)."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _schedule_proxy_fault(self, spec: FaultSpec, relative_to_now: bool = False) -> None:
        if spec.type not in PROXY_FAULTS:
            return
        loop = asyncio.get_running_loop()
        at = spec.start or 0.0
        delay = at if relative_to_now else max(0.0, self.started + at - time.monotonic())

        def fire() -> None:
            params = spec.params
            if spec.type == "mass_disconnect":
                self._spawn(self.disconnect_all(params["code"], params.get("reason") or "Going away", spec.name))
            elif spec.type == "pause":
                self._spawn(self.pause(params["seconds"], spec.name))
            else:
                self._spawn(self.refuse(params["seconds"], spec.name))

        self._timeline.append(loop.call_later(delay, fire))

    # ---- connections ----------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve_connection(reader, writer)
        except asyncio.CancelledError:
            pass  # the proxy is stopping; this is the connection's outermost task
        finally:
            self._handlers.discard(task)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self.refusing_until:
            _reset(writer)
            return
        upstream_writer = None
        try:
            try:
                head = await _read_head(reader)
                method, target, headers = _parse_head(head)
            except ValueError as exc:
                writer.write(_http_response(400, "Bad Request", f"chaos proxy: {exc}"))
                return
            if method != "GET" or _header(headers, "upgrade").lower() != "websocket" or not _header(
                    headers, "sec-websocket-key"):
                writer.write(_http_response(400, "Bad Request", "chaos proxy: not a WebSocket upgrade request "
                                                                "(GET with Upgrade: websocket and Sec-WebSocket-Key)"))
                return
            try:
                upstream_reader, upstream_writer = await self._open_upstream(target, headers)
                response = await _read_head(upstream_reader)
            except (OSError, ValueError, UpstreamError) as exc:
                writer.write(_http_response(502, "Bad Gateway", f"chaos proxy: upstream {self.upstream_url} "
                                                                f"failed: {exc}"))
                return
            writer.write(response)
            if not response.startswith((b"HTTP/1.1 101", b"HTTP/1.0 101")):
                # A refused handshake passes through as it is, body and all.
                writer.write(await _read_body(upstream_reader, response))
                return
            connection = self._register(target, writer, upstream_writer)
            await self._relay(connection, reader, upstream_reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            for stream in (writer, upstream_writer):
                if stream is not None:
                    stream.close()

    async def _open_upstream(self, target: str, headers: list[tuple[str, str]]
                             ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        path = target
        if self.upstream_path and not target.startswith(self.upstream_path):
            path = self.upstream_path + (target if target.startswith("/") else "/" + target)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.upstream_host, self.upstream_port, limit=READ_SIZE), 5)
        except TimeoutError:
            raise UpstreamError("no answer within 5 s") from None
        except OSError as exc:
            raise UpstreamError(exc.strerror or str(exc)) from None
        if self.tls is not None:
            try:
                await asyncio.wait_for(writer.start_tls(self.tls.context, server_hostname=self.tls.host),
                                       self.tls.handshake_timeout)
            except (OSError, TimeoutError) as exc:  # ssl's errors are OSErrors
                _reset(writer)
                raise UpstreamError(self.tls.explain(exc)) from None
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.upstream_authority}"]
        for name, value in headers:
            # API Gateway negotiates no extensions, and compressed frames could not be inspected.
            if name.lower() not in ("host", "sec-websocket-extensions"):
                lines.append(f"{name}: {value}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        return reader, writer

    def _register(self, target: str, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> Connection:
        split = urlsplit(target)
        tags = dict(parse_qsl(split.query, keep_blank_values=True))
        tags["path"] = split.path
        name = _connection_name(split.path, tags) or target
        occurrence = self._occurrences.get(name, 0)
        self._occurrences[name] = occurrence + 1
        connection = Connection(f"c{next(self._ids)}", f"{name}#{occurrence}", tags, client, upstream)
        connection.lanes = {"upstream": Lane(upstream), "downstream": Lane(client)}
        elapsed = time.monotonic() - self.started
        for spec in self.faults:
            if spec.type in CONNECTION_FAULTS and spec.in_window(elapsed) and spec.match.connection_matches(tags):
                for direction in ("upstream", "downstream"):
                    if spec.applies_to(direction) and decide(spec.probability, self.seed, connection.key, direction,
                                                             spec.name):
                        self._shape(connection, spec, direction)
        for sock_writer in (client, upstream):
            sock = sock_writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections[connection.id] = connection
        return connection

    def _shape(self, connection: Connection, spec: FaultSpec, direction: str) -> None:
        lane = connection.lanes[direction]
        params = spec.params
        if spec.type == "latency":
            connection.latency[direction] = (params["ms"], params["jitter_ms"])
        elif spec.type == "bandwidth":
            lane.bandwidth = params["kbps"] * 1024
        elif spec.type == "slicer":
            lane.slicer = (params["size_bytes"], params["delay_us"] / 1e6)
        else:
            connection.limits[direction] = params["bytes"]
        self.fault_log.record("wire", spec.type, {"conn": connection.key, "direction": direction}, dict(params),
                              spec.name, [connection.key, direction])

    async def _relay(self, connection: Connection, client: asyncio.StreamReader,
                     upstream: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        pumps = [loop.create_task(self._pump(connection, client, "upstream")),
                 loop.create_task(self._pump(connection, upstream, "downstream"))]
        connection.tasks = pumps
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            # One side finished: let the other side's lane deliver what it holds, then end both.
            for lane in connection.lanes.values():
                await lane.flush()
        finally:
            for task in pumps:
                task.cancel()
            for lane in connection.lanes.values():
                lane.close()
            self.connections.pop(connection.id, None)

    async def _pump(self, connection: Connection, reader: asyncio.StreamReader, direction: str) -> None:
        parser = FrameParser(masked=direction == "upstream")
        assembler = MessageAssembler()
        lane = connection.lanes[direction]
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                if parser.pending:
                    self._protocol_close(connection, direction, 1014 if direction == "downstream" else 1002,
                                         "peer closed in the middle of a frame")
                return
            messages, error = _messages(parser, assembler, data)
            for message in messages:
                if self.paused_until > time.monotonic():
                    await asyncio.sleep(self.paused_until - time.monotonic())
                if not self._forward(connection, message, direction, lane):
                    return
            if error is not None:
                self._protocol_close(connection, direction, error.code, error.reason)
                return
            await lane.drain()

    def _protocol_close(self, connection: Connection, direction: str, code: int, reason: str) -> None:
        """The sender in ``direction`` broke the protocol: close that side with ``code``, the other with 1001."""
        self.errors.append(f"{connection.key} {direction}: {reason}")
        sender_side = "downstream" if direction == "upstream" else "upstream"
        self._send_close(connection, sender_side, code, reason)
        self._send_close(connection, direction, 1001, "Going away")

    def _send_close(self, connection: Connection, lane_name: str, code: int, reason: str) -> None:
        mask = new_mask() if lane_name == "upstream" else None
        lane = connection.lanes[lane_name]
        lane.send(encode_frame(OP_CLOSE, close_payload(code, reason), mask=mask))

    async def _close_both(self, connection: Connection, code: int, reason: str) -> None:
        if connection.closing:
            return
        connection.closing = True
        self._send_close(connection, "downstream", code, reason)
        self._send_close(connection, "upstream", code, reason)
        for lane in connection.lanes.values():
            await lane.flush(timeout=1.0)
        self._abort(connection, graceful=True)

    def _abort(self, connection: Connection, graceful: bool = False) -> None:
        for writer in (connection.client, connection.upstream):
            if graceful:
                writer.close()
            else:
                _reset(writer)
        for task in connection.tasks:
            task.cancel()

    # ---- the fault rules ------------------------------------------------------------------
    def _forward(self, connection: Connection, message: Message, direction: str, lane: Lane) -> bool:
        """Apply the rules to one message and hand the result to the lane; False ends the pump."""
        index = connection.counters[direction]
        connection.counters[direction] = index + 1
        if direction in connection.blackholed:
            return True
        raw = message.raw
        if direction in connection.limits:
            left = connection.limits[direction] - len(raw)
            connection.limits[direction] = left
            if left < 0:
                self._abort(connection)
                return False
        outputs = [raw]
        delay = 0.0
        described: dict[str, list[str]] | None = None
        elapsed = time.monotonic() - self.started
        for spec in self.faults:
            if spec.type in CONNECTION_FAULTS or spec.type in PROXY_FAULTS or not spec.applies_to(direction):
                continue
            if not self._matches(spec, connection, message, elapsed):
                continue
            described = described or message.describe()
            subject = _subject(connection, direction, spec.name, described)
            if not decide(spec.probability, self.seed, connection.key, direction, subject, spec.name):
                continue
            connection.applied[spec.name] = connection.applied.get(spec.name, 0) + 1
            params = spec.params
            target = {"conn": connection.key, "direction": direction, "frame": index,
                      "opcode": message.opcode, **described}
            self.fault_log.record("wire", spec.type, target, dict(params), spec.name,
                                  [connection.key, direction, subject])
            kind = spec.type
            if kind == "drop":
                return True
            if kind == "duplicate":
                outputs = outputs * (1 + params["copies"])
            elif kind == "delay":
                jitter = params["jitter_ms"] * uniform(self.seed, connection.key, direction, subject, spec.name, "j")
                delay += (params["ms"] + jitter) / 1000
            elif kind == "corrupt":
                outputs = [_corrupt(message, direction, params["bytes"])] * len(outputs)
            elif kind == "truncate":
                outputs = [_truncate(message, direction, params["keep_bytes"])] * len(outputs)
            elif kind == "reorder":
                lane.hold(b"".join(outputs), params["hold"], params["max_wait_ms"] / 1000)
                return True
            elif kind == "reset":
                self._abort(connection)
                return False
            elif kind == "close":
                self._spawn(self._close_both(connection, params["code"], params.get("reason", "")))
                return False
            elif kind in ("blackhole", "timeout"):
                connection.blackholed.add(direction)
                if kind == "timeout" and params["ms"] > 0:
                    asyncio.get_running_loop().call_later(params["ms"] / 1000, self._abort, connection)
                return True
        if direction in connection.latency:
            base, jitter = connection.latency[direction]
            spread = (2 * uniform(self.seed, connection.key, direction, index, "latency") - 1) * jitter
            delay += max(0.0, base + spread) / 1000
        for data in outputs:
            lane.send(data, delay)
        return True

    def _matches(self, spec: FaultSpec, connection: Connection, message: Message, elapsed: float) -> bool:
        match = spec.match
        if match.opcodes is not None:
            if message.opcode not in match.opcodes:
                return False
        elif message.opcode not in (OP_TEXT, OP_BINARY):
            return False  # rules act on data messages unless they name control opcodes
        if not spec.in_window(elapsed) or not match.connection_matches(connection.tags):
            return False
        if spec.count is not None and connection.applied.get(spec.name, 0) >= spec.count:
            return False
        if match.type is not None and match.type not in message.json_field("type"):
            return False
        return match.action is None or match.action in message.json_field("action")


def _connection_name(path: str, tags: dict[str, str]) -> str | None:
    """A client socket's stable name, when its request target says which client and which of its
    sockets it is (``client=`` and ``conn=``, as the harness's players send): the relay's random ids
    that rejoins and private joins put in the query string then do not change the name."""
    if "client" not in tags or "conn" not in tags:
        return None
    return f"{path}?{urlencode({'client': tags['client'], 'conn': tags['conn']})}"


def _subject(connection: Connection, direction: str, rule: str, described: dict[str, list[str]]) -> str:
    """What a message decision is about, so that it does not depend on where the message fell among
    the socket's frames: a message that carries a payload id is named by it; any other by its
    ordinal among the messages this rule matched on this socket and direction."""
    if described["pids"]:
        return f"pid:{described['pids'][0]}"
    key = f"{direction}/{rule}"
    count = connection.matched.get(key, 0)
    connection.matched[key] = count + 1
    return f"n:{count}"


def _messages(parser: FrameParser, assembler: MessageAssembler, data: bytes
              ) -> tuple[list[Message], ProtocolError | None]:
    """The whole messages in ``data``; what came before a protocol violation is still delivered."""
    messages: list[Message] = []
    try:
        for frame in parser.feed(data):
            message = assembler.add(frame)
            if message is not None:
                messages.append(message)
    except ProtocolError as exc:
        return messages, exc
    return messages, None


def _reencode(message: Message, direction: str, data: bytes) -> bytes:
    mask = new_mask() if direction == "upstream" else None
    return encode_frame(message.opcode, data, mask=mask)


def _corrupt(message: Message, direction: str, count: int) -> bytes:
    """Flip bytes; a text message becomes invalid UTF-8, which a receiver must close with 1007."""
    data = bytearray(message.data())
    if not data:
        data = bytearray(b"\xff")
    for i in range(min(count, len(data))):
        position = (i * 7919) % len(data)
        data[position] = 0xFF if message.opcode == OP_TEXT else data[position] ^ 0xFF
    return _reencode(message, direction, bytes(data))


def _truncate(message: Message, direction: str, keep: int) -> bytes:
    return _reencode(message, direction, message.data()[:keep])


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            with contextlib.suppress(asyncio.IncompleteReadError, TimeoutError):
                return await asyncio.wait_for(reader.readexactly(int(value.strip())), HANDSHAKE_TIMEOUT)
    return b""


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST, as a crashed peer or a reset fault would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # Already closed: uvloop's socket then has fd -1 and raises ValueError, asyncio's OSError.
        with contextlib.suppress(OSError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()

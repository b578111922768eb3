"""A Simple Relay client that behaves like a shipped game client, and writes a history.

Like a game client, it checks ``/ping`` before opening a socket; heartbeats every 7 s while the
relay answers and every 1.5 s after 2 unanswered beats; rejoins by memberId (with sessionId)
after 5 unanswered beats or a dropped socket, a bounded number of times; asks with
``waitingFor`` for what it has not received and with ``inclMessagesAfter`` for the pinned
message; stops on CONNECTION_OVERWRITE, SESSION_END and INVALID_CONNECTION. Runs on plain
threads, and on greenlets under Locust (which patches threading and sockets).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import websocket

from .history import History

Metric = Callable[[str, float, str | None], None]  # (name, milliseconds, error or None)


@dataclass(frozen=True)
class ClientTimings:
    heartbeat_interval: float = 7.0
    fast_heartbeat_interval: float = 1.5
    unanswered_before_fast: int = 2
    unanswered_before_rejoin: int = 5
    max_rejoins: int = 5
    connect_timeout: float = 10.0


def payload_for(pid: str, body: str = "") -> str:
    """What a client sends as a message payload: its id and send time travel with it."""
    return f'{{"pid":{json.dumps(pid)},"ts":{int(time.time() * 1000)},"body":{json.dumps(body)}}}'


def parse_payload(payload: Any) -> dict[str, Any] | None:
    try:
        parsed = json.loads(payload)
    except (TypeError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) and "pid" in parsed else None


class RelayClient:
    def __init__(self, url: str, history: History, client_id: str, *, ping_url: str | None = None,
                 timings: ClientTimings | None = None, metric: Metric | None = None) -> None:
        self.url = url
        self.history = history
        self.client_id = client_id
        self.ping_url = ping_url
        self.timings = timings or ClientTimings()
        self.metric = metric or (lambda name, ms, error: None)
        self.conn = 0
        self.ws: websocket.WebSocket | None = None
        self.member_id: str | None = None
        self.session_id: str | None = None
        self.member_num: int | None = None
        self.private_host = False
        self.started = False
        self.pinned_time = 0
        self.stopped: str | None = None  # why the client gave up: SESSION_END, CONNECTION_OVERWRITE, ...
        self.unanswered = 0
        self.rejoins = 0
        # The latest messages, for inspection; counts by type are what waits use (bounded memory).
        self.messages: deque[dict[str, Any]] = deque(maxlen=256)
        self.counts: Counter[str] = Counter()
        self._changed = threading.Condition()
        self._send_lock = threading.Lock()
        self._closing = False
        self._closed = threading.Event()
        self._heartbeat_sent: list[float] = []
        self._pids = itertools.count()
        self._joined_at: float | None = None
        self._threads: list[threading.Thread] = []

    # ---- history ------------------------------------------------------------------------
    def _record(self, op: str, phase: str, **fields: Any) -> None:
        self.history.record(self.client_id, self.conn, op, phase, member=self.member_id, session=self.session_id,
                            **fields)

    # ---- connecting -----------------------------------------------------------------------
    def _ping(self) -> bool:
        if not self.ping_url:
            return True
        self._record("ping", "invoke")
        try:
            with urllib.request.urlopen(self.ping_url, timeout=self.timings.connect_timeout) as response:
                ok = response.status == 200
        except (urllib.error.URLError, OSError) as exc:
            self._record("ping", "fail", error=str(exc)[:200])
            return False
        self._record("ping", "ok" if ok else "fail")
        return ok

    def _open(self, op: str, query: dict[str, str]) -> bool:
        if not self._ping():
            return False
        self.conn += 1
        target = f"{self.url}?{urlencode({**query, 'client': self.client_id})}"
        self._record(op, "invoke", msg=query)
        started = time.monotonic()
        try:
            # UTF-8 is still validated, by the C decoder when the frame becomes text; websocket-client's
            # own validator is pure Python and was the largest cost per received message.
            ws = websocket.create_connection(target, timeout=self.timings.connect_timeout, enable_multithread=True,
                                             skip_utf8_validation=True)
        except (websocket.WebSocketException, OSError) as exc:
            error = f"{getattr(exc, 'status_code', '')} {exc}".strip()[:300]
            self._record(op, "fail", error=error)
            self.metric("connect" if op == "connect" else "reconnect", (time.monotonic() - started) * 1000, error)
            return False
        ws.settimeout(None)
        self.ws = ws
        self._record(op, "ok")
        self.metric("connect" if op == "connect" else "reconnect", (time.monotonic() - started) * 1000, None)
        self._spawn(self._read, ws)
        return True

    def connect(self, session_type: str, target_num_members: int | None = None, *, private: bool = False,
                session_id: str | None = None) -> bool:
        query: dict[str, str] = {"sessionType": session_type}
        if session_id is not None:
            query["sessionId"] = session_id
        else:
            query["targetNumMembers"] = str(target_num_members)
            if private:
                query["private"] = "true"
                self.private_host = True
        self._joined_at = time.monotonic()
        if not self._open("connect", query):
            return False
        self._spawn(self._heartbeat_loop)
        return True

    def rejoin(self) -> bool:
        """Put a new socket in place of this member's old one (bounded by ``max_rejoins``)."""
        if self.member_id is None or self.rejoins >= self.timings.max_rejoins or self.stopped:
            return False
        self.rejoins += 1
        self._drop_socket()
        query = {"memberId": self.member_id}
        if self.session_id:
            query["sessionId"] = self.session_id
        self.unanswered = 0
        self._heartbeat_sent.clear()
        return self._open("rejoin", query)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    # ---- receiving ----------------------------------------------------------------------
    def _read(self, ws: websocket.WebSocket) -> None:
        conn = self.conn
        while True:
            try:
                text = ws.recv()
            except (websocket.WebSocketException, OSError, ValueError):
                text = None
            if not text:
                self._socket_lost(ws, conn)
                return
            try:
                frame = json.loads(text)
            except ValueError:
                self._record("recv", "ok", msg={"type": "<not json>", "raw": str(text)[:200]})
                continue
            messages = frame if isinstance(frame, list) else [frame]
            # Messages in a HEARTBEAT answer are resends the client asked for, not notifications.
            via = "HEARTBEAT" if messages and isinstance(messages[0], dict) and messages[0].get(
                "type") == "HEARTBEAT" else None
            for message in messages:
                if isinstance(message, dict):
                    self._handle(message, via if message.get("type") != "HEARTBEAT" else None)

    def _handle(self, message: dict[str, Any], via: str | None = None) -> None:
        kind = message.get("type")
        parsed = parse_payload(message.get("payload")) if kind == "MESSAGE" else None
        with self._changed:
            if kind == "CONNECTION":
                self.member_id = message.get("memberId", self.member_id)
            elif kind == "PRIVATE_SESSION_PENDING":
                self.session_id = message.get("sessionId", self.session_id)
            elif kind == "SESSION_CONNECT":
                self.session_id = message.get("sessionId", self.session_id)
                self.member_num = message.get("memberNum")
                if not self.started and self._joined_at is not None:
                    self.metric("time to SESSION_CONNECT", (time.monotonic() - self._joined_at) * 1000, None)
                self.started = True
                pinned = message.get("pinnedMessage") or {}
                self.pinned_time = max(self.pinned_time, int(pinned.get("time", 0)))
            elif kind == "MESSAGE":
                if message.get("pinned"):
                    self.pinned_time = max(self.pinned_time, int(message.get("time", 0)))
                if parsed is not None and message.get("time") is not None:
                    self.metric("message fan-out", max(0.0, time.time() * 1000 - parsed["ts"]), None)
            elif kind == "HEARTBEAT":
                self.unanswered = 0
                if self._heartbeat_sent:
                    sent = self._heartbeat_sent.pop(0)
                    self.metric("heartbeat round trip", (time.monotonic() - sent) * 1000, None)
                    self._record("heartbeat", "ok")
            elif kind in ("SESSION_END", "CONNECTION_OVERWRITE", "INVALID_CONNECTION"):
                self.stopped = kind
            self.messages.append(message)
            self.counts[kind] += 1
            self._changed.notify_all()
        self._record("recv", "ok", msg=message, pid=parsed["pid"] if parsed else None, via=via)
        if kind in ("SESSION_END", "CONNECTION_OVERWRITE", "INVALID_CONNECTION"):
            self.close()

    def _socket_lost(self, ws: websocket.WebSocket, conn: int) -> None:
        with self._changed:
            self._changed.notify_all()
        if self._closing or ws is not self.ws or conn != self.conn:
            return
        self._record("close", "info", error="socket closed by the other side")
        if not self.stopped and self.member_id is not None:
            self._spawn(self._rejoin_after_drop)

    def _rejoin_after_drop(self) -> None:
        while not self.stopped and not self._closing and self.rejoins < self.timings.max_rejoins:
            if self.rejoin():
                return
            time.sleep(min(2.0, 0.2 * self.rejoins))  # a client's backoff between attempts

    def wait_for(self, kind: str, timeout: float, count: int = 1) -> bool:
        """Until ``count`` messages of ``kind`` arrived, the client stopped, or ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.counts[kind] < count:
                left = deadline - time.monotonic()
                if left <= 0 or (self.stopped and kind != self.stopped):
                    return False
                self._changed.wait(left)
        return True

    # ---- sending ------------------------------------------------------------------------
    def _send(self, op: str, body: dict[str, Any], pid: str | None = None) -> bool:
        self._record(op, "invoke", msg=body, pid=pid)
        ws = self.ws
        if ws is None or self.stopped:
            self._record(op, "fail", pid=pid, error="no open socket")
            return False
        try:
            with self._send_lock:
                ws.send(json.dumps(body))
        except (websocket.WebSocketException, OSError) as exc:
            # Written or not, nobody can tell: the outcome is unknown.
            self._record(op, "info", pid=pid, error=str(exc)[:200])
            return False
        if op != "heartbeat":
            self._record(op, "ok", pid=pid)
        return True

    def send_message(self, body: str = "", pinned: bool = False) -> str:
        pid = f"{self.client_id}-{next(self._pids)}"
        action: dict[str, Any] = {"action": "SEND_MESSAGE", "payload": payload_for(pid, body)}
        if pinned:
            action["pinned"] = True
        self._send("send", action, pid)
        return pid

    def heartbeat(self) -> None:
        waiting = []
        if self.member_id is None:
            waiting.append("CONNECTION")
        if self.private_host and self.session_id is None:
            waiting.append("PRIVATE_SESSION_PENDING")
        if not self.started:
            waiting.append("SESSION_CONNECT")
        body: dict[str, Any] = {"action": "HEARTBEAT", "inclMessagesAfter": self.pinned_time}
        if waiting:
            body["waitingFor"] = waiting
        self.unanswered += 1
        self._heartbeat_sent.append(time.monotonic())
        self._send("heartbeat", body)

    def end_session(self) -> None:
        self._send("end", {"action": "END_SESSION"})

    def _heartbeat_loop(self) -> None:
        timings = self.timings
        while not self._closing and not self.stopped:
            fast = self.unanswered >= timings.unanswered_before_fast
            if self._closed.wait(timings.fast_heartbeat_interval if fast else timings.heartbeat_interval):
                return
            if self.stopped:
                return
            if self.unanswered >= timings.unanswered_before_rejoin:
                if self._rejoin_after_silence():
                    continue
                return
            self.heartbeat()

    def _rejoin_after_silence(self) -> bool:
        """Beats went unanswered: the socket is as good as gone. True if a new one is up."""
        for sent in self._heartbeat_sent:
            self._record("heartbeat", "info", error=f"unanswered for {time.monotonic() - sent:.1f} s")
        return self.rejoin()

    # ---- closing --------------------------------------------------------------------------
    def _drop_socket(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            self._record("close", "invoke")
            # Not ws.close(): it waits for the peer's close frame inside a bare `except:`, which
            # swallows a greenlet kill, so a Locust user stopped at that moment would never stop.
            with contextlib.suppress(websocket.WebSocketException, OSError):
                ws.send_close()
            ws.shutdown()
            self._record("close", "ok")

    def fresh_session(self) -> None:
        """Forget the last session (ended, lost or never joined) before joining a new one; the client
        id and the socket counter carry on, so the history stays one story per client."""
        self.close()
        with self._changed:
            self.member_id = self.session_id = self.member_num = self.stopped = None
            self.private_host = self.started = False
            self.pinned_time = self.unanswered = self.rejoins = 0
            self.messages.clear()
            self.counts.clear()
            self._heartbeat_sent = []
            self._closing = False
            self._closed = threading.Event()

    def close(self) -> None:
        self._closing = True
        self._closed.set()
        self._drop_socket()
        with self._changed:
            self._changed.notify_all()

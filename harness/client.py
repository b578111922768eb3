"""A Simple Relay client that behaves like a shipped game client, and writes a history.

Like a game client, it checks ``/ping`` before opening a socket; heartbeats every 7 s while the
relay answers and every 1.5 s after 2 unanswered beats; rejoins by memberId (with sessionId)
after 5 unanswered beats or a dropped socket, a bounded number of times; asks with
``waitingFor`` for what it has not received and with ``inclMessagesAfter`` for the pinned
message; stops on CONNECTION_OVERWRITE, SESSION_END and INVALID_CONNECTION. Runs on plain
threads, and on greenlets under Locust (which patches threading and sockets).

Identity in the history: each join starts a :class:`SessionAttempt` (member, session, sockets,
rejoins). Every socket's reader keeps the attempt it was opened for, so what an old socket
receives is recorded with that attempt's member and session and never changes a newer attempt.
Records carry ``attempt`` (its number, from 1), so ``(client, attempt)`` names one membership even
before the member id is known.
Connecting, rejoining and closing take one lock, so a new join waits for a rejoin in flight and
then closes the socket that rejoin opened.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _quote
from typing import Any
from urllib.parse import urlencode

import websocket

from .history import History

Metric = Callable[[str, float, str | None], None]  # (name, milliseconds, error or None)
STOPS = ("SESSION_END", "CONNECTION_OVERWRITE", "INVALID_CONNECTION")


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
    # encode_basestring_ascii is what json.dumps does with a str, without its dispatch.
    return f'{{"pid":{_quote(pid)},"ts":{int(time.time() * 1000)},"body":{_quote(body)}}}'


def time_ms(value: Any) -> int:
    """A message's ``time`` as the relay sent it (a number, or a numeric string as the original Simple
    Relay sends ``pinnedMessage.time``; whole or not) in whole ms; 0 when it is neither. Whether a
    time is right is the checkers' question: a client that stopped reading over it would make every
    later message look lost."""
    if isinstance(value, bool):
        return 0
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0
    return int(number) if math.isfinite(number) else 0


def parse_payload(payload: Any) -> dict[str, Any] | None:
    try:
        parsed = json.loads(payload)
    except (TypeError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) and "pid" in parsed else None


@dataclass(eq=False)
class SessionAttempt:
    """One try at being in a session: a join, its rejoins, until it stops or a newer one starts.

    ``number`` counts the client's attempts (0: none yet). ``ws``/``conn`` are its current socket
    and that socket's number (the client's socket counter); ``ended`` is set when the client
    closed it or started a newer attempt; ``rejoining`` counts rejoins in flight or to be retried
    (while it is above 0 the player is not lost). ``counts`` and ``messages`` are what it received.
    """

    number: int
    member_id: str | None = None
    session_id: str | None = None
    member_num: int | None = None
    private_host: bool = False
    started: bool = False
    pinned_time: int = 0
    stopped: str | None = None  # the STOPS notice that ended it
    ended: bool = False
    ws: websocket.WebSocket | None = None
    conn: int = 0
    rejoins: int = 0
    rejoining: int = 0
    unanswered: int = 0
    joined_at: float | None = None
    heartbeat_sent: list[float] = field(default_factory=list)
    # The latest messages, for inspection; counts by type are what waits use (bounded memory).
    messages: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=256))
    counts: Counter[str] = field(default_factory=Counter)
    closed: threading.Event = field(default_factory=lambda: threading.Event())


class RelayClient:
    def __init__(self, url: str, history: History, client_id: str, *, ping_url: str | None = None,
                 timings: ClientTimings | None = None, metric: Metric | None = None) -> None:
        self.url = url
        self.history = history
        self.client_id = client_id
        self.ping_url = ping_url
        self.timings = timings or ClientTimings()
        self.metric = metric or (lambda name, ms, error: None)
        self.conn = 0  # sockets this client asked for; the latest one's number
        self.attempt = SessionAttempt(0)
        self._lifecycle = threading.RLock()  # connect, rejoin and close: one at a time
        self._changed = threading.Condition()
        self._pids = itertools.count()

    @property
    def lost(self) -> bool:
        """The current attempt is over for good: ended, stopped, or without a socket and with no
        rejoin in flight or to be retried (a player then joins a new session)."""
        attempt = self.attempt
        return attempt.ended or attempt.stopped is not None or (attempt.ws is None and not attempt.rejoining)

    # ---- history ------------------------------------------------------------------------
    def _record(self, attempt: SessionAttempt, conn: int, op: str, phase: str, **fields: Any) -> None:
        self.history.record(self.client_id, conn, op, phase, attempt=attempt.number or None, member=attempt.member_id,
                            session=attempt.session_id, **fields)

    # ---- connecting -----------------------------------------------------------------------
    def _ping(self, attempt: SessionAttempt, conn: int) -> bool:
        if not self.ping_url:
            return True
        self._record(attempt, conn, "ping", "invoke")
        try:
            with urllib.request.urlopen(self.ping_url, timeout=self.timings.connect_timeout) as response:
                ok = response.status == 200
        except (urllib.error.URLError, OSError) as exc:
            self._record(attempt, conn, "ping", "fail", error=str(exc)[:200])
            return False
        self._record(attempt, conn, "ping", "ok" if ok else "fail")
        return ok

    def _open(self, attempt: SessionAttempt, op: str, query: dict[str, str]) -> bool:
        """Open the attempt's next socket (the caller holds the lifecycle lock)."""
        self.conn += 1
        conn = self.conn
        if not self._ping(attempt, conn):
            return False
        target = f"{self.url}?{urlencode({**query, 'client': self.client_id, 'conn': conn})}"
        self._record(attempt, conn, op, "invoke", msg=query)
        started = time.monotonic()
        metric = "connect" if op == "connect" else "reconnect"
        try:
            # UTF-8 is still validated, by the C decoder when the frame becomes text; websocket-client's
            # own validator is pure Python and was the largest cost per received message.
            ws = websocket.create_connection(target, timeout=self.timings.connect_timeout, enable_multithread=True,
                                             skip_utf8_validation=True)
        except (websocket.WebSocketException, OSError) as exc:
            error = f"{getattr(exc, 'status_code', '')} {exc}".strip()[:300]
            self._record(attempt, conn, op, "fail", error=error)
            self.metric(metric, (time.monotonic() - started) * 1000, error)
            return False
        ws.settimeout(None)
        attempt.ws, attempt.conn = ws, conn
        self._record(attempt, conn, op, "ok")
        self.metric(metric, (time.monotonic() - started) * 1000, None)
        self._spawn(self._read, ws, conn, attempt)
        return True

    def connect(self, session_type: str, target_num_members: int | None = None, *, private: bool = False,
                session_id: str | None = None) -> bool:
        """Join a session in a new attempt; the previous attempt is closed first (after any rejoin
        in flight). True once the socket is open."""
        query: dict[str, str] = {"sessionType": session_type}
        if session_id is not None:
            query["sessionId"] = session_id
        else:
            query["targetNumMembers"] = str(target_num_members)
            if private:
                query["private"] = "true"
        with self._lifecycle:
            self._end(self.attempt)
            attempt = self.attempt = SessionAttempt(self.attempt.number + 1, joined_at=time.monotonic(),
                                                    private_host=private and session_id is None)
            if not self._open(attempt, "connect", query):
                return False
            self._spawn(self._heartbeat_loop, attempt)
            return True

    def rejoin(self) -> bool:
        """Put a new socket in place of this member's current one (bounded by ``max_rejoins``)."""
        attempt = self.attempt
        return self._rejoin(attempt, attempt.ws)

    def _can_rejoin(self, attempt: SessionAttempt) -> bool:
        return (not attempt.ended and attempt.stopped is None and attempt.member_id is not None
                and attempt.rejoins < self.timings.max_rejoins)

    def _rejoin(self, attempt: SessionAttempt, dead: websocket.WebSocket | None) -> bool:
        """Replace ``dead`` (the socket given up on, or None); True if the attempt has a socket again."""
        with self._lifecycle:
            if attempt.ws is not None and attempt.ws is not dead:
                return True  # another rejoin already put a new socket in place
            if not self._can_rejoin(attempt):
                return False
            attempt.rejoins += 1
            attempt.rejoining += 1
            try:
                self._drop_socket(attempt)
                query = {"memberId": attempt.member_id}
                if attempt.session_id:
                    query["sessionId"] = attempt.session_id
                attempt.unanswered = 0
                attempt.heartbeat_sent.clear()
                return self._open(attempt, "rejoin", query)
            finally:
                attempt.rejoining -= 1

    def _rejoin_until_back(self, attempt: SessionAttempt, dead: websocket.WebSocket | None) -> bool:
        """Rejoin with a client's backoff until a socket is back or rejoins are spent; a client that
        cannot get back ends the attempt. True if it is back. The caller has counted this loop in
        ``attempt.rejoining`` (so the player is never seen lost between the drop and the loop)."""
        try:
            while self._can_rejoin(attempt):
                if self._rejoin(attempt, dead):
                    return True
                if attempt.closed.wait(min(2.0, 0.2 * attempt.rejoins)):
                    break
        finally:
            with self._lifecycle:
                attempt.rejoining -= 1
        self._end(attempt)
        return False

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        threading.Thread(target=target, args=args, daemon=True).start()

    # ---- receiving ----------------------------------------------------------------------
    def _read(self, ws: websocket.WebSocket, conn: int, attempt: SessionAttempt) -> None:
        while True:
            try:
                text = ws.recv()
            except (websocket.WebSocketException, OSError, ValueError):
                text = None
            if not text:
                self._socket_lost(ws, conn, attempt)
                return
            try:
                frame = json.loads(text)
            except ValueError:
                self._record(attempt, conn, "recv", "ok", msg={"type": "<not json>", "raw": str(text)[:200]})
                continue
            messages = frame if isinstance(frame, list) else [frame]
            # Messages in a HEARTBEAT answer are resends the client asked for, not notifications.
            via = "HEARTBEAT" if messages and isinstance(messages[0], dict) and messages[0].get(
                "type") == "HEARTBEAT" else None
            for message in messages:
                if not isinstance(message, dict):
                    continue
                try:
                    self._handle(message, ws, conn, attempt, via if message.get("type") != "HEARTBEAT" else None)
                except Exception as exc:  # a relay's odd message must not stop this socket's reading
                    self._record(attempt, conn, "recv", "ok", msg={"type": "<unreadable>", "raw": str(message)[:200],
                                                                   "error": f"{type(exc).__name__}: {exc}"})

    def _handle(self, message: dict[str, Any], ws: websocket.WebSocket, conn: int, attempt: SessionAttempt,
                via: str | None) -> None:
        """One received message: it changes only its own attempt, and stops or answers count only on
        that attempt's current socket."""
        kind = message.get("type")
        parsed = parse_payload(message.get("payload")) if kind == "MESSAGE" else None
        current = attempt.ws is ws
        answered = False
        with self._changed:
            if kind == "CONNECTION":
                attempt.member_id = message.get("memberId", attempt.member_id)
            elif kind == "PRIVATE_SESSION_PENDING":
                attempt.session_id = message.get("sessionId", attempt.session_id)
            elif kind == "SESSION_CONNECT":
                attempt.session_id = message.get("sessionId", attempt.session_id)
                attempt.member_num = message.get("memberNum")
                if not attempt.started and attempt.joined_at is not None:
                    self.metric("time to SESSION_CONNECT", (time.monotonic() - attempt.joined_at) * 1000, None)
                attempt.started = True
                pinned = message.get("pinnedMessage") or {}
                attempt.pinned_time = max(attempt.pinned_time, time_ms(pinned.get("time")))
            elif kind == "MESSAGE":
                if message.get("pinned"):
                    attempt.pinned_time = max(attempt.pinned_time, time_ms(message.get("time")))
                if parsed is not None and message.get("time") is not None:
                    self.metric("message fan-out", max(0.0, time.time() * 1000 - parsed["ts"]), None)
            elif kind == "HEARTBEAT" and current:
                attempt.unanswered = 0
                if attempt.heartbeat_sent:
                    sent = attempt.heartbeat_sent.pop(0)
                    self.metric("heartbeat round trip", (time.monotonic() - sent) * 1000, None)
                    answered = True
            elif kind in STOPS and current:
                attempt.stopped = kind
            attempt.messages.append(message)
            attempt.counts[kind] += 1
            self._changed.notify_all()
        if answered:
            self._record(attempt, conn, "heartbeat", "ok")
        self._record(attempt, conn, "recv", "ok", msg=message, pid=parsed["pid"] if parsed else None, via=via)
        if kind in STOPS and current:
            self._end(attempt)

    def _socket_lost(self, ws: websocket.WebSocket, conn: int, attempt: SessionAttempt) -> None:
        with self._lifecycle:
            if attempt.ended or attempt.ws is not ws:
                return  # closed or replaced by this client: not news
            again = self._can_rejoin(attempt)
            attempt.rejoining += again
            attempt.ws = None
            self._record(attempt, conn, "close", "info", error="socket closed by the other side")
            _shutdown(ws)
        with self._changed:
            self._changed.notify_all()
        if again:
            self._spawn(self._rejoin_until_back, attempt, ws)

    def wait_for(self, kind: str, timeout: float, count: int = 1) -> bool:
        """Until the current attempt received ``count`` messages of ``kind``, it stopped or ended, or
        ``timeout``."""
        deadline = time.monotonic() + timeout
        attempt = self.attempt
        with self._changed:
            while attempt.counts[kind] < count:
                left = deadline - time.monotonic()
                if left <= 0 or attempt.ended or (attempt.stopped and kind != attempt.stopped):
                    return False
                self._changed.wait(left)
        return True

    # ---- sending ------------------------------------------------------------------------
    def _send(self, attempt: SessionAttempt, op: str, body: dict[str, Any], pid: str | None = None) -> bool:
        ws, conn = attempt.ws, attempt.conn
        self._record(attempt, conn, op, "invoke", msg=body, pid=pid)
        if ws is None or attempt.stopped or attempt.ended:
            self._record(attempt, conn, op, "fail", pid=pid, error="no open socket")
            return False
        try:
            ws.send(json.dumps(body))  # one frame at a time: the socket is opened with enable_multithread
        except (websocket.WebSocketException, OSError) as exc:
            # Written or not, nobody can tell: the outcome is unknown.
            self._record(attempt, conn, op, "info", pid=pid, error=str(exc)[:200])
            return False
        if op != "heartbeat":
            self._record(attempt, conn, op, "ok", pid=pid)
        return True

    def send_message(self, body: str = "", pinned: bool = False) -> str:
        pid = f"{self.client_id}-{next(self._pids)}"
        action: dict[str, Any] = {"action": "SEND_MESSAGE", "payload": payload_for(pid, body)}
        if pinned:
            action["pinned"] = True
        self._send(self.attempt, "send", action, pid)
        return pid

    def heartbeat(self) -> None:
        """One HEARTBEAT now, with ``inclMessagesAfter`` and ``waitingFor`` what is missing."""
        self._heartbeat(self.attempt)

    def _heartbeat(self, attempt: SessionAttempt) -> None:
        waiting = []
        if attempt.member_id is None:
            waiting.append("CONNECTION")
        if attempt.private_host and attempt.session_id is None:
            waiting.append("PRIVATE_SESSION_PENDING")
        if not attempt.started:
            waiting.append("SESSION_CONNECT")
        body: dict[str, Any] = {"action": "HEARTBEAT", "inclMessagesAfter": attempt.pinned_time}
        if waiting:
            body["waitingFor"] = waiting
        attempt.unanswered += 1
        attempt.heartbeat_sent.append(time.monotonic())
        self._send(attempt, "heartbeat", body)

    def end_session(self) -> None:
        self._send(self.attempt, "end", {"action": "END_SESSION"})

    def _heartbeat_loop(self, attempt: SessionAttempt) -> None:
        timings = self.timings
        while not attempt.ended and not attempt.stopped:
            fast = attempt.unanswered >= timings.unanswered_before_fast
            if attempt.closed.wait(timings.fast_heartbeat_interval if fast else timings.heartbeat_interval):
                return
            if attempt.stopped or attempt.rejoining:
                continue
            if attempt.unanswered >= timings.unanswered_before_rejoin:
                for sent in attempt.heartbeat_sent:
                    self._record(attempt, attempt.conn, "heartbeat", "info",
                                 error=f"unanswered for {time.monotonic() - sent:.1f} s")
                with self._lifecycle:
                    attempt.rejoining += 1
                if not self._rejoin_until_back(attempt, attempt.ws):
                    return
                continue
            self._heartbeat(attempt)

    # ---- closing --------------------------------------------------------------------------
    def _drop_socket(self, attempt: SessionAttempt) -> None:
        ws, attempt.ws = attempt.ws, None
        if ws is not None:
            self._record(attempt, attempt.conn, "close", "invoke")
            _shutdown(ws)
            self._record(attempt, attempt.conn, "close", "ok")

    def _end(self, attempt: SessionAttempt) -> None:
        with self._lifecycle:
            attempt.ended = True
            attempt.closed.set()
            self._drop_socket(attempt)
        with self._changed:
            self._changed.notify_all()

    def close(self) -> None:
        """End the current attempt and close its socket; ``connect`` starts a new one."""
        self._end(self.attempt)


def _shutdown(ws: websocket.WebSocket) -> None:
    # Not ws.close(): it waits for the peer's close frame inside a bare `except:`, which swallows a
    # greenlet kill, so a Locust user stopped at that moment would never stop.
    with contextlib.suppress(websocket.WebSocketException, OSError):
        ws.send_close()
    ws.shutdown()

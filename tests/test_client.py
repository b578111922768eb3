"""The game-like client against the reference relay on the local stack, through the chaos proxy."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from harness.client import ClientTimings, RelayClient, parse_payload, payload_for
from harness.history import History
from harness.http_server import LoopbackHTTPServer
from harness.proxy.faults import parse_fault
from harness.proxy.server import ChaosProxy
from harness.stack.local_stack import LocalStack, StackOptions
from tests.stack_support import wait_until

FAST = ClientTimings(heartbeat_interval=0.3, fast_heartbeat_interval=0.1, unanswered_before_fast=2,
                     unanswered_before_rejoin=5, max_rejoins=3, connect_timeout=5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with LocalStack(StackOptions(log_dir=tmp_path_factory.mktemp("client-stack"))) as running:
        yield running


@pytest.fixture
def proxy(stack):
    running = ChaosProxy(stack.endpoints["websocket"], seed=11).start()
    yield running
    running.stop()


def _client(stack, proxy, history, name, timings=FAST):
    return RelayClient(proxy.endpoint, history, name, ping_url=stack.endpoints["http"] + "/ping", timings=timings)


def _pair(stack, proxy, history, prefix, session_type):
    """Two clients in a started session."""
    a, b = _client(stack, proxy, history, f"{prefix}a"), _client(stack, proxy, history, f"{prefix}b")
    assert a.connect(session_type, 2) and b.connect(session_type, 2)
    assert a.wait_for("SESSION_CONNECT", 10) and b.wait_for("SESSION_CONNECT", 10)
    return a, b


def _add(proxy, **spec):
    proxy.call(proxy.add_fault(parse_fault(spec, spec.get("name", "f"))))


def _sockets_of(proxy, client):
    """The query-string tags of the client's sockets open at the proxy, read on the proxy's loop."""
    async def tags():
        return [c.tags for c in proxy.connections.values() if c.tags.get("client") == client]
    return proxy.call(tags())


class GatedPing:
    """A loopback ``/ping`` that answers 200 while its gate is open and holds callers while it is
    shut; ``held`` is set once a caller waits (so a test knows a rejoin is in flight)."""

    def __init__(self) -> None:
        self.gate, self.held = threading.Event(), threading.Event()
        self.gate.set()
        gated = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not gated.gate.is_set():
                    gated.held.set()
                    gated.gate.wait(30)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = LoopbackHTTPServer(Handler, "127.0.0.1", 0, "gated ping").start()
        self.url = self.server.endpoint + "/ping"


def test_a_session_with_messages_writes_a_complete_history(stack, proxy):
    history = History()
    a, b = _client(stack, proxy, history, "a"), _client(stack, proxy, history, "b")
    assert a.connect("client-test", 2) and b.connect("client-test", 2)
    assert a.wait_for("SESSION_CONNECT", 10) and b.wait_for("SESSION_CONNECT", 10)
    pid = a.send_message("hello")
    assert a.wait_for("MESSAGE", 10) and b.wait_for("MESSAGE", 10)  # the relay sends to both at once
    assert parse_payload(b.attempt.messages[-1]["payload"])["pid"] == pid
    a.close()
    b.close()
    records = history.drain()
    ops = {(r["client"], r["op"], r["phase"]) for r in records}
    for client in ("a", "b"):
        for op in (("ping", "ok"), ("connect", "invoke"), ("connect", "ok"), ("close", "ok")):
            assert (client, *op) in ops
    receipts = [r for r in records if r["op"] == "recv" and r.get("pid") == pid]
    assert {r["client"] for r in receipts} == {"a", "b"}
    assert all(r["session"] == a.attempt.session_id and r["member"] for r in receipts)
    assert [r["phase"] for r in records if r["op"] == "send"] == ["invoke", "ok"]


def test_a_lost_session_connect_is_recovered_with_waiting_for(stack, proxy):
    _add(proxy, name="lose-start", type="drop", direction="downstream", match={"type": "SESSION_CONNECT"}, count=1)
    history = History()
    a, b = _pair(stack, proxy, history, "w", "waiting")
    asks = [r["msg"].get("waitingFor") for r in history.drain() if r["op"] == "heartbeat" and r["phase"] == "invoke"]
    assert ["SESSION_CONNECT"] in asks
    assert len(proxy.fault_log.entries) == 2  # one SESSION_CONNECT lost per connection, both recovered
    a.close()
    b.close()


def test_a_lost_pinned_message_comes_back_with_incl_messages_after(stack, proxy):
    history = History()
    a, b = _pair(stack, proxy, history, "p", "pinned")
    _add(proxy, name="lose-pin", type="drop", direction="downstream",
         match={"type": "MESSAGE", "tags": {"client": "pb"}}, count=1)
    a.send_message("board", pinned=True)
    assert b.wait_for("MESSAGE", 10)  # the next HEARTBEAT answer carries it
    [recovered] = [m for m in b.attempt.messages if m["type"] == "MESSAGE"]
    assert recovered.get("pinned") is True and b.attempt.pinned_time == recovered["time"]
    a.close()
    b.close()


def test_five_unanswered_beats_make_the_client_rejoin(stack, proxy):
    history = History()
    a, b = _pair(stack, proxy, history, "r", "silent")
    # Only the first socket (its query names targetNumMembers) goes silent, not the rejoined one.
    _add(proxy, name="silence", type="blackhole", direction="downstream",
         match={"type": "HEARTBEAT", "tags": {"client": "rb", "targetNumMembers": "2"}})
    wait_until(lambda: b.attempt.rejoins == 1 and b.conn == 2, timeout=15, what="a rejoin after silence")
    assert b.wait_for("SESSION_CONNECT", 10, count=2)  # the relay hands the session back on rejoin
    records = history.drain()
    assert any(r["op"] == "heartbeat" and r["phase"] == "info" and r["client"] == "rb" for r in records)
    assert any(r["op"] == "rejoin" and r["phase"] == "ok" and r["client"] == "rb" for r in records)
    a.close()
    b.close()


def test_a_dropped_socket_is_rejoined_and_overwrites_stop_the_old_client(stack, proxy):
    history = History()
    a, b = _pair(stack, proxy, history, "d", "drops")
    assert proxy.call(proxy.disconnect_all()) == 2
    wait_until(lambda: a.conn == 2 and b.conn == 2 and a.attempt.ws and b.attempt.ws, timeout=15, what="both to rejoin")
    intruder = _client(stack, proxy, history, "intruder")
    intruder.attempt.member_id, intruder.attempt.session_id = b.attempt.member_id, b.attempt.session_id
    assert intruder.rejoin()
    # Whichever reaches b first: the overwrite notice, or INVALID_CONNECTION for a heartbeat that
    # raced it. Either way the old client stops, and does not fight for the member.
    wait_until(lambda: b.attempt.stopped, timeout=10, what="the overwritten client to stop")
    assert b.attempt.stopped in ("CONNECTION_OVERWRITE", "INVALID_CONNECTION") and b.attempt.ws is None
    assert b.attempt.rejoins == 1
    a.end_session()
    # SESSION_END, or INVALID_CONNECTION when a heartbeat overtakes it: both end the client's session.
    wait_until(lambda: a.attempt.stopped and intruder.attempt.stopped, timeout=10, what="the session to end for both")
    assert {a.attempt.stopped, intruder.attempt.stopped} <= {"SESSION_END", "INVALID_CONNECTION"}
    for client in (a, b, intruder):
        client.close()


def test_a_refused_join_is_a_failed_connect_in_the_history(stack, proxy):
    history = History()
    client = _client(stack, proxy, history, "refused")
    assert not client.connect("x", session_id="no-such-session")
    [failed] = [r for r in history.drain() if r["op"] == "connect" and r["phase"] == "fail"]
    assert "404" in failed["error"]


def test_a_join_during_a_rejoin_in_flight_keeps_each_socket_s_own_identity(stack, proxy):
    """The deploy-profile false alarm: a new join while a rejoin is still opening its socket. The join
    waits for the rejoin, closes the socket it opened, and every record keeps its own attempt's
    member and session (before the fix, the rejoin was recorded with no member or the new one)."""
    history, ping = History(), GatedPing()
    try:
        a = _client(stack, proxy, history, "ka")
        b = RelayClient(proxy.endpoint, history, "kb", ping_url=ping.url, timings=FAST)
        assert a.connect("kept", 2) and b.connect("kept", 2)
        assert a.wait_for("SESSION_CONNECT", 10) and b.wait_for("SESSION_CONNECT", 10)
        old = (b.attempt.member_id, b.attempt.session_id)
        assert _sockets_of(proxy, "kb") and _sockets_of(proxy, "kb")[0]["conn"] == "1"
        ping.gate.clear()
        rejoin = threading.Thread(target=b.rejoin, daemon=True)
        rejoin.start()
        assert ping.held.wait(10), "the rejoin never pinged"
        assert b.attempt.ws is None and not b.lost  # a rejoin in flight is not a lost player
        join = threading.Thread(target=b.connect, args=("kept-apart", 2), daemon=True)
        join.start()
        ping.gate.set()
        rejoin.join(15)
        join.join(15)
        c = _client(stack, proxy, history, "kc")
        assert c.connect("kept-apart", 2) and b.wait_for("SESSION_CONNECT", 10) and c.wait_for("SESSION_CONNECT", 10)
        new = (b.attempt.member_id, b.attempt.session_id)
        assert new[0] not in (None, old[0]) and new[1] not in (None, old[1])
        # Only the new attempt's socket stays open, and its query string names it.
        wait_until(lambda: [t["conn"] for t in _sockets_of(proxy, "kb")] == [str(b.conn)], timeout=10,
                   what="the rejoin's socket to be closed")
    finally:
        ping.server.stop()
    records = [r for r in history.drain() if r["client"] == "kb"]
    [rejoin_conn] = {r["conn"] for r in records if r["op"] == "rejoin"}
    assert all((r.get("member"), r.get("session")) == old for r in records if r["conn"] == rejoin_conn)
    assert any(r["op"] == "rejoin" and r["phase"] == "ok" for r in records)
    for record in records:
        if record["op"] == "recv" and record["msg"]["type"] == "SESSION_CONNECT":
            assert (record["member"], record["session"]) in (old, new), record
            assert record["session"] == record["msg"]["sessionId"]
    assert not any(r.get("member") == old[0] for r in records if r["conn"] > rejoin_conn)
    assert {r["attempt"] for r in records if r["conn"] <= rejoin_conn} == {1}
    assert {r["attempt"] for r in records if r["conn"] > rejoin_conn} == {2}
    for client in (a, b, c):
        client.close()


def test_times_as_strings_and_unreadable_messages_never_stop_a_socket_s_reading():
    """A relay of other habits: ``time`` as a numeric string with a fraction, a ``time`` that is no
    number, a ``type`` that is a list. The client records what it could not read and reads on, so
    the messages after them are never taken for lost."""
    from websockets.sync.server import serve

    def relay(socket):
        socket.send(json.dumps({"type": "CONNECTION", "memberId": "m1"}))
        socket.send(json.dumps({"type": "SESSION_CONNECT", "sessionId": "s1", "memberNum": 0,
                                "pinnedMessage": {"time": "1732000000000.5", "message": "pin"}}))
        socket.send(json.dumps({"type": "MESSAGE", "time": "soon", "pinned": True, "memberNum": 0,
                                "message": payload_for("x-0")}))
        socket.send(json.dumps({"type": ["MESSAGE"], "memberNum": 0}))
        socket.send(json.dumps({"type": "MESSAGE", "time": 1732000000001, "memberNum": 0,
                                "message": payload_for("x-1")}))
        for _ in socket:  # until the client closes
            pass

    server = serve(relay, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        history = History()
        client = RelayClient(f"ws://127.0.0.1:{server.socket.getsockname()[1]}", history, "odd", timings=FAST)
        assert client.connect("g", 2)
        assert client.wait_for("MESSAGE", 10, count=2)
        unreadable = [r for r in history.drain() if r["op"] == "recv" and r["msg"].get("type") == "<unreadable>"]
        assert len(unreadable) == 1 and unreadable[0]["msg"]["error"].startswith("TypeError")
        client.close()
    finally:
        server.shutdown()

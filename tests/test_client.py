"""The game-like client against the reference relay on the local stack, through the chaos proxy."""

from __future__ import annotations

import pytest

from harness.client import ClientTimings, RelayClient, parse_payload
from harness.history import History
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


def test_a_session_with_messages_writes_a_complete_history(stack, proxy):
    history = History()
    a, b = _client(stack, proxy, history, "a"), _client(stack, proxy, history, "b")
    assert a.connect("client-test", 2) and b.connect("client-test", 2)
    assert a.wait_for("SESSION_CONNECT", 10) and b.wait_for("SESSION_CONNECT", 10)
    pid = a.send_message("hello")
    assert a.wait_for("MESSAGE", 10) and b.wait_for("MESSAGE", 10)  # the relay sends to both at once
    assert parse_payload(b.messages[-1]["payload"])["pid"] == pid
    a.close()
    b.close()
    records = history.drain()
    ops = {(r["client"], r["op"], r["phase"]) for r in records}
    for client in ("a", "b"):
        for op in (("ping", "ok"), ("connect", "invoke"), ("connect", "ok"), ("close", "ok")):
            assert (client, *op) in ops
    receipts = [r for r in records if r["op"] == "recv" and r.get("pid") == pid]
    assert {r["client"] for r in receipts} == {"a", "b"}
    assert all(r["session"] == a.session_id and r["member"] for r in receipts)
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
    [recovered] = [m for m in b.messages if m["type"] == "MESSAGE"]
    assert recovered.get("pinned") is True and b.pinned_time == recovered["time"]
    a.close()
    b.close()


def test_five_unanswered_beats_make_the_client_rejoin(stack, proxy):
    history = History()
    a, b = _pair(stack, proxy, history, "r", "silent")
    # Only the first socket (its query names targetNumMembers) goes silent, not the rejoined one.
    _add(proxy, name="silence", type="blackhole", direction="downstream",
         match={"type": "HEARTBEAT", "tags": {"client": "rb", "targetNumMembers": "2"}})
    wait_until(lambda: b.rejoins == 1 and b.conn == 2, timeout=15, what="a rejoin after silence")
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
    wait_until(lambda: a.conn == 2 and b.conn == 2 and a.ws and b.ws, timeout=15, what="both to rejoin")
    intruder = _client(stack, proxy, history, "intruder")
    intruder.member_id, intruder.session_id = b.member_id, b.session_id
    assert intruder.rejoin()
    # Whichever reaches b first: the overwrite notice, or INVALID_CONNECTION for a heartbeat that
    # raced it. Either way the old client stops, and does not fight for the member.
    wait_until(lambda: b.stopped, timeout=10, what="the overwritten client to stop")
    assert b.stopped in ("CONNECTION_OVERWRITE", "INVALID_CONNECTION") and b.ws is None
    assert b.rejoins == 1
    a.end_session()
    # SESSION_END, or INVALID_CONNECTION when a heartbeat overtakes it: both end the client's session.
    wait_until(lambda: a.stopped and intruder.stopped, timeout=10, what="the session to end for both")
    assert {a.stopped, intruder.stopped} <= {"SESSION_END", "INVALID_CONNECTION"}
    for client in (a, b, intruder):
        client.close()


def test_a_refused_join_is_a_failed_connect_in_the_history(stack, proxy):
    history = History()
    client = _client(stack, proxy, history, "refused")
    assert not client.connect("x", session_id="no-such-session")
    [failed] = [r for r in history.drain() if r["op"] == "connect" and r["phase"] == "fail"]
    assert "404" in failed["error"]

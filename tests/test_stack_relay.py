"""The reference relay on the local stack, through real sockets: a whole game's life."""

from __future__ import annotations

import urllib.request

import pytest
import websocket

from harness.stack.local_stack import LocalStack, StackOptions
from tests.stack_support import Client


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with LocalStack(StackOptions(log_dir=tmp_path_factory.mktemp("relay-stack"))) as running:
        yield running


def _url(stack, **query):
    return stack.endpoints["websocket"] + "?" + "&".join(f"{k}={v}" for k, v in query.items())


def test_ping_and_notify_disconnect_over_http(stack):
    base = stack.endpoints["http"]
    with urllib.request.urlopen(f"{base}/ping", timeout=10) as response:
        assert (response.status, response.read()) == (200, b"pong")
    host = Client(_url(stack, sessionType="n", targetNumMembers=2))
    member = host.wait_for("CONNECTION")[0]["memberId"]
    with urllib.request.urlopen(f"{base}/notifyDisconnect/{member}", timeout=10) as response:
        assert response.status == 200
    opcode, data = host.ws.recv_data(control_frame=True)
    assert (opcode, int.from_bytes(data[:2], "big")) == (websocket.ABNF.OPCODE_CLOSE, 1000)
    host.close()


def test_a_whole_game_public_private_rejoin_pinned_recovery_end(stack):
    # Public matchmaking for two.
    a = Client(_url(stack, sessionType="duel", targetNumMembers=2))
    b = Client(_url(stack, sessionType="duel", targetNumMembers=2))
    start_a, start_b = a.wait_for("SESSION_CONNECT")[0], b.wait_for("SESSION_CONNECT")[0]
    assert start_a["sessionId"] == start_b["sessionId"]
    assert {start_a["memberNum"], start_b["memberNum"]} == {0, 1}

    # Pinned and plain messages reach both, the sender included.
    a.send({"action": "SEND_MESSAGE", "payload": "board-1", "pinned": True})
    b.send({"action": "SEND_MESSAGE", "payload": "gg"})
    for client in (a, b):
        payloads = [m["payload"] for m in client.wait_for("MESSAGE", 2)]
        assert sorted(payloads) == ["board-1", "gg"]
    pinned = next(m for m in a.of("MESSAGE") if m.get("pinned"))

    # b drops; a is told; b rejoins by memberId and gets the session and the pinned message back.
    member_b = b.of("CONNECTION")[0]["memberId"]
    b.close()
    assert a.wait_for("MEMBER_DISCONNECT")[0]["memberNum"] == start_b["memberNum"]
    b2 = Client(_url(stack, memberId=member_b, sessionId=start_b["sessionId"]))
    rejoin = b2.wait_for("SESSION_CONNECT")[0]
    assert rejoin["pinnedMessage"]["payload"] == "board-1" and rejoin["memberPresence"] == [True, True]
    assert a.wait_for("MEMBER_RECONNECT")[0]["memberNum"] == start_b["memberNum"]

    # Heartbeat recovery: what b2 says it is still waiting for, and the pinned message, come back.
    b2.send({"action": "HEARTBEAT", "waitingFor": ["SESSION_CONNECT"], "inclMessagesAfter": pinned["time"] - 1})
    frame = b2.recv_frame()
    assert [m["type"] for m in frame] == ["HEARTBEAT", "SESSION_CONNECT", "MESSAGE"]
    assert frame[2]["payload"] == "board-1"

    # A private session alongside.
    host = Client(_url(stack, sessionType="duel", targetNumMembers=2, private="true"))
    private_id = host.wait_for("PRIVATE_SESSION_PENDING")[0]["sessionId"]
    guest = Client(_url(stack, sessionType="duel", sessionId=private_id))
    assert guest.wait_for("SESSION_CONNECT")[0]["sessionId"] == private_id
    assert host.wait_for("SESSION_CONNECT")[0]["sessionId"] == private_id

    # End: everyone in that session hears it; the others do not.
    a.send({"action": "END_SESSION"})
    a.wait_for("SESSION_END")
    b2.wait_for("SESSION_END")
    host.send({"action": "HEARTBEAT"})
    assert host.recv_frame() == [{"type": "HEARTBEAT"}]
    for client in (a, b2, host, guest):
        client.close()


def test_a_refused_handshake_carries_the_relays_status_and_reason(stack):
    with pytest.raises(Exception) as refused:
        Client(_url(stack, sessionType="duel", targetNumMembers=1))
    assert "400" in str(refused.value)
    assert "targetNumMembers" in str(refused.value)

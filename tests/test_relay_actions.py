"""$default actions: SEND_MESSAGE, HEARTBEAT, END_SESSION, bad frames and departed connections."""

from __future__ import annotations

import time


def _started(relay, n=2):
    conns = [relay.joined(sessionType="t", targetNumMembers=str(n)) for _ in range(n)]
    relay.settle()
    return conns


def test_send_message_reaches_every_connected_member_including_the_sender(relay):
    a, b, c = _started(relay, 3)
    before = int(time.time() * 1000)
    assert relay.act(b, {"action": "SEND_MESSAGE", "payload": "hello"})["statusCode"] == 200
    for conn in (a, b, c):
        [message] = relay.messages(conn, "MESSAGE")
        assert message["payload"] == "hello" and message["memberNum"] == 1
        assert message["time"] >= before and "pinned" not in message


def test_pinned_message_is_stored_and_recovered_by_heartbeat_and_rejoin(relay):
    a, b = _started(relay)
    relay.act(a, {"action": "SEND_MESSAGE", "payload": "first", "pinned": True})
    relay.act(b, {"action": "SEND_MESSAGE", "payload": "second", "pinned": True})
    [_, pinned] = relay.messages(a, "MESSAGE")
    assert pinned["pinned"] is True and pinned["payload"] == "second"

    relay.act(a, {"action": "HEARTBEAT", "inclMessagesAfter": pinned["time"] - 1})
    frame = relay.connections.frames[a][-1]
    assert frame[0] == {"type": "HEARTBEAT"}
    assert frame[1] == {"type": "MESSAGE", "payload": "second", "time": pinned["time"], "memberNum": 1,
                        "pinned": True}
    relay.act(a, {"action": "HEARTBEAT", "inclMessagesAfter": pinned["time"]})
    assert relay.connections.frames[a][-1] == [{"type": "HEARTBEAT"}]

    member_b = relay.messages(b, "CONNECTION")[0]["memberId"]
    relay.disconnect(b)
    b2 = relay.joined(memberId=member_b)
    relay.settle()
    [start] = relay.messages(b2, "SESSION_CONNECT")
    assert start["pinnedMessage"] == {"payload": "second", "time": pinned["time"], "memberNum": 1}


def test_heartbeat_resends_what_the_client_is_waiting_for(relay):
    host = relay.joined(sessionType="t", targetNumMembers="2", private="true")
    relay.settle()
    relay.act(host, {"action": "HEARTBEAT",
                     "waitingFor": ["CONNECTION", "PRIVATE_SESSION_PENDING", "SESSION_CONNECT"]})
    frame = relay.connections.frames[host][-1]
    assert [m["type"] for m in frame] == ["HEARTBEAT", "CONNECTION", "PRIVATE_SESSION_PENDING"]
    session_id = frame[2]["sessionId"]
    guest = relay.joined(sessionType="t", sessionId=session_id)
    relay.settle()
    relay.act(guest, {"action": "HEARTBEAT", "waitingFor": ["PRIVATE_SESSION_PENDING", "SESSION_CONNECT"]})
    frame = relay.connections.frames[guest][-1]
    assert [m["type"] for m in frame] == ["HEARTBEAT", "SESSION_CONNECT"]
    assert frame[1]["memberNum"] == 1 and frame[1]["sessionId"] == session_id


def test_heartbeat_pushes_expiry_forward_once_half_used(relay):
    a, b = _started(relay)
    table = relay.tables["ConnectionsTable"]
    soon = int(time.time()) + 5
    relay.client.update_item(TableName=table, Key={"id": {"S": a}}, UpdateExpression="SET expireAfter = :e",
                             ExpressionAttributeValues={":e": {"N": str(soon)}})
    fresh = {i["id"]: int(i["expireAfter"]) for i in relay.items("ConnectionsTable")}[b]
    relay.act(a, {"action": "HEARTBEAT"})
    relay.act(b, {"action": "HEARTBEAT"})
    after = {i["id"]: int(i["expireAfter"]) for i in relay.items("ConnectionsTable")}
    assert after[a] >= int(time.time()) + 600 - 5
    assert after[b] == fresh  # not yet half used: no write


def test_end_session_tells_everyone_and_removes_all_records(relay):
    a, b = _started(relay)
    relay.act(a, {"action": "END_SESSION"})
    relay.settle()
    for conn in (a, b):
        assert relay.messages(conn, "SESSION_END") == [{"type": "SESSION_END"}]
    for table in ("SessionsTable", "ConnectionsTable", "MembersTable"):
        assert [i for i in relay.items(table) if not i["id"].startswith(".")] == []
    # The original crashed here; now the ended connection is told it is no longer valid.
    for action in ({"action": "END_SESSION"}, {"action": "HEARTBEAT"}, {"action": "SEND_MESSAGE", "payload": "x"}):
        response = relay.act(b, action)
        assert response["statusCode"] == 410
        assert relay.messages(b)[-1] == {"type": "INVALID_CONNECTION"}


def test_ending_a_pending_public_session_retires_its_open_pointer(relay):
    a = relay.joined(sessionType="t", targetNumMembers="3")
    relay.act(a, {"action": "END_SESSION"})
    assert relay.items("SessionsTable") == []
    b = relay.joined(sessionType="t", targetNumMembers="3")
    assert b


def test_bad_frames_get_an_error_and_change_nothing(relay):
    a, b = _started(relay)
    before = relay.session_items()
    cases = {
        "not json": "not JSON",
        "[1, 2]": "JSON object",
        "": "empty frame",
        '{"action": "DANCE"}': "unknown action 'DANCE'",
        '{"payload": "x"}': "unknown action None",
        '{"action": "SEND_MESSAGE"}': "payload",
        '{"action": "SEND_MESSAGE", "payload": 5}': "payload",
        '{"action": "SEND_MESSAGE", "payload": "x", "pinned": "yes"}': "pinned",
        '{"action": "HEARTBEAT", "inclMessagesAfter": "soon"}': "inclMessagesAfter",
        '{"action": "HEARTBEAT", "inclMessagesAfter": true}': "inclMessagesAfter",
        '{"action": "HEARTBEAT", "waitingFor": ["LUNCH"]}': "waitingFor",
        '{"action": "HEARTBEAT", "waitingFor": "CONNECTION"}': "waitingFor",
    }
    for body, expected in cases.items():
        response = relay.act(a, body)
        assert response["statusCode"] == 400, body
        error = relay.messages(a)[-1]
        assert error["type"] == "ERROR" and expected in error["reason"], (body, error)
    assert relay.session_items() == before
    assert relay.messages(b, "MESSAGE") == []


def test_oversized_payload_is_refused_with_the_limit(relay):
    a, b = _started(relay)
    response = relay.act(a, {"action": "SEND_MESSAGE", "payload": "x" * (128 * 1024)})
    assert response["statusCode"] == 413
    assert "131072" in relay.messages(a)[-1]["reason"]
    assert relay.messages(b, "MESSAGE") == []
    relay.act(a, {"action": "SEND_MESSAGE", "payload": "x" * (120 * 1024)})
    assert len(relay.messages(b, "MESSAGE")) == 1


def test_action_from_a_connection_that_never_joined_is_invalid(relay):
    relay.connections.open("stranger=")
    response = relay.act("stranger=", {"action": "SEND_MESSAGE", "payload": "x"})
    assert response["statusCode"] == 410
    assert relay.messages("stranger=") == [{"type": "INVALID_CONNECTION"}]


def _joined_long_ago(relay, conn_id):
    """As if the connection joined a minute ago: past any $connect still in flight."""
    relay.client.update_item(TableName=relay.tables["ConnectionsTable"], Key={"id": {"S": conn_id}},
                             UpdateExpression="SET connectedAt = :t",
                             ExpressionAttributeValues={":t": {"N": str(int(time.time()) - 60)}})


def test_a_410_during_broadcast_marks_that_member_gone_and_others_still_receive(relay):
    a, b, c = _started(relay, 3)
    _joined_long_ago(relay, b)
    relay.connections.drop(b)  # the socket vanished without a $disconnect reaching the relay
    relay.act(a, {"action": "SEND_MESSAGE", "payload": "still here?"})
    assert [m["payload"] for m in relay.messages(a, "MESSAGE")] == ["still here?"]
    assert [m["payload"] for m in relay.messages(c, "MESSAGE")] == ["still here?"]
    assert b not in {i["id"] for i in relay.items("ConnectionsTable")}
    [session] = relay.session_items()
    assert [("connId" in m) for m in session["members"]] == [True, False, True]
    relay.settle()
    assert relay.messages(a, "MEMBER_DISCONNECT") == [{"type": "MEMBER_DISCONNECT", "memberNum": 1}]
    assert relay.messages(c, "MEMBER_DISCONNECT") == [{"type": "MEMBER_DISCONNECT", "memberNum": 1}]


def test_a_rejoin_told_of_before_its_connect_returned_is_kept_and_recovers_by_heartbeat(relay):
    """API Gateway answers 410 until $connect returns, and the stream may post the rejoiner's
    SESSION_CONNECT first (seen at 150 players on the local stack: the rejoined member was departed
    and its next SEND_MESSAGE got INVALID_CONNECTION). The member stays, and asks again."""
    a, b = _started(relay)
    member_b = relay.messages(b, "CONNECTION")[0]["memberId"]
    relay.disconnect(b)
    b2 = "rejoining="
    assert relay.ws("$connect", b2, query={"memberId": member_b})["statusCode"] == 200
    relay.settle()  # SESSION_CONNECT to b2 answered 410: its handshake is not complete yet
    assert relay.messages(b2) == []
    relay.connections.open(b2)
    relay.act(b2, {"action": "HEARTBEAT", "waitingFor": ["SESSION_CONNECT"]})
    assert [m["type"] for m in relay.connections.frames[b2][-1]] == ["HEARTBEAT", "SESSION_CONNECT"]
    assert relay.act(b2, {"action": "SEND_MESSAGE", "payload": "back"})["statusCode"] == 200
    assert [m["payload"] for m in relay.messages(a, "MESSAGE")] == ["back"]


def test_notify_disconnect_closes_the_members_socket_and_ping_answers(relay):
    assert relay.http("GET", "/ping", "/ping") == {"statusCode": 200, "headers": {"content-type": "text/plain"},
                                                  "body": "pong"}
    _, b = _started(relay)
    member_b = relay.messages(b, "CONNECTION")[0]["memberId"]
    response = relay.http("GET", "/notifyDisconnect/{memberId}", f"/notifyDisconnect/{member_b}",
                          memberId=member_b)
    assert response["statusCode"] == 200
    assert b in relay.connections.closed
    # Unknown members and members already gone still get 200.
    for member in ("nobody", member_b):
        response = relay.http("GET", "/notifyDisconnect/{memberId}", f"/notifyDisconnect/{member}",
                              memberId=member)
        assert response["statusCode"] == 200

"""$connect rows of the protocol: public matchmaking, private sessions, rejoins, refusals."""

from __future__ import annotations


def test_public_matchmaking_fills_a_session_and_tells_everyone(relay):
    a = relay.joined(sessionType="chess", targetNumMembers="2")
    relay.settle()
    [conn_a] = relay.messages(a, "CONNECTION")
    assert relay.messages(a, "SESSION_CONNECT") == []

    b = relay.joined(sessionType="chess", targetNumMembers="2")
    relay.settle()
    [conn_b] = relay.messages(b, "CONNECTION")
    [start_a] = relay.messages(a, "SESSION_CONNECT")
    [start_b] = relay.messages(b, "SESSION_CONNECT")
    assert start_a["sessionId"] == start_b["sessionId"]
    assert (start_a["memberNum"], start_b["memberNum"]) == (0, 1)
    assert start_a["memberPresence"] == [True, True]
    assert start_a["sessionType"] == "chess"
    assert conn_a["memberId"] != conn_b["memberId"]
    # The last joiner gets its CONNECTION and SESSION_CONNECT in one frame, in that order.
    assert [m["type"] for m in relay.connections.frames[b][0]] == ["CONNECTION", "SESSION_CONNECT"]
    # The session is no longer open to matchmaking.
    assert not [i for i in relay.items("SessionsTable") if i["id"].startswith(".open.")]


def test_slots_follow_join_order_and_types_do_not_mix(relay):
    conns = [relay.joined(sessionType="race", targetNumMembers="3") for _ in range(2)]
    other = relay.joined(sessionType="race", targetNumMembers="2")
    other_type = relay.joined(sessionType="chess", targetNumMembers="3")
    conns.append(relay.joined(sessionType="race", targetNumMembers="3"))
    relay.settle()
    starts = [relay.messages(c, "SESSION_CONNECT") for c in conns]
    assert [s[0]["memberNum"] for s in starts] == [0, 1, 2]
    assert len({s[0]["sessionId"] for s in starts}) == 1
    assert relay.messages(other, "SESSION_CONNECT") == []
    assert relay.messages(other_type, "SESSION_CONNECT") == []


def test_ids_are_url_safe_with_at_least_64_bits(relay):
    a = relay.joined(sessionType="t", targetNumMembers="2")
    relay.settle()
    member_id = relay.messages(a, "CONNECTION")[0]["memberId"]
    session_id = relay.session_items()[0]["id"]
    for value in (member_id, session_id):
        assert len(value) >= 11  # 11 base64 characters carry 66 bits
        assert set(value) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_private_session_host_and_join(relay):
    host = relay.joined(sessionType="cards", targetNumMembers="2", private="true")
    relay.settle()
    [pending] = relay.messages(host, "PRIVATE_SESSION_PENDING")
    assert pending["targetNumMembers"] == 2
    # A public matchmaker of the same kind is never put into the private session.
    public = relay.joined(sessionType="cards", targetNumMembers="2")
    guest = relay.joined(sessionType="cards", sessionId=pending["sessionId"])
    relay.settle()
    [start_host] = relay.messages(host, "SESSION_CONNECT")
    [start_guest] = relay.messages(guest, "SESSION_CONNECT")
    assert start_host["sessionId"] == start_guest["sessionId"] == pending["sessionId"]
    assert relay.messages(guest, "PRIVATE_SESSION_PENDING") == []
    assert relay.messages(public, "SESSION_CONNECT") == []


def test_private_join_refusals_say_why(relay):
    host = relay.joined(sessionType="cards", targetNumMembers="2", private="true")
    public = relay.joined(sessionType="cards", targetNumMembers="3")
    relay.settle()
    session_id = relay.messages(host, "PRIVATE_SESSION_PENDING")[0]["sessionId"]
    public_id = next(s["id"] for s in relay.session_items() if not s["isPrivate"])
    assert public
    cases = [
        ({"sessionType": "cards", "sessionId": "nosuchsession"}, 404, "no private session"),
        ({"sessionType": "cards", "sessionId": public_id}, 404, "no private session"),
        ({"sessionType": "chess", "sessionId": session_id}, 400, "sessionType"),
    ]
    for query, status, reason in cases:
        _, response = relay.connect(**query)
        assert response["statusCode"] == status, query
        assert reason in response["body"]
    relay.joined(sessionType="cards", sessionId=session_id)
    _, response = relay.connect(sessionType="cards", sessionId=session_id)
    assert response["statusCode"] == 409
    assert "full" in response["body"]


def test_bad_query_strings_are_refused_with_a_reason_and_write_nothing(relay):
    cases = [
        {},
        {"targetNumMembers": "2"},
        {"sessionType": "t"},
        {"sessionType": "t", "targetNumMembers": "1"},
        {"sessionType": "t", "targetNumMembers": "two"},
        {"sessionType": "t", "targetNumMembers": "-3"},
        {"sessionType": "t", "targetNumMembers": "999"},
        {"sessionType": "t", "targetNumMembers": "2", "private": "yes"},
        {"sessionType": "t", "sessionId": "abc", "private": "true"},
        {"sessionType": "t", "sessionId": "abc", "targetNumMembers": "2"},
        {"sessionType": "t", "sessionId": "a.b"},
        {"memberId": "m", "sessionType": "t"},
        {"memberId": "bad id"},
        {"sessionType": "tab\there", "targetNumMembers": "2"},
    ]
    for query in cases:
        _, response = relay.connect(**query)
        assert response["statusCode"] == 400, query
        assert response["body"] and "\n" not in response["body"]
    for table in ("SessionsTable", "ConnectionsTable", "MembersTable"):
        assert relay.items(table) == []


def test_pending_member_who_leaves_gives_up_the_slot(relay):
    a = relay.joined(sessionType="t", targetNumMembers="3")
    b = relay.joined(sessionType="t", targetNumMembers="3")
    relay.disconnect(a)
    pointer = next(i for i in relay.items("SessionsTable") if i["id"].startswith(".open."))
    assert pointer["numWaiting"] == 1
    c = relay.joined(sessionType="t", targetNumMembers="3")
    d = relay.joined(sessionType="t", targetNumMembers="3")
    relay.settle()
    assert [relay.messages(x, "SESSION_CONNECT")[0]["memberNum"] for x in (b, c, d)] == [0, 1, 2]
    assert relay.messages(a, "SESSION_CONNECT") == []
    assert len(relay.items("MembersTable")) == 3


def test_last_pending_member_leaving_removes_the_session_and_pointer(relay):
    a = relay.joined(sessionType="t", targetNumMembers="2")
    relay.disconnect(a)
    for table in ("SessionsTable", "ConnectionsTable", "MembersTable"):
        assert relay.items(table) == []
    b = relay.joined(sessionType="t", targetNumMembers="2")
    relay.settle()
    assert relay.messages(b, "SESSION_CONNECT") == []


def _started_pair(relay):
    a = relay.joined(sessionType="t", targetNumMembers="2")
    b = relay.joined(sessionType="t", targetNumMembers="2")
    relay.settle()
    member_b = relay.messages(b, "CONNECTION")[0]["memberId"]
    session_id = relay.messages(b, "SESSION_CONNECT")[0]["sessionId"]
    return a, b, member_b, session_id


def test_rejoin_after_a_drop_tells_the_others(relay):
    a, b, member_b, _ = _started_pair(relay)
    relay.disconnect(b)
    relay.settle()
    assert relay.messages(a, "MEMBER_DISCONNECT") == [{"type": "MEMBER_DISCONNECT", "memberNum": 1}]
    b2 = relay.joined(memberId=member_b)
    relay.settle()
    [start] = relay.messages(b2, "SESSION_CONNECT")
    assert start["memberNum"] == 1 and start["memberPresence"] == [True, True]
    assert relay.messages(a, "MEMBER_RECONNECT") == [{"type": "MEMBER_RECONNECT", "memberNum": 1}]
    assert relay.messages(b2, "CONNECTION") == []


def test_rejoin_on_a_new_socket_overwrites_the_old_one(relay):
    a, b, member_b, _ = _started_pair(relay)
    b2 = relay.joined(memberId=member_b)
    relay.settle()
    assert relay.messages(b, "CONNECTION_OVERWRITE") == [{"type": "CONNECTION_OVERWRITE"}]
    assert len(relay.messages(b2, "SESSION_CONNECT")) == 1
    assert relay.messages(a, "MEMBER_DISCONNECT") == relay.messages(a, "MEMBER_RECONNECT") == []
    # The old socket is no longer the member: its actions are refused and its close changes nothing.
    relay.act(b, {"action": "HEARTBEAT"})
    assert relay.messages(b)[-1] == {"type": "INVALID_CONNECTION"}
    relay.disconnect(b)
    relay.settle()
    assert relay.messages(a, "MEMBER_DISCONNECT") == []
    assert [m.get("connId") for s in relay.session_items() for m in s["members"]] == [a, b2]


def test_rejoin_with_session_id_works_after_the_member_record_expired(relay):
    _, b, member_b, session_id = _started_pair(relay)
    relay.disconnect(b)
    relay.client.delete_item(TableName=relay.tables["MembersTable"], Key={"id": {"S": member_b}})
    _, response = relay.connect(memberId=member_b)
    assert response["statusCode"] == 404
    assert "sessionId" in response["body"]
    b2 = relay.joined(memberId=member_b, sessionId=session_id)
    relay.settle()
    assert relay.messages(b2, "SESSION_CONNECT")[0]["memberNum"] == 1
    _, response = relay.connect(memberId="unknownmember")
    assert response["statusCode"] == 404


def test_rejoin_into_a_pending_session_keeps_the_slot(relay):
    host = relay.joined(sessionType="t", targetNumMembers="2", private="true")
    relay.settle()
    member_id = relay.messages(host, "CONNECTION")[0]["memberId"]
    host2 = relay.joined(memberId=member_id)
    relay.settle()
    assert relay.messages(host, "CONNECTION_OVERWRITE")
    types = [m["type"] for m in relay.messages(host2)]
    assert types == ["CONNECTION", "PRIVATE_SESSION_PENDING"]

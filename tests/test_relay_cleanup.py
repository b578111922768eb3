"""The scheduled clean-up function: expiry on time, members told, schedule switching itself."""

from __future__ import annotations

import time


def _expire(relay, logical_id, key):
    relay.client.update_item(TableName=relay.tables[logical_id], Key={"id": {"S": key}},
                             UpdateExpression="SET expireAfter = :e",
                             ExpressionAttributeValues={":e": {"N": str(int(time.time()) - 1)}})


def _started(relay, n=2):
    conns = [relay.joined(sessionType="t", targetNumMembers=str(n)) for _ in range(n)]
    relay.settle()
    return conns


def test_expired_connection_is_closed_and_the_others_are_told(relay):
    a, b = _started(relay)
    _expire(relay, "ConnectionsTable", b)
    counts = relay.cleanup()
    assert counts["connections"] == 1
    assert b in relay.connections.closed
    assert b not in {i["id"] for i in relay.items("ConnectionsTable")}
    relay.settle()
    assert relay.messages(a, "MEMBER_DISCONNECT") == [{"type": "MEMBER_DISCONNECT", "memberNum": 1}]
    # The member can still come back until its own record expires.
    member_b = relay.messages(b, "CONNECTION")[0]["memberId"]
    assert relay.joined(memberId=member_b)


def test_expired_session_ends_with_session_end_to_connected_members(relay):
    a, b = _started(relay)
    [session] = relay.session_items()
    _expire(relay, "SessionsTable", session["id"])
    assert relay.cleanup()["sessions"] == 1
    relay.settle()
    for conn in (a, b):
        assert relay.messages(conn, "SESSION_END") == [{"type": "SESSION_END"}]
    for table in ("SessionsTable", "MembersTable"):
        assert relay.items(table) == []
    assert [i for i in relay.items("ConnectionsTable") if not i["id"].startswith(".")] == []


def test_expired_pending_public_session_takes_its_open_pointer_with_it(relay):
    relay.joined(sessionType="t", targetNumMembers="3")
    [session] = relay.session_items()
    _expire(relay, "SessionsTable", session["id"])
    relay.cleanup()
    assert relay.items("SessionsTable") == []


def test_members_expire_only_once_disconnected_and_fresh_items_stay(relay):
    a, b = _started(relay)
    member_a = relay.messages(a, "CONNECTION")[0]["memberId"]
    member_b = relay.messages(b, "CONNECTION")[0]["memberId"]
    relay.disconnect(b)
    _expire(relay, "MembersTable", member_a)
    _expire(relay, "MembersTable", member_b)
    counts = relay.cleanup()
    assert counts["members"] == 1
    assert {i["id"] for i in relay.items("MembersTable")} == {member_a}
    assert len(relay.session_items()) == 1
    assert a in {i["id"] for i in relay.items("ConnectionsTable")}


def test_expired_delivery_records_are_removed(relay):
    _started(relay)
    ledger = [i["id"] for i in relay.items("ConnectionsTable") if i["id"].startswith(".sent.")]
    assert len(ledger) == 3  # INSERT: CONNECTION to a; MODIFY: a frame each to a and b
    _expire(relay, "ConnectionsTable", ledger[0])
    assert relay.cleanup()["delivery_records"] == 1
    remaining = [i["id"] for i in relay.items("ConnectionsTable") if i["id"].startswith(".sent.")]
    assert sorted(remaining) == sorted(ledger[1:])


def test_schedule_turns_on_with_live_state_and_off_when_none_is_left(relay):
    assert relay.rule_state() == "DISABLED"
    a, _ = _started(relay)
    assert relay.rule_state() == "ENABLED"
    relay.cleanup()
    assert relay.rule_state() == "ENABLED"  # live state: keep running
    relay.act(a, {"action": "END_SESSION"})
    relay.settle()
    counts = relay.cleanup()
    assert counts.get("schedule_disabled") == 1
    assert relay.rule_state() == "DISABLED"
    relay.joined(sessionType="t", targetNumMembers="2")
    relay.settle()
    assert relay.rule_state() == "ENABLED"

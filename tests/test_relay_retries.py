"""Designed for retries and races: the stream function run twice, partial batch failures,
concurrent joins racing for the same session."""

from __future__ import annotations

import threading
from collections import Counter


def _session_records(records):
    return [r for r in records if not r["dynamodb"]["Keys"]["id"]["S"].startswith(".")]


def test_stream_batch_delivered_twice_notifies_once(relay):
    a = relay.joined(sessionType="t", targetNumMembers="2")
    b = relay.joined(sessionType="t", targetNumMembers="2")
    records = relay.stream.poll()
    assert len(_session_records(records)) == 2
    assert relay.invoke_stream(records) == {"batchItemFailures": []}
    assert relay.invoke_stream(records) == {"batchItemFailures": []}
    assert [m["type"] for m in relay.messages(a)] == ["CONNECTION", "SESSION_CONNECT"]
    assert [m["type"] for m in relay.messages(b)] == ["CONNECTION", "SESSION_CONNECT"]


def test_a_throttled_member_fails_only_its_record_and_the_retry_sends_each_frame_once(relay):
    a = relay.joined(sessionType="t", targetNumMembers="3")
    b = relay.joined(sessionType="t", targetNumMembers="3")
    relay.settle()
    c = relay.joined(sessionType="t", targetNumMembers="3")
    records = _session_records(relay.stream.poll())
    assert len(records) == 1
    relay.connections.throttled.add(b)
    result = relay.invoke_stream(records)
    assert result == {"batchItemFailures": [{"itemIdentifier": records[0]["dynamodb"]["SequenceNumber"]}]}
    relay.connections.throttled.clear()
    assert relay.invoke_stream(records) == {"batchItemFailures": []}
    relay.invoke_stream(records)
    for conn in (a, b, c):
        assert len(relay.messages(conn, "SESSION_CONNECT")) == 1, conn


def test_failed_record_stops_the_batch_so_later_records_keep_their_order(relay):
    a = relay.joined(sessionType="t", targetNumMembers="2")
    relay.settle()
    b = relay.joined(sessionType="t", targetNumMembers="2")
    relay.act(a, {"action": "END_SESSION"})
    records = _session_records(relay.stream.poll())
    assert [r["eventName"] for r in records] == ["MODIFY", "REMOVE"]
    relay.connections.throttled.add(b)
    result = relay.invoke_stream(records)
    assert result["batchItemFailures"] == [{"itemIdentifier": records[0]["dynamodb"]["SequenceNumber"]}]
    assert relay.messages(a, "SESSION_END") == []  # the later record waited
    relay.connections.throttled.clear()
    # The event source retries from the failed record onwards.
    assert relay.invoke_stream(records) == {"batchItemFailures": []}
    assert [m["type"] for m in relay.messages(a)] == ["CONNECTION", "SESSION_CONNECT", "SESSION_END"]
    assert [m["type"] for m in relay.messages(b)] == ["CONNECTION", "SESSION_CONNECT", "SESSION_END"]


def _race(count, join):
    barrier = threading.Barrier(count)
    results = [None] * count

    def run(index):
        barrier.wait(timeout=30)
        results[index] = join()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return results


def test_concurrent_public_joins_all_land_in_full_sessions(relay):
    results = _race(12, lambda: relay.connect(sessionType="race", targetNumMembers="3"))
    assert [r[1]["statusCode"] for r in results] == [200] * 12, [r[1] for r in results]
    sessions = relay.session_items()
    assert sorted(len(s["members"]) for s in sessions) == [3, 3, 3, 3]
    members = [m["connId"] for s in sessions for m in s["members"]]
    assert sorted(members) == sorted(r[0] for r in results)
    assert not [i for i in relay.items("SessionsTable") if i["id"].startswith(".open.")]


def test_concurrent_joins_for_the_last_private_slots_never_overfill(relay):
    host = relay.joined(sessionType="p", targetNumMembers="3", private="true")
    relay.settle()
    session_id = relay.messages(host, "PRIVATE_SESSION_PENDING")[0]["sessionId"]
    results = _race(6, lambda: relay.connect(sessionType="p", sessionId=session_id))
    statuses = Counter(r[1]["statusCode"] for r in results)
    assert statuses == {200: 2, 409: 4}
    [session] = relay.session_items()
    assert len(session["members"]) == 3
    assert len(relay.items("MembersTable")) == 3

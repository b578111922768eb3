"""Each checker against small hand-made histories: ones that must pass and ones that must fail."""

from __future__ import annotations

import json
from itertools import count

import pytest

from harness.checkers import (
    cleanup,
    client_errors,
    delivery,
    health,
    liveness,
    membership,
    notifications,
    pinned,
)
from harness.checkers.model import Run, fault_span

_mono = count()


def r(client, op, phase, t, conn=1, **fields):
    """One history record; ``t`` in ms. ``mono`` follows the order records are written here."""
    return {"t": t, "mono": next(_mono) / 1e6, "client": client, "conn": conn, "op": op, "phase": phase, **fields}


def start(client, session, num, t, member=None, size=2, session_type="game", presence=None, **fields):
    message = {"type": "SESSION_CONNECT", "sessionType": session_type, "sessionId": session, "memberNum": num,
               "memberPresence": presence or [True] * size}
    return r(client, "recv", "ok", t, member=member or f"m-{client}", session=session, msg=message, **fields)


def joined(client, session, num, t, size=2, **fields):
    query = {"sessionType": "game", "targetNumMembers": str(size)}
    return [r(client, "connect", "invoke", t, msg=query), r(client, "connect", "ok", t + 5),
            start(client, session, num, t + 10, size=size, **fields)]


def sent(client, pid, t, session="S", pinned_flag=False):
    body = {"action": "SEND_MESSAGE", "payload": json.dumps({"pid": pid, "ts": t, "body": ""})}
    if pinned_flag:
        body["pinned"] = True
    return [r(client, "send", "invoke", t, session=session, pid=pid, msg=body, member=f"m-{client}"),
            r(client, "send", "ok", t + 1, session=session, pid=pid, member=f"m-{client}")]


def got(client, pid, t, session="S", via=None, pinned_flag=False, relay_time=None):
    message = {"type": "MESSAGE", "payload": json.dumps({"pid": pid, "ts": t - 5, "body": ""}),
               "time": relay_time or t, "memberNum": 0}
    if pinned_flag:
        message["pinned"] = True
    return r(client, "recv", "ok", t, session=session, pid=pid, msg=message, via=via, member=f"m-{client}")


def pair(t=0):
    return joined("a", "S", 0, t) + joined("b", "S", 1, t + 20)


def fault(client, kind, t, direction="downstream", target=None, **params):
    """A wire fault on ``client``'s socket; ``target`` adds what the proxy says the message was
    (``pids``, ``types``). Without them it reads like a fault log that did not describe messages."""
    return {"t": t, "seam": "wire", "fault": kind, "params": params, "rule": {"id": f"rule-{kind}", "seq": 1},
            "target": {"conn": f"/?client={client}#0", "direction": direction, "frame": 1, **(target or {})}}


def _only(result, invariant):
    assert [f.invariant for f in result.violations] == [invariant], [f.message for f in result.violations]
    return result.violations[0]


# ---- membership ----------------------------------------------------------------------------------
def test_membership_passes_for_a_proper_session():
    result = membership.check(Run(pair()))
    assert result.passed and result.checked == 1


def test_membership_catches_an_over_full_session():
    history = pair() + joined("c", "S", 1, 100)
    history[-1]["msg"]["memberNum"] = 2
    result = membership.check(Run(history))
    assert [f.invariant for f in result.violations] == ["slots are 0..N-1", "no over-full session"]
    finding = result.violations[1]
    assert "held 3 members" in finding.message and len(finding.excerpt) == 3


def test_membership_catches_two_members_in_one_slot():
    history = joined("a", "S", 0, 0) + joined("b", "S", 0, 20)
    finding = _only(membership.check(Run(history)), "one member per slot")
    assert {rec["client"] for rec in finding.excerpt} == {"a", "b"}


def test_membership_catches_a_member_in_two_sessions_and_disagreeing_shapes():
    history = pair() + [start("a", "T", 0, 200, member="m-a")]
    assert _only(membership.check(Run(history)), "no member in two sessions").excerpt[-1]["msg"]["sessionId"] == "T"
    history = pair()
    history[-1]["msg"]["sessionType"] = "other"
    _only(membership.check(Run(history)), "members agree on the session")


def test_membership_catches_a_stranger_in_a_private_session():
    pending = {"type": "PRIVATE_SESSION_PENDING", "sessionId": "P", "targetNumMembers": 2}
    host = [r("h", "connect", "invoke", 0, msg={"sessionType": "game", "targetNumMembers": "2", "private": "true"}),
            r("h", "recv", "ok", 10, msg=pending, member="m-h"), start("h", "P", 0, 50)]
    guest = [r("g", "connect", "invoke", 20, msg={"sessionType": "game", "sessionId": "P"}), start("g", "P", 1, 50)]
    assert membership.check(Run(host + guest)).passed
    stranger = [r("x", "connect", "invoke", 20, msg={"sessionType": "game", "targetNumMembers": "2"}),
                start("x", "P", 1, 50)]
    finding = _only(membership.check(Run(host + stranger)), "a private session holds only those who joined it")
    assert finding.excerpt[0]["client"] == "x"


# ---- liveness ------------------------------------------------------------------------------------
def test_liveness_passes_when_waiting_players_are_matched():
    assert liveness.check(Run(pair())).passed


def test_liveness_catches_two_players_left_waiting_for_the_same_pool():
    history = [r("a", "connect", "invoke", 0, msg={"sessionType": "game", "targetNumMembers": "2"}),
               r("a", "connect", "ok", 5),
               r("b", "connect", "invoke", 10, msg={"sessionType": "game", "targetNumMembers": "2"}),
               r("b", "connect", "ok", 15), r("a", "heartbeat", "ok", 40_000)]
    finding = _only(liveness.check(Run(history)), "matched within a bound")
    assert "a, b all waited" in finding.message
    # The same wait is fine if it is a fault that keeps them apart, until the bound after it.
    faulty = Run(history, faults=[fault("a", "pause", 30_000, seconds=5)])
    assert liveness.check(faulty).passed


def test_liveness_lets_fewer_players_than_a_session_holds_wait_but_not_a_full_session():
    def waiting(client, t):
        return [r(client, "connect", "invoke", t, msg={"sessionType": "game", "targetNumMembers": "3"}),
                r(client, "connect", "ok", t + 5)]
    two = waiting("a", 0) + waiting("b", 10) + [r("a", "heartbeat", "ok", 40_000)]
    assert liveness.check(Run(two)).passed  # a session of 3 with 2 in it: not full, nobody to match them with
    three = two + waiting("c", 20)
    finding = _only(liveness.check(Run(three)), "matched within a bound")
    assert "a, b, c all waited for a 'game' session of 3" in finding.message


# ---- delivery ------------------------------------------------------------------------------------
def test_delivery_passes_when_every_member_gets_each_message_once_in_order():
    history = pair() + sent("a", "a-0", 1000) + sent("a", "a-1", 1100)
    history += [got(c, pid, t) for c in ("a", "b") for pid, t in (("a-0", 1050), ("a-1", 1150))]
    history += [r("a", "heartbeat", "ok", 9000)]
    result = delivery.check(Run(history))
    assert result.passed and result.checked == 2


def test_delivery_catches_duplicates_unless_a_duplicate_fault_explains_them():
    history = pair() + sent("a", "a-0", 1000) + [got("a", "a-0", 1050), got("b", "a-0", 1050),
                                                    got("b", "a-0", 1060), r("a", "heartbeat", "ok", 9000)]
    finding = _only(delivery.check(Run(history)), "no duplicate delivery")
    assert finding.message == "b received a-0 2 times" and len(finding.excerpt) == 2
    explained = delivery.check(Run(history, faults=[fault("b", "duplicate", 1055, copies=1)]))
    assert explained.passed and explained.explained[0].explained_by[0]["fault"] == "duplicate"


def test_delivery_catches_a_phantom_and_reordering():
    history = pair() + [got("b", "z-9", 500)]
    _only(delivery.check(Run(history)), "no phantom delivery")
    history = pair() + sent("a", "a-0", 1000) + sent("a", "a-1", 1010)
    history += [got("a", "a-0", 1050), got("a", "a-1", 1060), got("b", "a-1", 1050), got("b", "a-0", 1060),
                r("a", "heartbeat", "ok", 9000)]
    finding = _only(delivery.check(Run(history, info={"rules": "reference"})), "per-sender order kept")
    assert [rec["pid"] for rec in finding.excerpt] == ["a-1", "a-0"]
    # The protocol promises no order (API Gateway invokes a socket's routes concurrently).
    assert delivery.check(Run(history, info={"rules": "protocol"})).passed


def test_delivery_attributes_each_loss():
    history = pair() + sent("a", "a-0", 1000) + [got("a", "a-0", 1050), r("a", "heartbeat", "ok", 9000)]
    finding = _only(delivery.check(Run(history)), "every send reaches every member connected throughout")
    assert finding.message == "a-0 from a never reached b"
    assert finding.excerpt[0]["pid"] == "a-0"
    explained = delivery.check(Run(history, faults=[fault("b", "drop", 1040)]))
    assert explained.passed and "explained by 1 injected fault" in explained.explained[0].message
    # A member who was not connected throughout is not owed the message.
    left = history + [r("b", "close", "invoke", 1500)]
    assert delivery.check(Run(left)).passed


# ---- notifications -------------------------------------------------------------------------------
def test_notifications_catch_a_notice_sent_twice():
    connection = {"type": "CONNECTION", "memberId": "m-a"}
    history = pair() + [r("a", "recv", "ok", 30, msg=connection), r("a", "recv", "ok", 31, msg=connection)]
    finding = _only(notifications.check(Run(history)), "exactly once per change")
    assert "CONNECTION 2 times" in finding.message
    resend = pair() + [r("a", "recv", "ok", 30, msg=connection), r("a", "recv", "ok", 31, msg=connection,
                                                                    via="HEARTBEAT")]
    assert notifications.check(Run(resend)).passed


def test_notifications_catch_a_member_disconnect_told_twice():
    gone = {"type": "MEMBER_DISCONNECT", "memberNum": 1}
    history = pair() + [r("a", "recv", "ok", 100, msg=gone, session="S"),
                        r("a", "recv", "ok", 200, msg=gone, session="S")]
    _only(notifications.check(Run(history)), "exactly once per change")
    back = {"type": "MEMBER_RECONNECT", "memberNum": 1}
    fine = pair() + [r("a", "recv", "ok", 100, msg=gone, session="S"), r("a", "recv", "ok", 150, msg=back,
                                                                          session="S"),
                     r("a", "recv", "ok", 200, msg=gone, session="S")]
    assert notifications.check(Run(fine)).passed


def test_notifications_catch_a_presence_that_misses_the_receiver():
    history = joined("a", "S", 0, 0) + [start("b", "S", 1, 30, presence=[True, False])]
    _only(notifications.check(Run(history)), "memberPresence matches who is connected")


# ---- pinned --------------------------------------------------------------------------------------
def test_pinned_converges_or_is_reported():
    base = pair() + sent("a", "a-0", 1000, pinned_flag=True) + [got("a", "a-0", 1050, pinned_flag=True,
                                                                    relay_time=1040)]
    beat = [r("b", "heartbeat", "ok", 9000, session="S")]
    finding = _only(pinned.check(Run(base + beat)), "pinned message converges")
    assert "b heartbeated" in finding.message
    recovered = base + [got("b", "a-0", 8000, via="HEARTBEAT", pinned_flag=True, relay_time=1040)] + beat
    result = pinned.check(Run(recovered))
    assert result.passed and result.checked == 1


# ---- clean-up ------------------------------------------------------------------------------------
def test_cleanup_is_skipped_without_a_scan_or_a_wait_and_judged_with_one():
    assert cleanup.check(Run([])).skipped.startswith("no end-of-run store scan")
    assert "--cleanup-wait" in cleanup.check(Run([], store={"cleanup_wait_s": 0, "tables": {}})).skipped
    left = {"cleanup_wait_s": 90, "rule_name": "local-cleanup", "rule_state": "ENABLED",
            "tables": {"SessionsTable": [{"id": "S"}], "ConnectionsTable": [{"id": ".sent.e.c"}]}}
    result = cleanup.check(Run([], store=left))
    assert [f.invariant for f in result.violations] == ["no orphaned records", "the clean-up schedule turns itself off"]
    clean = {"cleanup_wait_s": 90, "rule_state": "DISABLED", "tables": {"SessionsTable": []}}
    assert cleanup.check(Run([], store=clean)).passed


# ---- health --------------------------------------------------------------------------------------
def test_health_counts_errors_timeouts_and_given_up_batches():
    ok = [{"t": 1, "function": "F", "request_id": "1", "duration_ms": 3, "outcome": "ok"}]
    assert health.check(Run([], invocations=ok)).passed
    assert health.check(Run([])).skipped
    bad = ok + [{"t": 2, "function": "F", "request_id": "2", "duration_ms": 3, "outcome": "error",
                 "error": "KeyError: 'x'"}] * 2
    failure = {"requestContext": {"functionArn": "StreamFunction", "condition": "RetryAttemptsExhausted"},
               "DDBStreamBatchInfo": {"batchSize": 3}}
    result = health.check(Run([], invocations=bad, stream_failures=[failure]))
    assert [f.message for f in result.violations] == [
        "F: 2 error(s): KeyError: 'x'", "StreamFunction gave up on 3 record(s) (RetryAttemptsExhausted)"]



def test_a_batch_given_up_on_is_explained_only_when_every_try_of_it_was_failed_by_an_injected_fault():
    ok = [{"t": 1, "function": "StreamFunction", "request_id": "1", "duration_ms": 3, "outcome": "ok"}]
    failure = {"requestContext": {"functionArn": "StreamFunction", "condition": "RetryAttemptsExhausted",
                                  "approximateInvokeCount": 3},
               "DDBStreamBatchInfo": {"batchSize": 1, "startSequenceNumber": "110", "endSequenceNumber": "110"}}

    def injected(attempt, first="100", last="120", fault="error_after", function="StreamFunction"):
        return {"t": 10 + attempt, "seam": "invocation", "fault": fault, "params": {}, "rule": {"id": "r", "seq": 1},
                "target": {"function": function, "source": "stream", "event": ["stream", first, last, attempt]}}

    every_try = [injected(0), injected(1), injected(2)]
    result = health.check(Run([], faults=every_try, invocations=ok, stream_failures=[failure]))
    assert result.violations == [] and len(result.explained[0].explained_by) == 3
    for faults in (every_try[:2],  # one try failed by itself
                   [*every_try[:2], injected(2, first="111")],  # another batch
                   [*every_try[:2], injected(2, fault="latency")],  # slowed, not failed
                   [*every_try[:2], injected(2, function="WebSocketFunction")]):
        result = health.check(Run([], faults=faults, invocations=ok, stream_failures=[failure]))
        assert [f.message for f in result.violations] == [
            "StreamFunction gave up on 1 record(s) (RetryAttemptsExhausted)"]

# ---- a process kill explains only what it spans: from the kill until the restarted stack was ready ------
def kill(t, ready_t):
    """A kill logged at ``t`` and run.json's record of the stack that was ready again at ``ready_t``."""
    logged = {"t": t, "seam": "process", "fault": "kill", "target": {"scope": "stack"}, "params": {"seconds": 0.0},
              "rule": {"id": "killed", "seq": "killed"}}
    return [logged], {"stack_restarts": [{"rule": "killed", "killed_t": t, "ready_t": ready_t, "pids": [1, 2]}]}


@pytest.mark.parametrize(("kill_t", "ready_t", "explained"), [
    (5500, 7000, True),  # a-0 (sent at 1000, due by 6000) was in flight when the stack was killed
    (-2000, 500, False),  # the stack was back before a-0 was sent
    (6500, 8000, False),  # a-0 was overdue before the kill (a 5 s grace would have blamed the kill)
])
def test_a_kill_explains_a_loss_only_when_its_span_meets_the_message(kill_t, ready_t, explained):
    history = pair() + sent("a", "a-0", 1000) + [got("a", "a-0", 1050), r("a", "heartbeat", "ok", 9000)]
    faults, info = kill(kill_t, ready_t)
    result = delivery.check(Run(history, faults=faults, info=info))
    assert result.passed is explained
    assert [f.explained_by[0]["fault"] for f in result.explained] == (["kill"] if explained else [])


def test_a_kill_explains_handler_errors_and_5xx_rejoins_only_until_the_stack_was_ready():
    faults, info = kill(10_000, 11_000)
    failed = [{"t": t, "function": "F", "request_id": str(t), "duration_ms": 10, "outcome": "error",
               "error": "KeyError: 'm'"} for t in (10_500, 13_000)]
    result = health.check(Run([], faults=faults, invocations=failed, info=info))
    assert [f.excerpt[0]["t"] for f in result.explained] == [10_500]
    assert [f.excerpt[0]["t"] for f in result.violations] == [13_000]  # a store outage's 5 s grace would cover it
    rejoins = [r("a", "rejoin", "fail", t, conn=c, error="Handshake status 500 Internal Server Error")
               for c, t in ((2, 10_800), (3, 12_500))]
    errors = client_errors.check(Run(rejoins, faults=faults, info=info))
    assert [f.excerpt[0]["t"] for f in errors.explained] == [10_800]
    assert [f.excerpt[0]["t"] for f in errors.violations] == [12_500]


def test_a_kill_spans_until_the_end_when_the_stack_never_came_back_and_its_downtime_without_run_json():
    faults, info = kill(1000, None)
    run = Run([r("a", "heartbeat", "ok", 9000)], faults=faults, info=info)
    assert run.stack_faults_near(8000, 8500) and not run.stack_faults_near(0, 900)
    assert not Run([r("a", "heartbeat", "ok", 9000)], faults=faults).stack_faults_near(1100, 1200)


@pytest.mark.parametrize("records", [[], pair()])
def test_every_checker_accepts_any_history(records):
    for check in (membership, liveness, delivery, notifications, client_errors, pinned, cleanup, health):
        check.check(Run(records))


def test_a_fault_lasts_its_span_plus_the_delay_it_adds_but_a_clock_offset_is_no_duration():
    assert fault_span({"fault": "latency", "params": {"ms": 250}}) == 0.25
    assert fault_span({"fault": "store_outage", "params": {"seconds": 4}}) == 4
    assert fault_span({"fault": "reorder", "params": {"hold": 1, "max_wait_ms": 200}}) == 0.2
    assert fault_span({"fault": "clock_skew", "params": {"ms": 90_000, "seconds": 5}}) == 5
    assert fault_span({"fault": "clock_skew", "params": {"ms": -90_000, "seconds": 5}}) == 5

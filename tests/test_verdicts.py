"""The verdict: never a pass for what was not exercised; client-visible failures are findings; a fault
explains only what it could have caused; a crashing checker does not take the report down; the
protocol's documented variants (numbers as strings) are accepted; reference-only rules stay apart."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness import checkers
from harness.checkers import client_errors, delivery, health, membership, notifications, pinned
from harness.checkers.model import Run, lag_spans
from harness.report.build import EXIT_INCONCLUSIVE, build_report
from tests.planted import planted_relay
from tests.test_checkers import fault, got, joined, pair, r, sent, start
from tests.test_report import _run_folder


def _relayed():
    """A pair that exchanged one message, both receipts seen: everything a pass needs."""
    return pair() + sent("a", "a-0", 1000) + [got("a", "a-0", 1050), got("b", "a-0", 1050),
                                                r("a", "heartbeat", "ok", 9000)]


def _verdict(history, **run):
    results = checkers.run_checkers(Run(history, **run))
    return checkers.verdict(results, checkers.exercise(Run(history, **run)), Run(history, **run).lags)


# ---- 1. never pass what was not exercised ---------------------------------------------------------
@pytest.mark.parametrize(("history", "reason"), [
    ([], "no player ever started (0 history records)"),
    ([r("a", "connect", "invoke", 0, msg={"sessionType": "g", "targetNumMembers": "2"}),
      r("a", "connect", "fail", 5, error="[Errno 111] Connection refused")] * 3, "0 of 3 connects succeeded"),
    (joined("a", "S", 0, 0)[:2], "no session ever started: 1 of 1 connects succeeded"),
    (pair() + sent("a", "a-0", 1000), "no message was relayed: 1 sent, 0 delivered"),
])
def test_a_run_that_did_not_exercise_the_relay_is_inconclusive_and_says_why(history, reason):
    outcome, why = _verdict(history)
    assert outcome == "inconclusive" and reason in why


def test_a_run_that_exercised_the_relay_passes():
    assert _verdict(_relayed()) == ("pass", "no violation in 5 exercised check(s): 1 session(s), 2 deliveries")


def test_a_check_that_checked_nothing_is_not_exercised_and_not_scored():
    results = {c.name: c for c in checkers.run_checkers(Run(_relayed()))}
    assert results["pinned"].status == "not exercised" and not results["pinned"].passed
    assert results["pinned"].as_dict()["status"] == "not exercised"
    scored = [c for c in results.values() if c.status in ("pass", "fail")]
    assert checkers.reliability_score(list(results.values())) == 100.0 and len(scored) == 5


def test_nothing_listening_is_inconclusive_with_its_own_exit_status(tmp_path):
    history = [r("a", "connect", "invoke", 0, msg={"sessionType": "g", "targetNumMembers": "2"}),
               r("a", "connect", "fail", 5, error="[Errno 111] Connection refused")]
    status, results = build_report(_run_folder(tmp_path / "run", history))
    assert status == EXIT_INCONCLUSIVE == 3 and results["verdict"] == "inconclusive"
    assert results["verdict_reason"] == "the relay was never exercised: 0 of 1 connects succeeded"


def test_locust_against_a_port_where_nothing_listens_exits_inconclusive(tmp_path):
    """The issue's own example: `--host ws://127.0.0.1:1` used to print PASS with a score of 100 %."""
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "locust", "-f", "scenarios/relay.py", "--headless", "-u", "3", "-r",
                             "3", "-t", "4s", "--host", "ws://127.0.0.1:1", "--run-dir", str(run_dir)],
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 3, result.stderr[-2000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["verdict"] == "inconclusive"
    assert results["verdict_reason"].startswith("the relay was never exercised: 0 of ")
    assert "INCONCLUSIVE: the relay was never exercised" in result.stdout


# ---- 3. client-visible failures are findings -------------------------------------------------------
def test_an_internal_server_error_frame_is_a_finding_unless_a_stack_fault_explains_it():
    error = {"message": "Internal server error", "connectionId": "x", "requestId": "y"}
    history = _relayed() + [r("a", "recv", "ok", 2000, msg=error)]
    result = client_errors.check(Run(history))
    assert [f.invariant for f in result.violations] == ["no client-visible error"]
    assert "API Gateway error frame 'Internal server error'" in result.violations[0].message
    injected = {"t": 1990, "seam": "invocation", "fault": "error_after", "target": {"function": "WebSocketFunction"},
                "params": {}, "rule": {"id": "r", "seq": 1}}
    assert client_errors.check(Run(history, faults=[injected])).passed


def test_a_5xx_handshake_is_a_finding_a_4xx_with_a_reason_and_an_unreachable_target_are_not():
    def failed(error):
        return [r("a", "connect", "invoke", 0, msg={"sessionType": "g", "sessionId": "Q"}),
                r("a", "connect", "fail", 5, error=error)]
    result = client_errors.check(Run(failed("Handshake status 502 Bad Gateway -+-+- {} -+-+- b'upstream'")))
    assert "502 answer to a well-formed $connect" in result.violations[0].message
    assert client_errors.check(Run(failed("404 Handshake status 404 Not Found -+-+- b'no session Q'"))).passed
    for nothing_answered in ("[Errno 111] Connection refused",
                             "Handshake status 502 Bad Gateway -+-+- {} -+-+- b'chaos proxy: upstream "
                             "ws://127.0.0.1:1 failed: [Errno 111] Connect call failed'"):
        unreachable = client_errors.check(Run(failed(nothing_answered)))
        assert unreachable.passed and "1 handshake(s) got no HTTP answer" in unreachable.notes[0]


def test_a_message_whose_member_num_is_not_a_slot_is_a_finding():
    history = _relayed()
    history[-2]["msg"]["memberNum"] = -1
    finding = membership.check(Run(history)).violations[0]
    assert finding.invariant == "a MESSAGE names a slot of its session" and "memberNum -1" in finding.message


# ---- 4. a fault explains only what it could have caused ------------------------------------------
def test_a_loss_is_explained_only_by_a_fault_that_hit_that_message():
    history = pair() + sent("a", "a-0", 1000) + [got("a", "a-0", 1050), r("a", "heartbeat", "ok", 9000)]
    unrelated = fault("b", "drop", 1040, target={"types": ["HEARTBEAT"], "pids": []})
    assert [f.invariant for f in delivery.check(Run(history, faults=[unrelated])).violations] == [
        "every send reaches every member connected throughout"]
    that_one = fault("b", "drop", 1040, target={"types": ["MESSAGE"], "pids": ["a-0"]})
    assert delivery.check(Run(history, faults=[that_one])).passed
    on_the_send = fault("a", "drop", 1000, direction="upstream", target={"actions": ["SEND_MESSAGE"], "pids": ["a-0"]})
    assert delivery.check(Run(history, faults=[on_the_send])).passed
    other_client = fault("c", "drop", 1040, target={"types": ["MESSAGE"], "pids": ["a-0"]})
    assert not delivery.check(Run(history, faults=[other_client])).passed
    socket_ended = fault("b", "blackhole", 900)
    assert delivery.check(Run(history, faults=[socket_ended])).passed


def test_a_socket_ending_after_the_others_had_the_message_does_not_explain_its_loss():
    """The relay had sent a-0 to everyone by the time a got it (+ SETTLE_MS): b's socket reset 3 s
    later cannot be why b never got it (it made a planted fan-out bug pass for explained)."""
    history = pair() + sent("a", "a-0", 1000) + [got("a", "a-0", 1050), r("a", "heartbeat", "ok", 9000)]
    late = fault("b", "reset", 4000)
    assert [f.invariant for f in delivery.check(Run(history, faults=[late])).violations] == [
        "every send reaches every member connected throughout"]
    assert delivery.check(Run(history, faults=[fault("b", "reset", 1800)])).passed  # still in flight
    held = fault("b", "latency", 200, ms=3000)  # b's frames held back: the reset may have come first
    assert delivery.check(Run(history, faults=[held, late])).passed
    nobody_got_it = pair() + sent("a", "a-0", 1000) + [r("a", "heartbeat", "ok", 9000)]
    assert delivery.check(Run(nobody_got_it, faults=[late, fault("a", "reset", 4000)])).passed


def test_a_duplicate_rule_on_messages_does_not_explain_a_notice_received_twice():
    connect = start("a", "S", 0, 30)
    history = pair() + [connect, dict(connect, mono=connect["mono"] + 1e-9, t=31)]
    on_messages = fault("a", "duplicate", 30, target={"types": ["MESSAGE"], "pids": ["b-3"]}, copies=1)
    result = notifications.check(Run(history, faults=[on_messages]))
    assert [f.invariant for f in result.violations] == ["exactly once per change"]
    on_it = fault("a", "duplicate", 30, target={"types": ["SESSION_CONNECT"], "pids": []}, copies=1)
    assert notifications.check(Run(history, faults=[on_it])).passed


def test_faults_on_a_socket_are_tied_to_that_socket_by_its_counter():
    history = pair() + sent("a", "a-0", 1000) + [got("a", "a-0", 1050), r("a", "heartbeat", "ok", 9000)]
    earlier_socket = fault("b", "drop", 1040, target={"types": ["MESSAGE"], "pids": ["a-0"]})
    earlier_socket["target"]["conn"] = "/?client=b&conn=7#0"
    assert not delivery.check(Run(history, faults=[earlier_socket])).passed
    earlier_socket["target"]["conn"] = "/?client=b&conn=1#0"
    assert delivery.check(Run(history, faults=[earlier_socket])).passed


# ---- 5. crashing checkers and documented variants ---------------------------------------------------
def test_a_checker_that_crashes_is_an_error_and_the_rest_is_still_reported(monkeypatch):
    def broken(run):
        raise TypeError("'>' not supported between instances of 'str' and 'int'")
    monkeypatch.setattr(checkers, "CHECKERS", [*checkers.CHECKERS[:-1], ("health", "Function health", 2, broken)])
    results = checkers.run_checkers(Run(_relayed()))
    assert results[-1].status == "error" and results[-1].error.startswith("TypeError: '>' not supported")
    assert [c.status for c in results[:3]] == ["pass", "pass", "pass"]
    outcome, why = checkers.verdict(results, checkers.exercise(Run(_relayed())))
    assert outcome == "inconclusive" and why.startswith("the Function health check could not run: TypeError")


def test_numbers_as_strings_are_accepted():
    """The original Simple Relay sends pinnedMessage.time as a string (its README documents it)."""
    base = pair() + sent("a", "a-0", 1000, pinned_flag=True) + [got("a", "a-0", 1050, pinned_flag=True,
                                                                    relay_time="1040")]
    base[-1]["msg"]["memberNum"] = "0"
    base.append(got("b", "a-0", 1050, pinned_flag=True, relay_time="1040"))
    late = start("b", "S", "1", 8000, conn=2)
    late["msg"]["pinnedMessage"] = {"payload": "p", "time": "1040", "memberNum": "0"}
    history = base + [r("b", "rejoin", "ok", 7990, conn=2), late, r("b", "heartbeat", "ok", 9000, session="S")]
    for check in (pinned, membership, delivery, notifications):
        assert check.check(Run(history)).violations == [], check.__name__
    assert pinned.check(Run(history)).checked == 1


# ---- 6. reference-relay rules are kept apart ---------------------------------------------------------
def test_member_reconnect_twice_is_harmless_under_the_protocol_and_flagged_under_reference_rules():
    back = {"type": "MEMBER_RECONNECT", "memberNum": 1}
    history = pair() + [r("a", "recv", "ok", 100, msg=back, session="S"),
                        r("a", "recv", "ok", 200, msg=back, session="S")]
    assert notifications.check(Run(history, info={"rules": "protocol"})).passed
    assert not notifications.check(Run(history, info={"rules": "reference"})).passed
    gone = {"type": "MEMBER_DISCONNECT", "memberNum": 1}
    twice_gone = pair() + [r("a", "recv", "ok", 100, msg=gone, session="S"),
                           r("a", "recv", "ok", 200, msg=gone, session="S")]
    assert not notifications.check(Run(twice_gone, info={"rules": "protocol"})).passed
    missed = pair() + [r("a", "recv", "ok", 100, msg=gone, session="S"),
                       r("a", "recv", "ok", 200, conn=2, msg=gone, session="S")]
    assert notifications.check(Run(missed)).passed, "a receiver on a new socket may have missed the notice between"


# ---- the run's end: teardown is not a finding; an unscannable store is said ----------------------
def test_invocations_after_the_load_stopped_are_not_judged_and_injected_failures_are_explained():
    def invocation(t, request_id, outcome="ok"):
        return {"t": t, "function": "WebSocketFunction", "request_id": request_id, "duration_ms": 5,
                "outcome": outcome, "error": "EndpointConnectionError: store gone" if outcome != "ok" else ""}
    invocations = [invocation(100, "1"), invocation(200, "2", "error"), invocation(5000, "3", "error")]
    result = health.check(Run([], invocations=invocations, info={"ended_t": 1000}))
    assert len(result.violations) == 1 and result.checked == 2
    assert "1 invocation(s) started after the load stopped (teardown): not judged" in result.notes
    injected = {"t": 198, "seam": "invocation", "fault": "error_after", "params": {}, "rule": {"id": "r", "seq": 1},
                "target": {"function": "WebSocketFunction", "request_id": "2"}}
    explained = health.check(Run([], invocations=invocations, faults=[injected], info={"ended_t": 1000}))
    assert explained.passed and explained.explained[0].explained_by == [injected]


def test_a_phantom_in_an_incomplete_history_is_missing_data_not_a_violation():
    history = _relayed() + [got("b", "z-9", 500)]
    assert not delivery.check(Run(history)).passed
    incomplete = delivery.check(Run(history, info={"history_complete": False,
                                                   "history_missing": ["worker 2's last batch never arrived"]}))
    assert incomplete.passed and "worker 2's last batch never arrived" in incomplete.notes[0]


def test_results_carry_the_verdict_reason_and_statuses(tmp_path):
    status, results = build_report(_run_folder(tmp_path / "run", _relayed()))
    assert status == 0 and results["verdict"] == "pass" and results["exercised"]["deliveries"] == 2
    statuses = {c["name"]: c["status"] for c in results["checks"]}
    assert statuses["pinned"] == "not exercised" and statuses["cleanup"] == "skipped"
    assert results["verdict_reason"].startswith("no violation in ")


def test_a_relay_with_client_visible_bugs_fails_the_run(tmp_path):
    """Planted (tests/fixtures/sloppy_relay): MESSAGE frames with memberNum -1, and a handler that crashes
    after every fifth HEARTBEAT, which players see as API Gateway's internal-error frame."""
    template = planted_relay(tmp_path / "relay", "sloppy_relay", {"WebSocketFunction": "sloppy_websocket.handler"})
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "locust", "-f", "scenarios/relay.py", "--headless", "-u", "8",
                             "-r", "8", "-t", "6s", "--heartbeat-interval", "1", "--run-dir", str(run_dir),
                             "--template", str(template), "--seed", "4"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-3000:]
    checks = {c["name"]: c for c in json.loads((run_dir / "results.json").read_text())["checks"]}
    assert {v["invariant"] for v in checks["membership"]["violations"]} == {"a MESSAGE names a slot of its session"}
    [crash] = checks["client_errors"]["violations"]
    assert "API Gateway error frame 'Internal server error'" in crash["message"]
    assert "RuntimeError: crashed after answering a heartbeat" in checks["health"]["violations"][0]["message"]


def test_a_player_that_joined_a_new_session_is_not_owed_the_old_sessions_messages():
    """Seed 2 of the deploy sweep: a Reconnector out of rejoins joined anew while its old session played on;
    its new socket is open throughout, but it is no longer that session's member."""
    history = pair() + [r("b", "close", "info", 600), r("b", "connect", "invoke", 700, conn=2, attempt=2,
                                                          msg={"sessionType": "game", "targetNumMembers": "2"}),
                        r("b", "connect", "ok", 705, conn=2, attempt=2)]
    history += sent("a", "a-0", 1000) + [got("a", "a-0", 1050), r("a", "heartbeat", "ok", 9000)]
    assert delivery.check(Run(history)).passed


def test_a_message_held_by_a_pause_until_its_sender_closed_the_socket_is_explained():
    """flaky seed 1: a proxy-wide pause held a SEND_MESSAGE, and its sender dropped that socket (a
    Reconnector) before the pause ended: the message never reached the relay."""
    history = pair() + sent("a", "a-0", 1000) + [r("a", "close", "invoke", 1500), r("a", "heartbeat", "ok", 9000)]
    history += [r("a", "rejoin", "ok", 1600, conn=2)]
    pause = {"t": 800, "seam": "wire", "fault": "pause", "target": {"proxy": "relay"}, "params": {"seconds": 2},
             "rule": {"id": "stall", "seq": 0}}
    assert not delivery.check(Run(history)).passed
    assert delivery.check(Run(history, faults=[pause])).passed
    late_close = [dict(rec, t=3500) if rec["op"] == "close" else rec for rec in history]
    assert not delivery.check(Run(late_close, faults=[pause])).passed, "closed after the pause: not held by it"


# ---- the local stack behind its load: the harness's slowness is never the relay's fault ------------
def _waited(t, queued_ms, duration_ms=20.0, outcome="ok"):
    return {"t": t, "function": "WebSocketFunction", "request_id": f"r{t}", "duration_ms": duration_ms,
            "queued_ms": queued_ms, "outcome": outcome}


def test_lag_spans_are_the_invocations_that_waited_for_an_instance_merged():
    lags = lag_spans([_waited(3000, 1500), _waited(3400, 2000), _waited(9000, 999), _waited(20000, 4000)])
    assert [(lag["t"], lag["params"]) for lag in lags] == [
        (1380.0, {"seconds": 2.02, "max_queued_ms": 2000, "invocations": 2}),
        (15980.0, {"seconds": 4.02, "max_queued_ms": 4000, "invocations": 1})]


def test_a_loss_only_the_stacks_lag_explains_makes_the_run_inconclusive_not_failed():
    lost = pair() + sent("a", "a-0", 1000) + [got("a", "a-0", 1050), r("a", "heartbeat", "ok", 9000)]
    assert _verdict(lost)[0] == "fail"
    outcome, why = _verdict(lost, invocations=[_waited(1500, 3000)])
    assert outcome == "inconclusive"
    assert why.startswith("the local stack fell behind its load (1 invocation(s) waited up to 3.0 s for a free "
                          "function instance") and "1 finding(s) in Message delivery fall there" in why
    # Lag elsewhere in the run explains nothing here: still a relay bug.
    assert _verdict(lost, invocations=[_waited(30000, 3000)])[0] == "fail"
    # A lag under LAG_MS is ordinary queueing: not an excuse.
    assert _verdict(lost, invocations=[_waited(1500, 900)])[0] == "fail"


def test_an_injected_fault_still_explains_a_loss_during_lag_and_a_violation_elsewhere_still_fails():
    both = pair() + sent("a", "a-0", 1000) + sent("a", "a-1", 30000) + [
        got("a", "a-0", 1050), got("a", "a-1", 30050), got("b", "a-1", 30050), r("a", "heartbeat", "ok", 40000)]
    drop = fault("b", "drop", 1040, target={"types": ["MESSAGE"], "pids": ["a-0"]})
    assert _verdict(both, faults=[drop], invocations=[_waited(1500, 3000)])[0] == "pass"  # the drop explains a-0
    second_lost = [r for r in both if not (r.get("pid") == "a-1" and r["client"] == "b")]
    assert _verdict(second_lost, faults=[drop], invocations=[_waited(1500, 3000)])[0] == "fail"  # a-1: no excuse


def test_handler_errors_and_timeouts_while_the_stack_was_behind_are_still_the_relays():
    """A slow handler holds instances and makes others wait: the lag it causes must not excuse it."""
    invocations = [_waited(5000, 2000, duration_ms=3000, outcome="timeout"),
                   {**_waited(5200, 2500, outcome="error"), "error": "KeyError: 'body'"}]
    result = health.check(Run([], invocations=invocations, info={"ended_t": 10000}))
    assert len(result.violations) == 2 and not result.explained

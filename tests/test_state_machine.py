"""The protocol state machine (tests/relay_machine.py): the reference relay passes it through the chaos
proxy with single faults injected; a stream handler that is not idempotent is found and shrinks to a
short script; the model it checks against is exact about what it expects. (benchmarks/shrink_check.py
also shows the join without the room condition found and shrunk; that takes minutes.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from harness.faults.plan import FaultPlan, PlanError
from tests.planted import planted_relay
from tests.relay_machine import RelayWorld, run_machine
from tests.relay_model import Learn, Model

# ~20 s on 2 cores: the examples are replayed the same way every time (derandomize, no database).
SUITE = settings(max_examples=12, stateful_step_count=12, deadline=None, database=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much], print_blob=False)


def test_the_model_binds_what_the_relay_picks_once_and_holds_later_frames_to_it():
    model = Model()
    assert model.join_public("c0", "c0#1", "t", 2) == {"c0#1": [[{"type": "CONNECTION",
                                                                  "memberId": Learn(("member", "c0", 1))}]]}
    started = model.join_public("c1", "c1#1", "t", 2)
    first = {"type": "SESSION_CONNECT", "sessionType": "t", "sessionId": "S1", "memberNum": 0,
             "memberPresence": [True, True]}
    assert model.matches(started["c0#1"], [[first]])
    assert not model.matches(started["c1#1"], [[{"type": "CONNECTION", "memberId": "M2"},
                                                {**first, "memberNum": 1, "sessionId": "S2"}]])  # another id
    assert model.matches(started["c1#1"], [[{"type": "CONNECTION", "memberId": "M2"}, {**first, "memberNum": 1}]])
    assert not model.matches(model.send("c1#1", "hi", pinned=False)["c0#1"], [[{"type": "MESSAGE", "payload": "hi",
                                                                               "time": 5, "memberNum": 0}]])
    assert model.disconnect("c0#1") == {"c1#1": [[{"type": "MEMBER_DISCONNECT", "memberNum": 0}]]}
    assert model.rejoin("c0", "c0#2")["c1#1"] == [[{"type": "MEMBER_RECONNECT", "memberNum": 0}]]


def test_a_live_plan_takes_validated_rules_while_running_and_drops_them_on_request():
    throttle = {"name": "t", "seam": "store", "type": "ThrottlingException", "count": 1}
    with pytest.raises(PlanError, match="was not made live=True"):
        FaultPlan([], 1).add(throttle)
    plan = FaultPlan([], 1, live=True)
    with pytest.raises(PlanError, match="'probability' must be from 0 to 1"):
        plan.add({**throttle, "probability": 2})
    plan.add(throttle)
    with pytest.raises(PlanError, match="a rule of that name exists"):
        plan.add(throttle)
    assert plan.pick("store", {}, ("k",)) is not None and plan.pick("store", {}, ("k",)) is None  # count = 1
    assert plan.used("t") == 1 and plan.remove("t") and not plan.remove("t") and plan.rules == []


@pytest.fixture(scope="module")
def reference_world(tmp_path_factory) -> Iterator[RelayWorld]:
    world = RelayWorld(log_dir=tmp_path_factory.mktemp("machine"))
    yield world
    world.stop()


def test_the_reference_relay_passes_the_protocol_machine_with_single_faults(reference_world):
    outcome = run_machine(reference_world, SUITE)
    assert not outcome.failed, "\n".join([*outcome.script, outcome.failed])
    assert outcome.examples >= SUITE.max_examples
    wire = {e["fault"] for e in reference_world.proxy.fault_log.entries}
    stack = {e["fault"] for e in reference_world.plan.log.entries}
    assert {"drop", "duplicate"} <= wire and {"error_after", "latency"} <= stack, (wire, stack)


def test_a_stream_handler_that_resends_on_retry_is_found_and_shrinks_to_a_short_script(tmp_path):
    template = planted_relay(tmp_path / "relay", "planted_relay", {"StreamFunction": "resend_on_retry.handler"})
    world = RelayWorld(template, tmp_path / "logs")
    try:
        # One bug, however many places notice it: a shrunk script that trips a different assertion
        # on replay is still this bug, not a flaky one.
        outcome = run_machine(world, settings(SUITE, report_multiple_bugs=False))
    finally:
        world.stop()
    assert outcome.failed.startswith("AssertionError: after "), outcome.failed
    assert "state.fail_next_stream_invocation()" in outcome.script and 1 <= outcome.steps <= 10, outcome.script
    assert outcome.script[0] == "state = RelayMachine()" and outcome.script[-1] == "state.teardown()"

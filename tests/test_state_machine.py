"""The protocol state machine (tests/relay_machine.py): the reference relay passes it through the chaos
proxy with single faults injected; the model it checks against is exact about what it expects.
(benchmarks/shrink_check.py shows each planted bug found and shrunk; it takes minutes.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.relay_machine import RelayMachine, RelayWorld, use_world
from tests.relay_model import Learn, Model

# ~30 s on 2 cores: the examples are replayed the same way every time (derandomize, no database).
SUITE = settings(max_examples=10, stateful_step_count=12, deadline=None, database=None, derandomize=True,
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


@pytest.fixture(scope="module")
def reference_world(tmp_path_factory) -> Iterator[RelayWorld]:
    world = RelayWorld(log_dir=tmp_path_factory.mktemp("machine"))
    yield world
    world.stop()


def test_the_reference_relay_passes_the_protocol_machine_with_single_faults(reference_world):
    first = next(RelayMachine._runs)
    with use_world(reference_world):
        run_state_machine_as_test(RelayMachine, settings=SUITE)
    assert next(RelayMachine._runs) - first - 1 >= SUITE.max_examples  # every example ran to its end
    wire = {e["fault"] for e in reference_world.proxy.fault_log.entries}
    stack = {e["fault"] for e in reference_world.plan.log.entries}
    assert {"drop", "duplicate"} <= wire and {"error_after", "latency"} <= stack, (wire, stack)

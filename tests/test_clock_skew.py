"""The process seam's ``clock_skew``: an in-process handler's clock is off by ``ms`` during the rule's
span only, the stack's own code keeps the real time, and the reference relay's times move with it."""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Any

import pytest

from harness.faults.log import FaultLog
from harness.faults.plan import FaultPlan, parse_rule
from harness.faults.profile import ProfileError, load_profile
from harness.stack import clock
from harness.stack.invocation_faults import EventIdentities, FaultyFunction
from harness.stack.local_stack import LocalStack, StackOptions
from harness.stack.logs import StackLog
from harness.stack.python_runtime import PythonFunction
from harness.stack.runtime import FunctionSpec
from tests.stack_support import Client

ROOT = Path(__file__).resolve().parent.parent
SKEW_MS = 90_000
PROBE = '''
import datetime
import time
from concurrent.futures import ThreadPoolExecutor


def handler(event, context):
    with ThreadPoolExecutor(1) as pool:
        pooled = pool.submit(lambda: time.time()).result()
    return {"time": time.time(), "time_ns": time.time_ns() / 1e9, "pooled": pooled,
            "now": datetime.datetime.now(datetime.timezone.utc).timestamp(),
            "utcnow": datetime.datetime.utcnow().replace(tzinfo=datetime.timezone.utc).timestamp(),
            "gmtime": time.mktime(time.gmtime()) - time.mktime(time.gmtime(0)),
            "is_datetime": isinstance(datetime.datetime.fromtimestamp(0), datetime.datetime)}
'''


def _rule(at: float, span: float, ms: float) -> dict[str, Any]:
    return {"name": "skewed", "seam": "process", "type": "clock_skew", "at": at, "for": span, "params": {"ms": ms}}


@pytest.fixture
def probe(tmp_path: Path, fork_server: Any) -> Any:
    """A probe function (its instance a worker process) behind the invocation seam, with a plan
    skewing it by +90 s from 5 s to 15 s."""
    (tmp_path / "skew_probe.py").write_text(PROBE)
    spec = FunctionSpec("Probe", "probe", "skew_probe.handler", tmp_path, {})
    log = StackLog()
    plan = FaultPlan([parse_rule(_rule(5, 10, SKEW_MS))], seed=1, log=FaultLog())
    function = FaultyFunction(PythonFunction(spec, log, {}, fork_server, 2, plan=plan, clock_skew=True), plan, log,
                              EventIdentities())
    try:
        yield plan, function
    finally:
        function.close()


def _offsets(function: FaultyFunction) -> dict[str, Any]:
    """What the handler read minus the real time in the middle of the call, in seconds."""
    before = time.time()
    invocation = function.invoke({})
    after = time.time()
    assert not invocation.failed, invocation.error
    middle = (before + after) / 2
    return {key: value if key == "is_datetime" else value - middle for key, value in invocation.payload.items()}


def test_the_handler_clock_is_skewed_inside_the_span_only_and_the_stack_clock_never(probe):
    plan, function = probe
    plan.started = time.monotonic()  # before the span (it starts at 5 s)
    assert all(abs(v) < 1.5 for k, v in _offsets(function).items() if k != "is_datetime")
    assert plan.log.entries == []

    plan.started = time.monotonic() - 7  # inside it
    stack_time = time.time()
    inside = _offsets(function)
    for key in ("time", "time_ns", "pooled", "now", "utcnow", "gmtime"):
        assert inside[key] == pytest.approx(SKEW_MS / 1000, abs=1.5), key
    assert inside["is_datetime"] is True  # isinstance still accepts every datetime
    assert abs(time.time() - stack_time) < 5 and abs(datetime.datetime.now().timestamp() - stack_time) < 5
    # Logged once, when it first took effect, with the stack's (real) time although a handler read the clock.
    assert [(e["seam"], e["fault"], e["params"]) for e in plan.log.entries] == [
        ("process", "clock_skew", {"ms": SKEW_MS, "seconds": 10})]
    assert abs(plan.log.entries[0]["t"] / 1000 - stack_time) < 5
    _offsets(function)
    assert len(plan.log.entries) == 1

    plan.started = time.monotonic() - 20  # after it
    assert all(abs(v) < 1.5 for k, v in _offsets(function).items() if k != "is_datetime")


def test_a_negative_skew_and_a_function_without_the_rule(probe, tmp_path, fork_server):
    plan, function = probe
    plan.rules = [parse_rule(_rule(0, 60, -SKEW_MS))]
    plan.start()
    assert _offsets(function)["time"] == pytest.approx(-SKEW_MS / 1000, abs=1.5)
    empty = FaultPlan([], 1, FaultLog())
    unskewed = FaultyFunction(PythonFunction(function.spec, function.log, {}, fork_server, 1, plan=empty), empty,
                              function.log, EventIdentities())
    try:
        assert abs(_offsets(unskewed)["time"]) < 1.5
    finally:
        unskewed.close()


def test_the_clock_is_patched_only_while_installed():
    real_time, real_datetime = time.time, datetime.datetime
    clock.install()
    clock.install()
    clock.uninstall()
    assert time.time is not real_time and datetime.datetime is not real_datetime  # the second stack still has it
    clock.uninstall()
    assert time.time is real_time and datetime.datetime is real_datetime


@pytest.mark.parametrize(("params", "says"), [
    ("", "clock_skew needs params.ms"),
    ("params = { ms = 100000000 }", "params.ms' must be from -8.64e+07 to 8.64e+07"),
])
def test_a_bad_clock_skew_is_one_line(tmp_path, params, says):
    path = tmp_path / "p.toml"
    path.write_text(f'[[fault]]\nname = "f"\nseam = "process"\ntype = "clock_skew"\nat = 1\nfor = 2\n{params}\n')
    with pytest.raises(ProfileError) as caught:
        load_profile(str(path))
    assert says in str(caught.value) and "\n" not in str(caught.value)


class _Spy:
    def __init__(self, inner: Any) -> None:
        self.inner, self.spec, self.events = inner, inner.spec, []

    def invoke(self, event: dict[str, Any], queued_ms: float = 0.0) -> Any:
        self.events.append(event)
        return self.inner.invoke(event, queued_ms)

    def close(self) -> None:
        self.inner.close()


def _stack(tmp_path: Path, ms: float, **options: Any) -> LocalStack:
    plan = FaultPlan([parse_rule(_rule(0, 600, ms))], seed=1, log=FaultLog(tmp_path / "faults.jsonl"))
    return LocalStack(StackOptions(log_dir=tmp_path, faults=plan, **options))


def test_relayed_and_pinned_message_times_are_the_skewed_relay_clock(tmp_path):
    real_time = time.time
    with _stack(tmp_path, SKEW_MS) as stack:
        faulty = stack.functions["WebSocketFunction"]
        spy = faulty.inner = _Spy(faulty.inner)
        url = stack.endpoints["websocket"] + "?sessionType=skew&targetNumMembers=2&client="
        a, b = Client(url + "a"), Client(url + "b")
        for client in (a, b):
            client.wait_for("SESSION_CONNECT")
        sent = time.time()
        a.send({"action": "SEND_MESSAGE", "payload": "pinned one", "pinned": True})
        relayed = b.wait_for("MESSAGE")[0]
        assert relayed["time"] / 1000 - sent == pytest.approx(SKEW_MS / 1000, abs=3)
        # The pinned copy the store keeps carries the same (skewed) time; a rejoin would hand it out.
        a.send({"action": "HEARTBEAT", "inclMessagesAfter": 0})
        pinned = a.wait_for("MESSAGE", 2)[1]
        assert pinned["pinned"] is True and pinned["time"] == relayed["time"]
        a.close()
        b.close()
    assert time.time is real_time  # the patch went with the stack
    faults = [json.loads(line) for line in (tmp_path / "faults.jsonl").read_text().splitlines()]
    assert [(f["seam"], f["fault"]) for f in faults] == [("process", "clock_skew")]
    assert abs(faults[0]["t"] / 1000 - sent) < 30  # the fault log keeps the stack's clock
    # The gateway's own clock is not skewed: the event the handler got says when it really came in.
    event = next(e for e in spy.events if '"pinned one"' in (e.get("body") or ""))
    assert event["requestContext"]["requestTimeEpoch"] / 1000 == pytest.approx(sent, abs=3)


def test_the_stacks_clock_is_never_patched_and_an_invoke_api_function_is_named_once(tmp_path, capsys):
    real_time = time.time
    skewed = _stack(tmp_path, SKEW_MS, remote_functions={"CleanupFunction": "http://127.0.0.1:9"})
    skewed._say_what_seams_miss()
    assert time.time is real_time  # the skew lives in the functions' worker processes only
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["relay-harness: clock_skew cannot skew Invoke-API functions (--function): CleanupFunction "
                   "keep their own clock"]

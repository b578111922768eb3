"""The chaos wrapper for Lambda handlers (harness/lambda_chaos.py), its layer, the template switch,
and reading its fault lines back (harness/lambda_faults.py); AWS itself is moto's server on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from harness import lambda_chaos
from harness.cli import main
from harness.faults.plan import PlanError
from harness.lambda_chaos import Chaos, InjectedError, handler_for, parse_plan
from harness.lambda_faults import faults_in_text
from harness.stack.deployment import deployment_context, load_deployment
from harness.stack.template import Template
from tests.stack_support import Client, wait_until

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "reference_relay" / "template.yaml"
STREAM_EVENT = {"Records": [{"eventSource": "aws:dynamodb", "dynamodb": {"SequenceNumber": "41"}},
                            {"eventSource": "aws:dynamodb", "dynamodb": {"SequenceNumber": "42"}}]}
calls: list[Any] = []


def recording_handler(event: Any, context: Any) -> str:
    """A real handler for the wrapper to wrap: its side effect is an entry in ``calls``."""
    calls.append(event)
    return "done"


class _Context:
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 0


@pytest.fixture(scope="module")
def aws() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(aws, monkeypatch) -> str:
    for key, value in {"AWS_ENDPOINT_URL": aws, "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test",
                       "AWS_SECRET_ACCESS_KEY": "test"}.items():
        monkeypatch.setenv(key, value)
    return aws


@pytest.fixture
def chaos_of() -> Iterator[Any]:
    made: list[Chaos] = []

    def make(plan: Any = None, **environ: str) -> Chaos:
        if plan is not None:
            environ["RELAY_CHAOS_PLAN"] = plan if isinstance(plan, str) else json.dumps(plan)
        made.append(Chaos(environ))
        return made[-1]

    yield make
    for chaos in made:
        chaos.close()


def _fault_lines(text: str) -> list[tuple[str, str, str]]:
    return [(f["seam"], f["fault"], f["rule"]["id"]) for f in faults_in_text(text)]


def _hooked() -> bool:
    events = boto3.DEFAULT_SESSION.events if boto3.DEFAULT_SESSION else None
    return events is not None and any("lambda-chaos" in str(key) for key in events._emitter._unique_id_handlers)


# ---- the wrapper --------------------------------------------------------------------------
def test_without_a_plan_the_handler_is_the_real_one_and_nothing_is_hooked():
    spec = "StreamFunction:tests:test_lambda_wrapper:recording_handler"
    assert handler_for(spec, {}) is recording_handler
    assert getattr(lambda_chaos, spec) is recording_handler  # as Lambda looks the Handler up
    assert not _hooked()
    with pytest.raises(AttributeError, match=r"must look like harness\.lambda_chaos\.NAME:MODULE:ATTR"):
        handler_for("StreamFunction:recording_handler", {})


def test_error_after_keeps_side_effects_and_fails_error_before_skips_the_handler(chaos_of, capsys):
    chaos = chaos_of({"seed": 5, "fault": [
        {"name": "after", "seam": "invocation", "type": "error_after", "count": 1,
         "match": {"function": "StreamFunction", "source": "stream"}},
        {"name": "before", "seam": "invocation", "type": "error_before", "count": 1,
         "match": {"function": "WebSocketFunction"}}]})
    assert _hooked()
    stream = chaos.wrap("StreamFunction", recording_handler)
    calls.clear()
    with pytest.raises(InjectedError, match="the handler ran"):
        stream(STREAM_EVENT, _Context())
    assert calls == [STREAM_EVENT]  # it ran: its side effects stay
    assert stream(STREAM_EVENT, _Context()) == "done"  # the retry: count 1 is used up
    with pytest.raises(InjectedError, match="before the handler ran"):
        chaos.wrap("WebSocketFunction", recording_handler)({"requestContext": {"connectionId": "c1",
                                                                                "routeKey": "$default"}}, _Context())
    assert len(calls) == 2
    [after, before] = faults_in_text(capsys.readouterr().out)
    assert (after["fault"], after["target"]["function"], after["target"]["event"]) == (
        "error_after", "StreamFunction", ["stream", "41", "42", 0])
    assert after["rule"] == {"id": "after", "seq": "StreamFunction/stream/41/42/0"}
    assert (before["fault"], before["target"]["route"], before["target"]["request_id"]) == (
        "error_before", "$default", "req-1")


def test_rules_a_function_cannot_carry_out_are_refused_one_line_each(chaos_of, capsys):
    toml = """seed = 9
[[fault]]
name = "lossy"
type = "drop"
probability = 0.1
[[fault]]
name = "crash"
seam = "process"
type = "store_outage"
at = 3
for = 2
[[fault]]
name = "busy"
seam = "invocation"
type = "throttle"
[[fault]]
name = "late"
seam = "invocation"
type = "latency"
params = { ms = 1 }
"""
    rules, seed, start, refusals = parse_plan(toml)
    assert [r.name for r in rules] == ["late"] and seed == 9 and start is None
    assert [line.split(":")[0] for line in refusals] == ["fault 'lossy' skipped", "fault 'crash' skipped",
                                                         "fault 'busy' skipped"]
    assert "throttle cannot be done from inside a function" in refusals[2]
    assert parse_plan(toml, seed=3)[1] == 3  # RELAY_CHAOS_SEED wins
    with pytest.raises(PlanError, match="'probability' must be from 0 to 1"):
        parse_plan('[{"seam": "store", "type": "ThrottlingException", "probability": 2}]')
    chaos = chaos_of("[[fault]\nbroken")
    assert chaos.plan.rules == []
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "plan from RELAY_CHAOS_PLAN refused: the plan is neither JSON nor TOML" in out[0]


def test_a_store_fault_goes_through_the_botocore_hooks(aws_env, chaos_of, capsys):
    chaos = chaos_of([{"name": "slow-read", "seam": "store", "type": "ThrottlingException", "count": 1,
                       "match": {"table": "SessionsTable", "operation": "GetItem"}}],
                     RELAY_CHAOS_TABLES="SessionsTable=wrapped-sessions")
    dynamodb = boto3.client("dynamodb")  # made after the hooks, as the relay's are at import
    dynamodb.create_table(TableName="wrapped-sessions", BillingMode="PAY_PER_REQUEST",
                          KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    dynamodb.put_item(TableName="wrapped-sessions", Item={"id": {"S": "s1"}})  # outside any invocation: untouched

    def read(event: Any, context: Any) -> Any:
        return dynamodb.get_item(TableName="wrapped-sessions", Key={"id": {"S": "s1"}})["Item"]

    assert chaos.wrap("WebSocketFunction", read)({"requestContext": {"connectionId": "c9", "routeKey": "$connect"}},
                                                 _Context()) == {"id": {"S": "s1"}}  # botocore retried the throttle
    [fault] = faults_in_text(capsys.readouterr().out)
    assert (fault["seam"], fault["fault"], fault["target"]["tables"], fault["target"]["attempt"]) == (
        "store", "ThrottlingException", ["wrapped-sessions"], 1)


def test_the_plan_is_read_from_ssm_and_kept_for_its_cache_time(aws_env, chaos_of, capsys):
    ssm = boto3.client("ssm")
    first = [{"name": "first", "seam": "invocation", "type": "error_before"}]
    ssm.put_parameter(Name="/relay/chaos", Type="String", Value=json.dumps(first), Overwrite=True)
    cached = chaos_of(RELAY_CHAOS_PARAMETER="/relay/chaos", RELAY_CHAOS_CACHE_SECONDS="3600")
    fresh = chaos_of(RELAY_CHAOS_PARAMETER="/relay/chaos", RELAY_CHAOS_CACHE_SECONDS="0")
    event = {"source": "aws.events"}
    for chaos in (cached, fresh):
        with pytest.raises(InjectedError):
            chaos.wrap("CleanupFunction", recording_handler)(event, _Context())
    ssm.put_parameter(Name="/relay/chaos", Type="String", Value="[]", Overwrite=True)
    with pytest.raises(InjectedError):  # within its cache time: the plan it read
        cached.wrap("CleanupFunction", recording_handler)(event, _Context())
    assert fresh.wrap("CleanupFunction", recording_handler)(event, _Context()) == "done"  # read again
    out = capsys.readouterr().out
    assert _fault_lines(out) == [("invocation", "error_before", "first")] * 3
    assert out.count("plan from SSM parameter /relay/chaos") == 3  # cached: once; fresh: twice
    missing = chaos_of(RELAY_CHAOS_PARAMETER="/relay/missing")
    assert missing.wrap("CleanupFunction", recording_handler)(event, _Context()) == "done"
    assert "cannot read SSM parameter /relay/missing" in capsys.readouterr().out


def test_the_layer_imports_with_the_standard_library_and_boto3_only():
    script = """
import importlib.abc, sys
allowed = {"boto3", "botocore", "jmespath", "dateutil", "urllib3", "s3transfer", "six", "harness"}
class OnlyLambdas(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top in allowed or top.startswith("_"):
            return None
        raise ImportError("not on Lambda: " + name)
sys.meta_path.insert(0, OnlyLambdas())
sys.path.insert(0, sys.argv[1])
import harness.lambda_chaos
print(harness.lambda_chaos.__file__)
"""
    layer = ROOT / "chaos_layer" / "python"
    done = subprocess.run([sys.executable, "-I", "-c", script, str(layer)], capture_output=True, text=True,
                          timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(layer / "harness" / "lambda_chaos.py")


# ---- the template ---------------------------------------------------------------------------
def test_the_template_is_todays_when_chaos_is_off_and_wrapped_when_on():
    template = Template.load(TEMPLATE)
    off = load_deployment(template, deployment_context(template))
    on = load_deployment(template, deployment_context(template, parameters={"ChaosPlan": "[]"}))
    ssm = deployment_context(template, parameters={"ChaosPlanParameter": "/relay/chaos"})
    assert {f.handler for f in off.functions.values()} == {
        f"simple_relay.{m}_handler.handler" for m in ("websocket", "stream", "http", "cleanup")}
    assert all(f.layer_dirs == () and not any(k.startswith("RELAY_CHAOS") for k in f.environment)
               for f in off.functions.values())
    assert "ChaosLayer" not in template.present(off.context)
    stream = on.functions["StreamFunction"]
    assert stream.handler == "harness.lambda_chaos.StreamFunction:simple_relay:stream_handler:handler"
    assert stream.layer_dirs == ((ROOT / "chaos_layer" / "python").resolve(),)
    assert stream.environment["RELAY_CHAOS_PLAN"] == "[]" and "RELAY_CHAOS_PARAMETER" not in stream.environment
    assert stream.environment["RELAY_CHAOS_TABLES"] == ("SessionsTable=local-sessions,ConnectionsTable="
                                                        "local-connections,MembersTable=local-members")
    assert ssm.conditions == {"ChaosOn": True, "ChaosPlanInSsm": True}
    assert "ChaosPlanReadPolicy" in template.present(ssm) and "ChaosPlanReadPolicy" not in template.present(
        on.context)


# ---- reading the fault lines back -----------------------------------------------------------
def test_fault_lines_are_read_back_from_cloudwatch_and_from_saved_logs(aws_env, tmp_path, capsys):
    now = int(time.time() * 1000)
    entry = {"t": now - 5000, "seam": "invocation", "fault": "error_after", "target": {"function": "StreamFunction"},
             "params": {}, "rule": {"id": "r", "seq": "StreamFunction/stream/1/2/0"}}
    line = json.dumps({"relay_chaos": "fault", **entry})
    logs = boto3.client("logs")
    group = "/aws/lambda/relay-StreamFunction-Ab12"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="s")
    logs.put_log_events(logGroupName=group, logStreamName="s", logEvents=[
        {"timestamp": now - 6000, "message": "START RequestId: x Version: $LATEST"},
        {"timestamp": now - 5000, "message": line}, {"timestamp": now - 4000, "message": "relay-chaos: plan from x"}])
    out = tmp_path / "faults.jsonl"
    out.write_text(json.dumps({"t": now - 9000, "seam": "wire", "fault": "drop"}) + "\n")  # the proxy's
    assert main(["lambda-faults", "--log-group-prefix", "/aws/lambda/relay-", "--start", "1h", "--out",
                 str(out)]) == 0
    assert [json.loads(x)["seam"] for x in out.read_text().splitlines()] == ["wire", "invocation"]
    assert json.loads(out.read_text().splitlines()[1]) == entry
    # Saved logs: `aws logs filter-log-events` JSON and `sam logs` text give the same line; none is doubled.
    (tmp_path / "events.json").write_text(json.dumps({"events": [{"message": line}, {"message": "noise"}]}))
    (tmp_path / "sam.txt").write_text(f"2025/01/01/[$LATEST]abc 2025-01-01T00:00:00 {line}\nEND RequestId: x\n")
    assert main(["lambda-faults", "--from-file", str(tmp_path / "events.json"), "--from-file",
                 str(tmp_path / "sam.txt"), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2
    assert capsys.readouterr().out.splitlines()[-1] == f"2 fault line(s) read, 0 new in {out}"
    assert main(["lambda-faults", "--log-group", "/aws/lambda/none", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == ("relay-harness lambda-faults: log group '/aws/lambda/none' not found "
                                               "(Lambda's are /aws/lambda/FUNCTION-NAME)")


# ---- the reference relay on the local stack, wrapper on -------------------------------------
def test_the_wrapped_relay_on_the_local_stack_retries_a_failed_stream_batch_and_notifies_once(tmp_path):
    # One line of TOML without spaces or double quotes, as `sam deploy --parameter-overrides` passes it.
    stream = "match={function='StreamFunction',source='stream'}"
    plan = (f"fault=[{{name='retried',seam='invocation',type='error_after',count=1,{stream}}},"
            f"{{name='seen-again',seam='invocation',type='latency',count=1,params={{ms=1}},{stream}}}]")
    ready, logs = tmp_path / "ready.json", tmp_path / "logs"
    process = subprocess.Popen([sys.executable, "-m", "harness", "up", "--quiet", "--ready-file", str(ready),
                                "--log-dir", str(logs), "--parameter", f"ChaosPlan={plan}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        endpoints = wait_until(lambda: ready.exists() and json.loads(ready.read_text()), timeout=60,
                               what="the ready file")
        url = endpoints["websocket"] + "?sessionType=wrapped&targetNumMembers=2&client="
        a, b = Client(url + "a"), Client(url + "b")
        for client in (a, b):
            client.wait_for("SESSION_CONNECT")
            # The stream is in order per shard: any resend of CONNECTION would have come before this.
            assert len(client.of("CONNECTION")) == 1 and len(client.of("SESSION_CONNECT")) == 1
        a.close()
        b.close()
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    # The wrapper's own line, from its cold start, in the function's log (as in CloudWatch).
    assert "relay-chaos: plan from RELAY_CHAOS_PLAN: 2 rule(s), seed 0" in (logs / "stack.log").read_text()
    out = tmp_path / "faults.jsonl"
    assert main(["lambda-faults", "--from-file", str(logs / "stack.log"), "--out", str(out)]) == 0
    failed, again = [json.loads(x) for x in out.read_text().splitlines()]
    assert (failed["fault"], again["fault"]) == ("error_after", "latency")
    assert failed["target"]["function"] == again["target"]["function"] == "StreamFunction"
    # The failed batch's first record reached the handler again (bisected or whole, its next try).
    assert again["target"]["event"][1] == failed["target"]["event"][1]

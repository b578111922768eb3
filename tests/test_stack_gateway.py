"""The local API Gateway, Lambda runtime and event sources, on a template written to probe them."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
import websocket

from harness.stack import dynamodb as local_ddb
from harness.stack.local_stack import LocalStack, StackError, StackOptions
from harness.stack.logs import StackLog
from harness.stack.runtime import FunctionSpec, RemoteFunction
from harness.stack.websocket_api import Quotas
from tests.stack_support import log_lines, wait_until

TEMPLATE = Path(__file__).parent / "fixtures" / "stack_template.yaml"


def _options(tmp: Path, **kwargs) -> StackOptions:
    return StackOptions(template=TEMPLATE, log_dir=tmp / "logs", parameters={"FixtureLog": str(tmp / "fixture.log")},
                        ttl_delay=0.2, schedule_interval=0.2, **kwargs)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gateway")
    with LocalStack(_options(tmp, quotas=Quotas(max_message_bytes=4096, idle_timeout=30))) as running:
        running.tmp = tmp
        yield running


def _fixture_log(stack, kind):
    return log_lines(stack.tmp / "fixture.log", kind)


def _socket(stack, query="") -> websocket.WebSocket:
    return websocket.create_connection(stack.endpoints["websocket"] + query, timeout=10)


def _item(attributes):
    return {k: ({"S": v} if isinstance(v, str) else {"BOOL": v} if isinstance(v, bool) else {"N": str(v)})
            for k, v in attributes.items()}


def _put(stack, **attributes):
    local_ddb.client(stack.dynamodb_endpoint).put_item(TableName="local-items", Item=_item(attributes))


def _put_together(stack, items):
    """One transaction, so the records reach the stream, and the event source, in one batch."""
    local_ddb.client(stack.dynamodb_endpoint).transact_write_items(
        TransactItems=[{"Put": {"TableName": "local-items", "Item": _item(item)}} for item in items])


def test_route_selection_picks_the_second_route_and_falls_back_to_default(stack):
    ws = _socket(stack)
    ws.send(json.dumps({"action": "ECHO", "n": 1}))
    assert json.loads(ws.recv())["route"] == "ECHO"
    for body in (json.dumps({"action": "NOPE"}), "not json", json.dumps([1])):
        ws.send(body)
        assert json.loads(ws.recv()) == {"route": "$default", "body": body, "base64": False}
    ws.close()


def test_connect_event_and_refusals(stack):
    ws = _socket(stack, "/test?a=1&a=2&b=")
    [event] = [e for e in _fixture_log(stack, "connect") if e["query"].get("b") == ""]
    assert event["multi"] == {"a": ["1", "2"], "b": [""]}
    ws.close()
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        _socket(stack, "?deny=because")
    assert refused.value.status_code == 403 and b"denied: because" in refused.value.resp_body
    with pytest.raises(websocket.WebSocketBadStatusException) as crashed:
        _socket(stack, "?crash=1")
    assert crashed.value.status_code == 500


def test_handler_errors_and_timeouts_answer_with_api_gateways_frame(stack):
    ws = _socket(stack)
    conn_id = _fixture_log(stack, "connect")[-1]["conn"]
    for body in ("crash", "slow", "raise-timeout"):
        ws.send(body)
        frame = json.loads(ws.recv())
        assert frame["message"] == "Internal server error" and frame["connectionId"] == conn_id
        assert frame["requestId"]
    ws.send("still open?")
    assert json.loads(ws.recv())["body"] == "still open?"
    def outcomes():
        records = log_lines(stack.tmp / "logs" / "invocations.jsonl")
        return {r["outcome"] for r in records if r["function"] == "DefaultFunction"}

    # The answer reaches the socket while the handler runs; its record is written when it returns.
    wait_until(lambda: outcomes() == {"ok", "error", "timeout"}, what="all three outcomes in invocations.jsonl")
    records = log_lines(stack.tmp / "logs" / "invocations.jsonl")
    # A handler's own TimeoutError is an error; only the runtime's deadline is a timeout.
    assert [r["outcome"] for r in records if "own TimeoutError" in r.get("error", "")] == ["error"]
    assert len([r for r in records if r["outcome"] == "timeout"]) == 1
    ws.close()


def test_handler_output_reaches_the_log_with_function_and_request_id(stack):
    ws = _socket(stack)
    ws.send("print")
    ws.recv()
    ws.close()
    log = (stack.tmp / "logs" / "stack.log").read_text()
    line = next(line for line in log.splitlines() if line.endswith("hello from the handler"))
    assert "[DefaultFunction]" in line and len(line.split()[2]) == 36  # request id, a UUID


def test_post_to_a_disconnected_socket_is_410_and_disconnect_runs(stack):
    gone = _socket(stack)
    gone_id = _fixture_log(stack, "connect")[-1]["conn"]
    gone.close()
    wait_until(lambda: any(e["conn"] == gone_id for e in _fixture_log(stack, "disconnect")), what="$disconnect")
    [event] = [e for e in _fixture_log(stack, "disconnect") if e["conn"] == gone_id]
    assert event["code"] == 1000
    ws = _socket(stack)
    ws.send(f"post-to:{gone_id}")
    assert json.loads(ws.recv()) == {"posted": 410}
    management = boto3.client("apigatewaymanagementapi", endpoint_url=stack.endpoints["management"],
                              region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with pytest.raises(management.exceptions.GoneException):
        management.get_connection(ConnectionId=gone_id)
    live_id = _fixture_log(stack, "connect")[-1]["conn"]
    assert management.get_connection(ConnectionId=live_id)["Identity"]["SourceIp"] == "127.0.0.1"
    with pytest.raises(management.exceptions.PayloadTooLargeException):
        management.post_to_connection(ConnectionId=live_id, Data=b"x" * (128 * 1024 + 1))
    ws.close()


def test_oversized_message_closes_with_1009(stack):
    ws = _socket(stack)
    ws.send("x" * 5000)
    opcode, data = ws.recv_data(control_frame=True)
    assert (opcode, int.from_bytes(data[:2], "big")) == (websocket.ABNF.OPCODE_CLOSE, 1009)
    ws.close()


def test_http_api_route_with_path_parameter(stack):
    with urllib.request.urlopen(f"{stack.endpoints['http']}/hello/world", timeout=10) as response:
        assert (response.status, response.read()) == (200, b"hello world")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{stack.endpoints['http']}/nowhere", timeout=10)
    assert missing.value.code == 404


def _stream_keys(stack, function):
    return [key for e in _fixture_log(stack, "stream") if e["function"] == function for key in e["keys"]]


def _failures(stack):
    return log_lines(stack.tmp / "logs" / "stream-failures.jsonl")


def test_bisect_isolates_a_poison_record_and_retries_are_bounded(stack):
    _put_together(stack, [{"id": f"bisect-{n}", "to": "raise", "poison": n == 2} for n in range(4)])
    wait_until(lambda: any(f["DDBStreamBatchInfo"]["batchSize"] == 1 for f in _failures(stack)
                           if f["requestContext"]["functionArn"] == "RaiseFunction"), what="the poison record")
    # The half after the poison record is delivered once the poison record is given up on.
    wait_until(lambda: _stream_keys(stack, "raise").count("bisect-3") == 3, what="the last half to be delivered")
    failure = next(f for f in _failures(stack) if f["requestContext"]["functionArn"] == "RaiseFunction")
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert failure["requestContext"]["approximateInvokeCount"] == 2  # the try and MaximumRetryAttempts: 1
    assert failure["destination"] == "arn:aws:sqs:us-east-1:000000000000:failed"
    keys = _stream_keys(stack, "raise")
    assert keys.count("bisect-2") == 4  # in the batch of 4, its half of 2, then alone: tried and retried once
    assert keys.count("bisect-0") == 2 and keys.count("bisect-3") == 3  # [0..3], [0,1] | [0..3], [2,3], [3]


def test_reported_item_failures_are_retried_from_the_first_failure(stack):
    _put_together(stack, [{"id": "report-0", "to": "report"}, {"id": "report-1", "to": "report", "failTimes": 2},
                          {"id": "report-2", "to": "report"}])
    wait_until(lambda: _stream_keys(stack, "report").count("report-1") == 3, what="two retries")
    keys = _stream_keys(stack, "report")
    assert keys.count("report-0") == 1  # before the failure: never sent again
    assert keys.count("report-2") == 3  # after it: retried with it, in order
    assert not [f for f in _failures(stack) if f["requestContext"]["functionArn"] == "ReportFunction"]


def test_records_older_than_the_maximum_age_go_to_the_failure_destination(stack):
    _put(stack, id="aged", to="age")
    wait_until(lambda: [f for f in _failures(stack) if f["requestContext"]["functionArn"] == "AgeFunction"],
               what="the aged record")
    failure = next(f for f in _failures(stack) if f["requestContext"]["functionArn"] == "AgeFunction")
    assert failure["requestContext"]["condition"] == "RecordAgeExceeded"


def test_ttl_deletions_reach_the_stream_as_service_deletions(stack):
    _put(stack, id="expiring", to="ttl", expireAfter=int(time.time()) - 1)
    wait_until(lambda: [e for e in _fixture_log(stack, "stream") if e["function"] == "ttl" and "REMOVE" in e["events"]],
               what="the TTL deletion")
    [event] = [e for e in _fixture_log(stack, "stream") if e["function"] == "ttl" and "REMOVE" in e["events"]]
    assert event["identity"] == [{"type": "Service", "principalId": "dynamodb.amazonaws.com"}]


def test_schedule_runs_while_its_rule_is_enabled(stack):
    wait_until(lambda: _fixture_log(stack, "tick"), what="a tick")
    events = local_ddb.client(stack.dynamodb_endpoint, "events")
    events.disable_rule(Name="local-tick")
    scheduler = stack.scheduler
    settled = scheduler.checks + 2  # a tick already under way may still land before this
    wait_until(lambda: scheduler.checks >= settled, what="the scheduler to see the disabled rule")
    count = len(_fixture_log(stack, "tick"))
    later = scheduler.checks + 3
    wait_until(lambda: scheduler.checks >= later, what="three more schedule periods")
    assert len(_fixture_log(stack, "tick")) == count
    events.enable_rule(Name="local-tick")
    wait_until(lambda: len(_fixture_log(stack, "tick")) > count, what="ticks after re-enabling")
    assert _fixture_log(stack, "tick")[0]["source"] == "aws.events"


class _InvokeApi(BaseHTTPRequestHandler):
    """A stand-in for `sam local start-lambda`: the Lambda Invoke API, answering for HelloFunction."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/2015-03-31/functions/HelloFunction/invocations"
        name = event["pathParameters"]["name"]
        if name == "crash":
            body, headers = {"errorType": "ValueError", "errorMessage": "remote crash"}, {"X-Amz-Function-Error":
                                                                                           "Unhandled"}
        else:
            body, headers = {"statusCode": 200, "body": f"remote hello {name}"}, {}
        data = json.dumps(body).encode()
        self.send_response(200)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_a_function_served_over_the_invoke_api(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _InvokeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        remote = {"HelloFunction": f"http://127.0.0.1:{server.server_address[1]}"}
        with LocalStack(_options(tmp_path, remote_functions=remote)) as stack:
            with urllib.request.urlopen(f"{stack.endpoints['http']}/hello/there", timeout=10) as response:
                assert response.read() == b"remote hello there"
            with pytest.raises(urllib.error.HTTPError) as failed:
                urllib.request.urlopen(f"{stack.endpoints['http']}/hello/crash", timeout=10)
            assert failed.value.code == 500
            served = stack.endpoints["remote_functions"]["HelloFunction"]  # what the ready file carries
            assert served["endpoint"] == remote["HelloFunction"]
            assert served["environment"] == stack.function_environment("HelloFunction")
            assert served["environment"]["FIXTURE_LOG"] == str(tmp_path / "fixture.log")
            assert served["environment"]["AWS_CA_BUNDLE"] == stack.endpoints["ca_bundle"]
    finally:
        server.shutdown()


def test_a_remote_function_that_overruns_its_timeout_fails_at_the_deadline(tmp_path):
    answer = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            answer.wait(10)  # past the 0.3 s timeout: answers only once the test is done
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    spec = FunctionSpec("SlowFunction", "slow", "h.h", tmp_path, {}, timeout=0.3)
    function = RemoteFunction(spec, f"http://127.0.0.1:{server.server_address[1]}", StackLog())
    try:
        started = time.monotonic()
        invocation = function.invoke({})
        took = time.monotonic() - started
    finally:
        answer.set()
        function.close()
        server.shutdown()
    assert invocation.error == {"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 0.30 seconds"}
    assert 0.3 <= took < 1.0


def test_unknown_remote_function_is_a_clear_error(tmp_path):
    with pytest.raises(StackError, match="NoSuchFunction"):
        LocalStack(_options(tmp_path, remote_functions={"NoSuchFunction": "http://127.0.0.1:9"})).start()


def test_a_restarted_stack_keeps_the_data(tmp_path):
    with local_ddb.LocalDynamoDB() as ddb:
        options = _options(tmp_path, dynamodb_endpoint=ddb.endpoint)
        with LocalStack(options):
            _put_direct = local_ddb.client(ddb.endpoint)
            _put_direct.put_item(TableName="local-items", Item={"id": {"S": "survivor"}})
        with LocalStack(options):
            items = local_ddb.client(ddb.endpoint).scan(TableName="local-items")["Items"]
            assert items == [{"id": {"S": "survivor"}}]

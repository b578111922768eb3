"""The local WebSocket API refuses what API Gateway refuses, with API Gateway's own values (README:
"What the local WebSocket API refuses, as API Gateway does"): frame and message quotas, binary
frames, concurrent invocations per socket, messages of a closed socket, the socket before $connect
returns, subprotocols, posted messages in frames, idle and duration limits, template features."""

from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path

import pytest
import websocket

from harness.stack.deployment import deployment_context, load_deployment
from harness.stack.local_stack import LocalStack, StackOptions
from harness.stack.logs import StackLog
from harness.stack.template import Template, TemplateError
from harness.stack.websocket_api import Quotas, WebSocketGateway, select_route, text_fragments
from tests.stack_support import log_lines, wait_until

TEMPLATE = Path(__file__).parent / "fixtures" / "stack_template.yaml"
KB = 1024


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The fixture template with API Gateway's own quotas and 2 instances per function."""
    tmp = tmp_path_factory.mktemp("gateway-rules")
    options = StackOptions(template=TEMPLATE, log_dir=tmp / "logs", parameters={"FixtureLog": str(tmp / "fixture.log")},
                           concurrency=2)
    with LocalStack(options) as running:
        running.tmp = tmp
        yield running


def _socket(stack, query="", **kwargs) -> websocket.WebSocket:
    return websocket.create_connection(stack.endpoints["websocket"] + query, timeout=10, **kwargs)


def _fixture_log(stack, kind):
    return log_lines(stack.tmp / "fixture.log", kind)


def _invocations(stack, function):
    return [r for r in log_lines(stack.tmp / "logs" / "invocations.jsonl") if r["function"] == function]


def _size_message(total: int) -> str:
    """A SIZE action of exactly ``total`` bytes."""
    bare = json.dumps({"action": "SIZE", "pad": ""})
    return json.dumps({"action": "SIZE", "pad": "x" * (total - len(bare))})


def _close_code(ws: websocket.WebSocket) -> int:
    """The code of the gateway's close frame; then the TCP connection is dropped (websocket-client
    answers the close frame but keeps the connection until its own close timeout)."""
    opcode, data = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    ws.shutdown()
    return int.from_bytes(data[:2], "big")


def _send_fragments(ws: websocket.WebSocket, text: str, size: int) -> None:
    data = text.encode()
    pieces = [data[i:i + size] for i in range(0, len(data), size)]
    for n, piece in enumerate(pieces):
        opcode = websocket.ABNF.OPCODE_TEXT if n == 0 else websocket.ABNF.OPCODE_CONT
        ws.send_frame(websocket.ABNF.create_frame(piece, opcode, fin=int(n == len(pieces) - 1)))


def test_the_quotas_default_to_api_gateways():
    assert Quotas() == Quotas(max_message_bytes=128 * KB, idle_timeout=600, max_connection_duration=7200,
                              max_frame_bytes=32 * KB)


def test_a_frame_of_32_kb_passes_and_one_byte_more_closes_with_1009(stack):
    ws = _socket(stack)
    ws.send(_size_message(32768))
    assert json.loads(ws.recv()) == {"bytes": 32768}
    ws.send(_size_message(32769))
    assert _close_code(ws) == 1009


def test_fragments_of_32_kb_up_to_128_kb_pass_and_one_byte_more_closes_with_1009(stack):
    ws = _socket(stack)
    _send_fragments(ws, _size_message(128 * KB), 32 * KB)  # 4 fragments of 32 KB
    assert json.loads(ws.recv()) == {"bytes": 128 * KB}
    _send_fragments(ws, _size_message(128 * KB + 1), 32 * KB)  # 4 of 32 KB and 1 byte
    assert _close_code(ws) == 1009


def test_a_binary_frame_closes_with_1003_and_invokes_nothing(stack):
    before = len(_invocations(stack, "DefaultFunction"))
    ws = _socket(stack)
    conn_id = _fixture_log(stack, "connect")[-1]["conn"]
    ws.send_binary(b"binary, which $default would get")
    assert _close_code(ws) == 1003
    wait_until(lambda: any(e["conn"] == conn_id for e in _fixture_log(stack, "disconnect")), what="$disconnect")
    assert len(_invocations(stack, "DefaultFunction")) == before
    assert f"{conn_id} sent a binary frame: closed with 1003" in (stack.tmp / "logs" / "stack.log").read_text()


def test_a_sockets_next_message_is_invoked_while_its_previous_one_still_runs(stack, tmp_path):
    marker = tmp_path / "release"
    ws = _socket(stack)
    ws.send(json.dumps({"action": "HOLD", "n": 1, "marker": str(marker)}))
    ws.send(_size_message(100))
    assert json.loads(ws.recv()) == {"bytes": 100}  # answered while HOLD 1 still runs (it ends on the marker)
    # HOLD 1's instance may still be starting (a cold start): its start is awaited, its end cannot come yet.
    wait_until(lambda: (1, "start") in [(e["n"], e["at"]) for e in _fixture_log(stack, "hold")], what="HOLD 1 to start")
    assert (1, "end") not in [(e["n"], e["at"]) for e in _fixture_log(stack, "hold")]
    marker.touch()
    wait_until(lambda: (1, "end") in [(e["n"], e["at"]) for e in _fixture_log(stack, "hold")], what="HOLD 1 to end")
    ws.close()


def test_messages_waiting_for_a_function_instance_when_their_socket_closes_are_never_invoked(stack, tmp_path):
    marker = tmp_path / "release"
    ws = _socket(stack)
    conn_id = _fixture_log(stack, "connect")[-1]["conn"]

    def started():
        return {e["n"] for e in _fixture_log(stack, "hold") if e["at"] == "start" and e["conn"] == conn_id}

    for n in (10, 11):  # both of RulesFunction's 2 instances busy
        ws.send(json.dumps({"action": "HOLD", "n": n, "marker": str(marker)}))
    wait_until(lambda: started() == {10, 11}, what="both instances busy")
    for n in (12, 13, 14):
        ws.send(json.dumps({"action": "HOLD", "n": n, "marker": str(marker)}))
    ws.close()
    log = stack.tmp / "logs" / "stack.log"
    wait_until(lambda: f"{conn_id} 3 message(s) waiting for a free function instance dropped" in log.read_text(),
               what="the dropped messages in the log")
    marker.touch()
    wait_until(lambda: {e["n"] for e in _fixture_log(stack, "hold") if e["at"] == "end"} >= {10, 11},
               what="the held invocations to end")
    after = _socket(stack)  # its message waits behind the dropped ones for an instance
    after.send(_size_message(50))
    assert json.loads(after.recv()) == {"bytes": 50}
    after.close()
    assert started() == {10, 11}


def test_a_message_that_waited_for_a_function_instance_logs_its_wait_apart_from_its_duration(stack, tmp_path):
    """Lambda never makes a synchronous invocation wait (it starts another instance): a wait here is
    the local stack's, logged as ``queued_ms`` (the checkers' lag spans), not in Lambda's Duration."""
    marker = tmp_path / "release"
    ws = _socket(stack)
    conn_id = _fixture_log(stack, "connect")[-1]["conn"]
    before = len(_invocations(stack, "RulesFunction"))

    def started():
        return {e["n"] for e in _fixture_log(stack, "hold") if e["at"] == "start" and e["conn"] == conn_id}

    for n in (20, 21):  # both of RulesFunction's 2 instances busy
        ws.send(json.dumps({"action": "HOLD", "n": n, "marker": str(marker)}))
    wait_until(lambda: started() == {20, 21}, what="both instances busy")
    ws.send(json.dumps({"action": "HOLD", "n": 22, "marker": str(marker)}))
    sent = time.monotonic()
    while time.monotonic() - sent < 0.4:  # it stays queued while both instances are held
        assert 22 not in started()
    marker.touch()
    wait_until(lambda: len(_invocations(stack, "RulesFunction")) >= before + 3, what="the three invocations logged")
    records = _invocations(stack, "RulesFunction")[before:]
    waited = [r for r in records if r.get("queued_ms")]
    assert len(waited) == 1 and waited[0]["queued_ms"] >= 350, records
    assert waited[0]["duration_ms"] < waited[0]["queued_ms"], "the wait is not part of Lambda's Duration"
    ws.close()


def test_the_socket_is_gone_until_connect_returns(stack):
    ws = _socket(stack, "?self-post=1")
    [early] = _fixture_log(stack, "self-post")
    assert (early["post"], early["get"]) == (410, 410)
    ws.send(f"post-to:{early['conn']}")  # once $connect has returned, the same id works
    assert json.loads(ws.recv()) == {"from": early["conn"]}
    ws.close()


def test_connect_picks_the_subprotocol(stack):
    ws = _socket(stack, subprotocols=["chat1", "myprotocol"])
    assert ws.getsubprotocol() == "myprotocol"
    ws.close()
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        _socket(stack, subprotocols=["chat1"])
    assert refused.value.status_code == 400


def test_a_posted_message_over_32_kb_arrives_in_frames_of_32_kb(stack):
    ws = _socket(stack)
    ws.send(json.dumps({"action": "BIG", "n": 40000}))
    frames = [ws.recv_frame()]
    while not frames[-1].fin:
        frames.append(ws.recv_frame())
    assert (frames[0].opcode, len(frames[0].data)) == (websocket.ABNF.OPCODE_TEXT, 32768)
    assert all(f.opcode == websocket.ABNF.OPCODE_CONT and len(f.data) <= 32768 for f in frames[1:])
    assert sum(len(f.data) for f in frames) == 40000
    ws.send(json.dumps({"action": "BIG", "n": 128 * KB}))  # PostToConnection's limit, in 4 frames
    assert len(ws.recv()) == 128 * KB
    ws.close()


def test_text_fragments_never_cut_a_character():
    pieces = text_fragments("é" * 5, 4)  # 2 bytes each
    assert pieces == ["éé", "éé", "é"] and all(len(p.encode()) <= 4 for p in pieces)


def test_an_unknown_route_without_default_is_answered_forbidden():
    gateway = WebSocketGateway({}, "$request.body.action", stage="test", log=StackLog()).start()
    try:
        ws = websocket.create_connection(gateway.endpoint, timeout=10)
        ws.send(json.dumps({"action": "NOPE"}))
        frame = json.loads(ws.recv())
        assert frame["message"] == "Forbidden" and set(frame) == {"message", "connectionId", "requestId"}
        ws.close()
    finally:
        gateway.stop()


def test_idle_sockets_close_after_the_idle_timeout_unless_posted_to_and_all_at_the_duration_limit():
    gateway = WebSocketGateway({}, "$request.body.action", stage="test", log=StackLog(),
                               quotas=Quotas(idle_timeout=0.4, max_connection_duration=1.2)).start()
    try:
        opened = time.monotonic()  # before the gateway starts either socket's clocks
        idle = websocket.create_connection(gateway.endpoint, timeout=10)
        posted = websocket.create_connection(gateway.endpoint, timeout=10)
        [_, posted_id] = wait_until(lambda: len(gateway.connection_ids()) == 2 and gateway.connection_ids(),
                                    what="2 open sockets")
        idle_closed: list[tuple[int, float]] = []
        reader = threading.Thread(target=lambda: idle_closed.append((_close_code(idle), time.monotonic() - opened)))
        reader.start()
        while gateway.post(posted_id, b"keep-alive"):  # a message to the client is activity too
            assert posted.recv() == "keep-alive"
            time.sleep(0.1)  # the pace of the posts, not a wait for the gateway
        lasted = time.monotonic() - opened
        reader.join(5)
        [(code, idle_lasted)] = idle_closed
        assert code == 1001 and 0.4 <= idle_lasted < 1.0
        assert _close_code(posted) == 1001 and 1.2 <= lasted < 2.0
    finally:
        gateway.stop()


def test_route_selection_reads_both_forms_of_the_expression():
    routes = {"JOIN": object(), "$default": object()}
    for expression in ("$request.body.action", "${request.body.action}"):
        assert select_route(expression, '{"action": "JOIN"}', routes) == "JOIN"
        assert select_route(expression, "not json", routes) == "$default"
    assert select_route("$request.body.game.action", '{"game": {"action": "JOIN"}}', routes) == "JOIN"


def test_route_selection_speaks_api_gateways_expression_language():
    """Text around variables, several variables, ``\\$`` for a dollar, numbers as their text
    ("WebSocket selection expressions"); the original Simple Relay's ``\\\\$default`` (its YAML
    plain scalar) selects no route, so every message goes to ``$default``."""
    routes = {"JOIN-beta": object(), "JOIN.2": object(), "7": object(), "$default": object(), "$connect": object()}
    assert select_route("${request.body.action}-beta", '{"action": "JOIN"}', routes) == "JOIN-beta"
    assert select_route("${request.body.action}.${request.body.v}", '{"action": "JOIN", "v": 2}', routes) == "JOIN.2"
    assert select_route("$request.body.n", '{"n": 7}', routes) == "7"
    assert select_route("${request.body.action}-beta", '{"other": 1}', routes) == "$default"
    assert select_route("\\$default", '{"action": "JOIN-beta"}', routes) == "$default"
    assert select_route("\\\\$default", '{"action": "JOIN-beta"}', routes) == "$default"


def _deploy(change) -> None:
    """Load the fixture template with ``change`` made to its resources, as the stack would."""
    body = copy.deepcopy(Template.load(TEMPLATE).body)
    change(body["Resources"])
    template = Template(TEMPLATE, body)
    load_deployment(template, deployment_context(template, parameters={"FixtureLog": "unused"}))


@pytest.mark.parametrize(("change", "refusal"), [
    (lambda r: r["EchoRoute"]["Properties"].update(AuthorizationType="CUSTOM", AuthorizerId="Auth"),
     "EchoRoute: AuthorizationType CUSTOM (authorizers) is not emulated"),
    (lambda r: r.update(Auth={"Type": "AWS::ApiGatewayV2::Authorizer", "Properties": {"ApiId": {"Ref": "Api"}}}),
     "Auth: authorizers are not emulated"),
    (lambda r: r["EchoRoute"]["Properties"].update(RouteResponseSelectionExpression="$default"),
     "EchoRoute: two-way routes (RouteResponseSelectionExpression) are not emulated"),
    (lambda r: r.update(Answer={"Type": "AWS::ApiGatewayV2::RouteResponse", "Properties": {"ApiId": {"Ref": "Api"}}}),
     "Answer: two-way routes (route responses) are not emulated"),
    (lambda r: r["EchoIntegration"]["Properties"].update(IntegrationType="HTTP_PROXY"),
     "EchoIntegration: IntegrationType HTTP_PROXY cannot run on the local gateway"),
    (lambda r: r["Api"]["Properties"].update(RouteSelectionExpression="$request.header.x-route"),
     "Api: RouteSelectionExpression '$request.header.x-route' names a variable the local gateway cannot evaluate"),
])
def test_template_features_the_gateway_cannot_honour_are_refused_in_one_line(change, refusal):
    with pytest.raises(TemplateError) as refused:
        _deploy(change)
    assert str(refused.value).startswith(refusal) and "\n" not in str(refused.value)

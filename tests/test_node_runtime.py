"""nodejs* functions under the Node host (harness/stack/node_runtime.py, node_host/host.js): handler
styles, context, environment, console lines, Lambda's error shapes, timeouts, the invocation seam, the
refusals at start, npm install, and a short Locust run on a Node relay (tests/fixtures/node_relay)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.faults.log import FaultLog
from harness.faults.plan import FaultPlan, parse_rule
from harness.stack.invocation_faults import EventIdentities, FaultyFunction
from harness.stack.local_stack import LocalStack, StackError, StackOptions
from harness.stack.logs import StackLog
from harness.stack.node_runtime import NodeFunction
from harness.stack.npm_install import NpmError, install_dependencies
from harness.stack.runtime import FunctionSpec

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ROOT / "tests" / "fixtures" / "node_functions"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not on PATH (apt-get install nodejs npm; .ci/run "
                                                     "installs it)")


@pytest.fixture
def log(tmp_path):
    stack_log = StackLog(tmp_path)
    yield stack_log
    stack_log.close()


def _function(log: StackLog, handler: str, timeout: float = 3.0, concurrency: int = 2) -> NodeFunction:
    assert NODE is not None
    dotted = handler if "." in handler else f"handlers.{handler}"
    spec = FunctionSpec("Fn", "Fn", dotted, HANDLERS, {"TABLE": "seats"}, timeout=timeout, memory_mb=256,
                        runtime="nodejs20.x")
    return NodeFunction(spec, log, NODE, {"AWS_ACCESS_KEY_ID": "local"}, concurrency)


@needs_node
def test_async_and_callback_handlers_get_context_environment_and_their_console_lines_logged(log, tmp_path):
    function = _function(log, "asyncHandler")
    try:
        first, second = function.invoke({"n": 1}), function.invoke({"n": 2})
    finally:
        function.close()
    assert first.error is None and second.error is None
    payload = first.payload
    assert payload["requestId"] == first.request_id and payload["functionName"] == "Fn"
    assert payload["arn"] == "arn:aws:lambda:us-east-1:000000000000:function:Fn" and payload["memory"] == "256"
    assert 2000 < payload["remaining"] <= 3000
    assert payload["env"] == {"TABLE": "seats", "AWS_LAMBDA_FUNCTION_NAME": "Fn", "AWS_REGION": "us-east-1",
                              "AWS_ACCESS_KEY_ID": "local"}
    assert (second.payload["calls"], second.payload["pid"]) == (2, payload["pid"])  # one warm instance
    text = (tmp_path / "stack.log").read_text()
    assert f"[Fn] {first.request_id} INFO hello from Fn {{ n: 1 }}" in text
    assert f"[Fn] {second.request_id} ERROR a warning line" in text
    assert text.index("hello from Fn { n: 1 }") < text.index(f"END RequestId: {first.request_id}")
    records = [json.loads(line) for line in (tmp_path / "invocations.jsonl").read_text().splitlines()]
    assert [set(r) for r in records] == [{"t", "function", "request_id", "duration_ms", "outcome"}] * 2

    for handler, payload in (("callbackHandler", {"doubled": 42}), ("esm.handler", {"esm": True, "n": 21})):
        other = _function(log, handler)
        try:
            assert other.invoke({"n": 21}).payload == payload
        finally:
            other.close()


@needs_node
@pytest.mark.parametrize(("handler", "error_type", "message"), [
    ("throws", "TypeError", "no such seat"),
    ("callbackError", "string", "plain refusal"),
    ("missing", "Runtime.HandlerNotFound", "handlers.missing is undefined or not exported"),
    ("broken.handler", "Runtime.UserCodeSyntaxError", "SyntaxError: Unexpected end of input"),
    ("nowhere.handler", "Runtime.ImportModuleError", "Error: Cannot find module 'nowhere'"),
], ids=["thrown", "callback", "not-exported", "syntax", "no-module"])
def test_handler_errors_have_the_shape_lambda_reports(log, tmp_path, handler, error_type, message):
    function = _function(log, handler)
    try:
        invocation = function.invoke({})
    finally:
        function.close()
    assert (invocation.error["errorType"], invocation.error["errorMessage"]) == (error_type, message)
    assert isinstance(invocation.error["trace"], list)
    record = json.loads((tmp_path / "invocations.jsonl").read_text())
    assert (record["outcome"], record["error"]) == ("error", f"{error_type}: {message}")
    if handler == "throws":
        assert "at exports.throws" in (tmp_path / "stack.log").read_text()


@needs_node
def test_an_overrun_is_sandbox_timedout_and_the_slot_gets_a_new_instance(log):
    function = _function(log, "slow", timeout=0.5, concurrency=1)
    try:
        warm = function.invoke({"ms": 1})
        late = function.invoke({"ms": 5000})
        after = function.invoke({"ms": 1})
    finally:
        function.close()
    assert late.error == {"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 0.50 seconds"}
    assert 450 < late.duration_ms < 1500
    assert after.payload["pid"] != warm.payload["pid"] and after.payload["calls"] == 1  # module state is new
    with pytest.raises(ProcessLookupError):
        os.kill(warm.payload["pid"], 0)


@needs_node
def test_the_invocation_seam_cuts_and_prevents_node_invocations(log, tmp_path):
    rules = [{"name": "cut", "seam": "invocation", "type": "timeout", "params": {"after_ms": 200}, "count": 1},
             {"name": "before", "seam": "invocation", "type": "error_before", "count": 1}]
    plan = FaultPlan([parse_rule(r) for r in rules], seed=1, log=FaultLog(tmp_path / "faults.jsonl"))
    plan.start()
    function = FaultyFunction(_function(log, "slow", concurrency=1), plan, log, EventIdentities())
    try:
        cut = function.invoke({"ms": 2000})
        prevented = function.invoke({"ms": 1})
        plain = function.invoke({"ms": 1})
    finally:
        function.close()
    assert cut.cut and cut.error["errorType"] == "Sandbox.Timedout" and cut.duration_ms < 1500
    assert prevented.error["errorType"] == "InjectedError"
    assert plain.payload["calls"] == 1  # the cut instance was replaced; error_before ran nothing
    assert [json.loads(line)["fault"] for line in (tmp_path / "faults.jsonl").read_text().splitlines()] == [
        "timeout", "error_before"]
    assert len((tmp_path / "invocations.jsonl").read_text().splitlines()) == 1  # cut short: not the handler's


def _template(tmp_path: Path, runtime: str) -> Path:
    body = (ROOT / "tests" / "fixtures" / "node_relay" / "template.yaml").read_text()
    path = tmp_path / "template.yaml"
    path.write_text(body.replace("Runtime: nodejs20.x", f"Runtime: {runtime}")
                    .replace("CodeUri: src/", f"CodeUri: {ROOT / 'tests' / 'fixtures' / 'node_relay' / 'src'}"))
    return path


def test_a_runtime_the_stack_cannot_run_is_refused_at_start_in_one_line(tmp_path):
    with pytest.raises(StackError) as caught:
        LocalStack(StackOptions(template=_template(tmp_path, "java21"))).start()
    message = str(caught.value)
    assert "Runtime java21 cannot run on the local stack" in message and "\n" not in message


def test_node_missing_from_path_is_one_line_naming_the_runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError) as caught:
        LocalStack(StackOptions(template=_template(tmp_path, "nodejs12.x"))).start()
    message = str(caught.value)
    assert "Runtime nodejs12.x needs node on PATH" in message and "install Node.js" in message
    assert "\n" not in message


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not on PATH (apt-get install nodejs npm)")
def test_a_failed_npm_install_is_one_line_naming_the_folder_and_npms_error(tmp_path):
    (tmp_path / "package.json").write_text("{ not json")
    lines: list[str] = []
    with pytest.raises(NpmError) as caught:
        install_dependencies(tmp_path, shutil.which("npm"), lines.append)
    message = str(caught.value)
    assert str(tmp_path) in message and "npm install --omit=dev" in message and "\n" not in message
    assert "JSON" in message or "EJSONPARSE" in message
    assert lines == [f"installing the npm dependencies of {tmp_path} (npm install --omit=dev) ..."]
    (tmp_path / "node_modules").mkdir()
    assert install_dependencies(tmp_path, None, lines.append) is False  # installed already: nothing to do


@needs_node
def test_a_short_locust_run_on_a_node_relay_gives_a_verdict(tmp_path):
    """aws-sdk v2 from npm (installed by the stack), event-derived management endpoint, stream consumer."""
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "locust", "-f", "scenarios/relay.py", "--headless", "-u", "6",
                           "-r", "6", "-t", "8s", "--seed", "1", "--run-dir", str(run_dir), "--template",
                           "tests/fixtures/node_relay/template.yaml"], cwd=ROOT, capture_output=True, text=True,
                          timeout=110)
    verdict = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("relay-harness: ")]
    assert done.returncode in (0, 1) and verdict, done.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["verdict"] in ("pass", "fail", "inconclusive")
    health = next(c for c in results["checks"] if c["name"] == "health")
    assert health["status"] == "pass", health  # the Node functions ran without an error
    functions = {json.loads(line)["function"] for line in (run_dir / "invocations.jsonl").read_text().splitlines()}
    assert functions == {"WebSocketFunction", "StreamFunction", "HttpFunction"}

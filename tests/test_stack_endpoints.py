"""How functions reach the local stack's management API without being told: the event's own
``https://{domainName}/{stage}`` and the template's execute-api URL, over HTTPS with the stack's CA
(harness/stack/local_ca.py, harness/stack/execute_api.py); the relay is
tests/fixtures/endpoint_functions, written as AWS's samples are."""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trustme

from harness.faults.log import FaultLog
from harness.faults.plan import FaultPlan, parse_rule
from harness.stack.execute_api import localise
from harness.stack.local_ca import LocalCA, TrustError
from harness.stack.local_stack import LocalStack, StackOptions
from tests.stack_support import Client, log_lines

TEMPLATE = Path(__file__).parent / "fixtures" / "endpoint_template.yaml"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("endpoints")
    node_extra_before = os.environ.get("NODE_EXTRA_CA_CERTS")  # this machine's shell may set it
    with LocalStack(StackOptions(template=TEMPLATE, log_dir=tmp)) as running:
        running.node_extra_before = Path(node_extra_before).read_text() if node_extra_before else ""
        yield running


def _ask(client: Client, **body: Any) -> dict[str, Any]:
    client.send(body)
    return client.recv_frame()


def test_the_events_endpoint_is_the_https_management_api(stack):
    endpoints = stack.endpoints
    authority = endpoints["management_https"].removeprefix("https://").removesuffix("/live")
    assert endpoints["management_https"] == f"https://{authority}/live" and authority.startswith("127.0.0.1:")
    client = Client(endpoints["websocket"])
    assert _ask(client, n=1) == {"via": "event", "op": "post", "n": 1}
    assert _ask(client, op="get") == {"via": "event", "op": "get", "n": None, "sourceIp": "127.0.0.1"}
    client.close()
    # The functions trust the stack's CA through the variables it hands them; nothing else does.
    environment = stack.function_environment("RelayFunction")
    assert environment["AWS_CA_BUNDLE"] == endpoints["ca_bundle"]
    bundle, node = Path(endpoints["ca_bundle"]).read_text(), Path(environment["NODE_EXTRA_CA_CERTS"]).read_text()
    ca = Path(endpoints["local_ca"]).read_text()
    assert bundle.endswith(ca) and bundle.count("BEGIN CERTIFICATE") > 50  # the roots trusted before, kept
    assert node.startswith(stack.node_extra_before) and node.endswith(ca)
    assert node.count("BEGIN CERTIFICATE") == stack.node_extra_before.count("BEGIN CERTIFICATE") + 1
    trusting = ssl.create_default_context(cafile=endpoints["local_ca"])
    with pytest.raises(urllib.error.HTTPError) as gone:  # TLS verified, then API Gateway's 410
        urllib.request.urlopen(f"{endpoints['management_https']}/@connections/nobody", context=trusting, timeout=5)
    assert gone.value.code == 410
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{endpoints['management_https']}/@connections/nobody",
                               context=ssl.create_default_context(), timeout=5)


def test_template_derived_endpoints_are_this_stacks_and_others_are_left_alone(stack):
    environment = stack.function_environment("RelayFunction")
    assert environment["CALLBACK_URL"] == environment["JOINED_URL"] == stack.endpoints["management_https"]
    assert environment["SOMEONE_ELSES_URL"] == "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/live"
    client = Client(stack.endpoints["websocket"])
    assert _ask(client, via="template", n=2) == {"via": "template", "op": "post", "n": 2}
    assert _ask(client, via="joined", n=3) == {"via": "joined", "op": "post", "n": 3}
    client.close()


@pytest.mark.parametrize(("value", "expected"), [
    ("https://RelayApi.execute-api.us-east-1.amazonaws.com/live", "https://127.0.0.1:9/live"),
    ("https://RelayApi.execute-api.us-east-1.amazonaws.com", "https://127.0.0.1:9"),
    ("https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/live", None),  # another API
    ("https://RelayApi.execute-api.eu-west-1.amazonaws.com/live", None),  # another region
    ("wss://RelayApi.execute-api.us-east-1.amazonaws.com/live", None),  # the clients' URL, not @connections
    ("url=https://RelayApi.execute-api.us-east-1.amazonaws.com/live", None),  # not the whole value
    ("https://example.invalid/live", None),
    # the original Simple Relay's WS_APIGW_ENDPOINT: no scheme (aws-sdk v2 adds https://)
    ("RelayApi.execute-api.us-east-1.amazonaws.com/Prod", "127.0.0.1:9/Prod"),
    ("a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/Prod", None),
])
def test_only_whole_execute_api_urls_of_the_templates_api_are_localised(value, expected):
    assert localise(value, {"RelayApi"}, "us-east-1", "127.0.0.1:9") == (expected or value)


def test_the_bundles_keep_what_the_environment_trusted_and_an_unreadable_one_is_one_line(tmp_path):
    corporate = tmp_path / "corporate.pem"
    corporate.write_text(trustme.CA().cert_pem.bytes().decode())
    ca = LocalCA(tmp_path / "tls", ("127.0.0.1",), {"AWS_CA_BUNDLE": str(corporate),
                                                    "NODE_EXTRA_CA_CERTS": str(corporate)})
    for made in (ca.bundle_file, ca.node_file):
        text = made.read_text()
        assert text.startswith(corporate.read_text()) and text.endswith(ca.ca_file.read_text())
        assert text.count("BEGIN CERTIFICATE") == 2
    with pytest.raises(TrustError, match=r"^AWS_CA_BUNDLE names \S+nowhere.pem, which cannot be read \(.*\); "
                                         r"fix or unset it$"):
        LocalCA(tmp_path / "tls", ("127.0.0.1",), {"AWS_CA_BUNDLE": str(tmp_path / "nowhere.pem")})


class _Listener:
    """A loopback TCP listener that is not the stack: it counts connections and closes them."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.accepted = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.socket.accept()
            except OSError:
                return
            self.accepted.set()
            conn.close()


def test_an_explicit_endpoint_elsewhere_is_used_as_written_and_fails_there(stack):
    """Not redirected: the call goes where the code said, and fails as it would on AWS."""
    elsewhere = _Listener()
    client = Client(stack.endpoints["websocket"])
    answer = _ask(client, via="given", endpoint=f"https://127.0.0.1:{elsewhere.port}/live")
    client.close()
    elsewhere.socket.close()
    assert elsewhere.accepted.is_set()
    assert answer["error"] in ("SSLError", "EndpointConnectionError", "ConnectionClosedError"), answer


def test_management_faults_apply_on_the_https_path(tmp_path):
    rules = [
        {"name": "gone", "seam": "management", "type": "gone", "count": 1, "match": {"operation": "PostToConnection"}},
        {"name": "busy", "seam": "management", "type": "throttle", "count": 1, "match": {"operation": "GetConnection"}},
        {"name": "slow", "seam": "management", "type": "latency", "count": 1, "params": {"ms": 300},
         "match": {"operation": "GetConnection"}},
        {"name": "broken", "seam": "management", "type": "internal_error", "count": 1,
         "match": {"operation": "DeleteConnection"}},
    ]
    plan = FaultPlan([parse_rule(r) for r in rules], seed=1, log=FaultLog(tmp_path / "faults.jsonl"))
    with LocalStack(StackOptions(template=TEMPLATE, log_dir=tmp_path, faults=plan)) as stack:
        client = Client(stack.endpoints["websocket"])
        assert _ask(client, n=1)["error"] == "GoneException"
        assert _ask(client, op="get")["error"] == "LimitExceededException"
        started = time.monotonic()
        assert _ask(client, op="get")["sourceIp"] == "127.0.0.1"
        assert time.monotonic() - started >= 0.3
        assert _ask(client, op="delete")["error"] == "InternalServerErrorException"
        client.close()
    faults = [json.loads(line) for line in (tmp_path / "faults.jsonl").read_text().splitlines()]
    assert [(f["seam"], f["fault"], f["target"]["operation"]) for f in faults] == [
        ("management", "gone", "PostToConnection"), ("management", "throttle", "GetConnection"),
        ("management", "latency", "GetConnection"), ("management", "internal_error", "DeleteConnection")]
    invocations = log_lines(tmp_path / "invocations.jsonl")
    assert len(invocations) == 4 and all(r["outcome"] == "ok" for r in invocations)

"""`relay-harness up` as a user runs it: a subprocess, a ready file, Ctrl-C, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import websocket

from tests.stack_support import wait_until


def _up(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "harness", "up", "--quiet", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_up_writes_the_ready_file_serves_the_relay_and_stops_cleanly_on_ctrl_c(tmp_path):
    ready = tmp_path / "ready.json"
    process = _up("--ready-file", str(ready), "--log-dir", str(tmp_path / "logs"))
    try:
        endpoints = wait_until(lambda: ready.exists() and json.loads(ready.read_text()), timeout=60,
                               what="the ready file")
        ws = websocket.create_connection(endpoints["websocket"] + "?sessionType=cli&targetNumMembers=2", timeout=10)
        frame = json.loads(ws.recv())
        assert frame[0]["type"] == "CONNECTION"
        ws.close()
        moto_port = int(endpoints["dynamodb"].rsplit(":", 1)[1])
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert json.loads(out.splitlines()[0]) == endpoints
    with socket.socket() as probe:  # the local DynamoDB went with it
        assert probe.connect_ex(("127.0.0.1", moto_port)) != 0
    assert "[WebSocketFunction]" in (tmp_path / "logs" / "stack.log").read_text()


def test_a_busy_port_and_a_missing_template_are_one_line_errors(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        process = _up("--port", str(port))
        _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert err.count("\n") == 1 and f"127.0.0.1:{port}" in err and "Traceback" not in err
    process = _up("--template", str(tmp_path / "missing.yaml"))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert err.strip() == f"relay-harness up: template {tmp_path / 'missing.yaml'} not found: pass --template " \
                          "PATH/TO/template.yaml"


def test_bad_arguments_get_argparse_usage_errors():
    result = subprocess.run([sys.executable, "-m", "harness", "up", "--port", "many"], capture_output=True, text=True,
                            timeout=60, env={**os.environ})
    assert result.returncode == 2 and "invalid int value" in result.stderr


def _harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=60)


def test_bad_arguments_are_one_line_naming_the_subcommand(tmp_path):
    not_yaml = tmp_path / "template.yaml"
    not_yaml.write_text("Resources:\n  a: [\n")
    cases = [
        (["up", "--bogus"], "relay-harness up: unrecognized arguments: --bogus (see relay-harness up --help)"),
        (["up", "--ttl-delay", "-5"], "relay-harness up: argument --ttl-delay: -5 must be at least 0 (see "
                                      "relay-harness up --help)"),
        (["up", "--concurrency", "0"], "relay-harness up: argument --concurrency: 0 must be at least 1 (see "
                                       "relay-harness up --help)"),
        (["dynamodb", "--ttl-delay", "-1"], "relay-harness dynamodb: argument --ttl-delay: -1 must be at least 0"),
        (["up", "--template", str(not_yaml)], f"relay-harness up: template {not_yaml} is not YAML: "),
        (["proxy", "--upstream", "http://nowhere"], "relay-harness proxy: --upstream 'http://nowhere' must be "
                                                    "ws://HOST:PORT[/stage]"),
        (["proxy", "--upstream", "ws://nowhere.invalid:80"], "relay-harness proxy: --upstream host "
                                                             "'nowhere.invalid' does not resolve"),
    ]
    for args, expected in cases:
        result = _harness(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith(expected), (args, result.stderr)
        assert result.stdout == ""

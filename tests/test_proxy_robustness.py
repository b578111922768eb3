"""The proxy under bad input, its determinism, its control API and its command line."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading

import pytest
import websocket

from harness.proxy.control import ControlError, ControlServer, ProxyControl
from harness.proxy.faults import FaultSpecError, parse_cli_fault, parse_fault
from harness.proxy.server import ChaosProxy
from tests.proxy_support import Upstream
from tests.stack_support import wait_until


@pytest.fixture(scope="module")
def upstream():
    return Upstream()


def _handshake() -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /?fuzz=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def _malformed(rng: random.Random) -> tuple[bool, bytes]:
    """(needs a handshake first, bytes): garbage heads, then protocol violations after the upgrade."""
    kind = rng.randrange(8)
    noise = rng.randbytes(rng.randrange(1, 300))
    if kind == 0:
        return False, noise
    if kind == 1:
        return False, b"GET / HTTP/1.1\r\n" + noise + b"\r\n\r\n"
    if kind == 2:
        return True, noise
    if kind == 3:
        return True, struct.pack("!BB", 0x81, 5) + b"hello"  # unmasked client frame
    if kind == 4:
        return True, struct.pack("!BB", 0x83, 0x80) + os.urandom(4)  # reserved opcode
    if kind == 5:
        return True, struct.pack("!BB", 0x89, 0x80 | 126) + struct.pack("!H", 200) + os.urandom(204)  # long ping
    if kind == 6:
        return True, struct.pack("!BB", 0x80, 0x82) + os.urandom(6)  # continuation with nothing to continue
    return True, struct.pack("!BB", 0xC1, 0x80) + os.urandom(4)  # RSV1 without an extension


def test_a_thousand_malformed_inputs_leave_no_crash_and_no_leak(upstream):
    proxy = ChaosProxy(upstream.url, seed=3).start()
    try:
        baseline = proxy.call(_task_count())
        rng = random.Random(1234)
        for _ in range(1000):
            upgrade, payload = _malformed(rng)
            with socket.create_connection((proxy.host, proxy.port), timeout=5) as raw:
                raw.settimeout(5)
                if upgrade:
                    raw.sendall(_handshake())
                    head = b""
                    while b"\r\n\r\n" not in head:
                        chunk = raw.recv(4096)
                        assert chunk, "the proxy closed before answering the handshake"
                        head += chunk
                    assert head.startswith(b"HTTP/1.1 101")
                try:
                    raw.sendall(payload)
                    raw.shutdown(socket.SHUT_WR)
                    while raw.recv(65536):
                        pass
                except (ConnectionResetError, BrokenPipeError):
                    pass
        wait_until(lambda: not proxy.connections, what="every connection to be released")
        wait_until(lambda: proxy.call(_task_count()) <= baseline, what="every task to end")
        ws = websocket.create_connection(proxy.endpoint + "/?after=fuzz", timeout=5)
        ws.send("still fine")
        assert ws.recv() == "still fine"
        ws.close()
        assert any("reserved opcode" in error for error in proxy.errors)
    finally:
        proxy.stop()


async def _task_count() -> int:
    import asyncio

    return len(asyncio.all_tasks()) - 1


def _script(proxy: ChaosProxy, clients: int = 3, messages: int = 40) -> None:
    """A fixed traffic script, run by concurrent clients whose interleaving varies run to run."""

    def run(client: int) -> None:
        ws = websocket.create_connection(f"{proxy.endpoint}/?client={client}", timeout=10)
        for n in range(messages):
            ws.send(json.dumps({"action": "GO", "n": n}))
        ws.send(json.dumps({"action": "END"}))
        while json.loads(ws.recv()).get("action") != "END":
            pass
        ws.close()

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)


_RULES = [
    {"name": "lose", "type": "drop", "direction": "both", "probability": 0.2, "match": {"action": "GO"}},
    {"name": "echo-twice", "type": "duplicate", "direction": "downstream", "probability": 0.1,
     "match": {"action": "GO"}},
    {"name": "slow", "type": "delay", "direction": "upstream", "probability": 0.1, "params": {"ms": 5, "jitter_ms": 5},
     "match": {"action": "GO"}},
]


def _fault_schedule(upstream: Upstream, seed: int) -> list:
    proxy = ChaosProxy(upstream.url, seed=seed, faults=[parse_fault(r) for r in _RULES]).start()
    try:
        _script(proxy)
    finally:
        proxy.stop()
    return sorted((e["rule"]["id"], e["fault"], json.dumps(e["target"], sort_keys=True), json.dumps(e["params"]))
                  for e in proxy.fault_log.entries)


def test_same_seed_same_traffic_gives_the_same_fault_log(upstream):
    first = _fault_schedule(upstream, seed=42)
    again = _fault_schedule(upstream, seed=42)
    other = _fault_schedule(upstream, seed=43)
    assert first == again
    assert len(first) > 20
    assert first != other


def test_fault_specs_are_validated_with_precise_messages():
    cases = {
        "type=explode": "'type' must be one of",
        "type=drop,probability=1.5": "'probability' must be from 0 to 1",
        "type=delay": "delay needs params.ms",
        "type=drop,direction=sideways": "'direction' must be upstream",
        "type=drop,match.opcode=smoke": "match opcode 'smoke' is not one of",
        "type=drop,colour=red": "drop takes no parameter 'colour'",
        "type=duplicate,copies=2.5": "'copies' must be a whole number",
        "type=drop,window.start=5,window.end=1": "window end (1) must be after its start (5)",
        "type=drop,at=3": "'at' is for proxy-wide faults",
        "drop": "'drop' must look like key=value",
        "{not json": "is not valid JSON",
    }
    for text, expected in cases.items():
        with pytest.raises(FaultSpecError) as error:
            parse_cli_fault(text, 1)
        assert expected in str(error.value), text
        assert "\n" not in str(error.value)
    spec = parse_cli_fault("type=delay,direction=downstream,ms=20,match.type=MESSAGE,toxicity=0.5", 1)
    assert (spec.type, spec.direction, spec.params["ms"], spec.match.type, spec.probability) == (
        "delay", "downstream", 20.0, "MESSAGE", 0.5)


def test_control_api_end_to_end(upstream):
    proxy = ChaosProxy(upstream.url, seed=5).start()
    control_server = ControlServer(proxy).start()
    control = ProxyControl(control_server.endpoint)
    try:
        added = control.add({"name": "lossy", "type": "drop", "stream": "downstream", "toxicity": 1.0,
                             "attributes": {}})
        assert (added["name"], added["direction"], added["probability"]) == ("lossy", "downstream", 1.0)
        with pytest.raises(ControlError) as duplicate:
            control.add({"name": "lossy", "type": "drop"})
        assert duplicate.value.status == 409
        with pytest.raises(ControlError) as invalid:
            control.add({"type": "delay"})
        assert invalid.value.status == 400 and "delay needs params.ms" in str(invalid.value)
        assert [f["name"] for f in control.faults()] == ["lossy"]

        ws = websocket.create_connection(f"{proxy.endpoint}/?via=control", timeout=5)
        ws.send("dropped on the way back")
        assert wait_until(lambda: control.fault_log(), what="the fault to be logged")[0]["rule"]["id"] == "lossy"
        assert [c["tags"]["via"] for c in control.connections()] == ["control"]
        control.remove("lossy")
        ws.send("passes")
        assert ws.recv() == "passes"
        with pytest.raises(ControlError) as missing:
            control.remove("lossy")
        assert missing.value.status == 404

        control.add({"name": "later", "type": "drop"})
        control.reset()
        assert control.faults() == []
        assert control.disconnect_all() == 1
        control.pause(0.01)
        control.refuse(0.01)
        with pytest.raises(ControlError) as bad_pause:
            control.pause(-1)
        assert bad_pause.value.status == 400
        with pytest.raises(ControlError) as wrong_proxy:
            ProxyControl(control_server.endpoint, proxy="other").faults()
        assert wrong_proxy.value.status == 404
    finally:
        control_server.stop()
        proxy.stop()


def test_command_line_runs_with_a_profile_and_faults_and_stops_cleanly(upstream, tmp_path):
    profile = tmp_path / "lossy.toml"
    profile.write_text('[[fault]]\nname = "lose-all"\ntype = "drop"\ndirection = "downstream"\n')
    log = tmp_path / "faults.jsonl"
    ready = tmp_path / "ready.json"
    process = subprocess.Popen([sys.executable, "-m", "harness", "proxy", "--upstream", upstream.url, "--seed", "9",
                                "--profile", str(profile), "--fault", "type=delay,direction=upstream,ms=1",
                                "--fault-log", str(log), "--ready-file", str(ready)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        endpoints = wait_until(lambda: ready.exists() and json.loads(ready.read_text()), timeout=30,
                               what="the proxy to listen")
        assert endpoints["faults"] == ["lose-all", "cli-1"]
        ws = websocket.create_connection(endpoints["proxy"] + "/?cli=1", timeout=5)
        ws.send("gone")
        wait_until(lambda: log.exists() and "lose-all" in log.read_text(), what="the fault log line")
        ws.close()
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "faults injected (seed 9)" in err
    assert json.loads(log.read_text().splitlines()[0])["seam"] == "wire"


def test_command_line_errors_are_one_line(tmp_path):
    cases = [
        (["--upstream", "ws://127.0.0.1:1", "--fault", "type=drop,probability=2"], "'probability' must be from 0"),
        (["--upstream", "ws://127.0.0.1:1", "--profile", "no-such-profile"], "chaos profile 'no-such-profile' not"),
        (["--upstream", "ws://127.0.0.1:1", "--listen", "nowhere"], "must look like HOST:PORT"),
        (["--upstream", "tcp://127.0.0.1:1"], "must be ws://HOST:PORT"),
    ]
    for args, expected in cases:
        result = subprocess.run([sys.executable, "-m", "harness", "proxy", *args], capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 2, args
        assert expected in result.stderr and result.stderr.count("\n") == 1, result.stderr

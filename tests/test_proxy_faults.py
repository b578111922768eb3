"""Each fault the chaos proxy injects, seen from a real websocket-client and a real websockets server."""

from __future__ import annotations

import json
import socket
import time

import pytest
import websocket

from harness.proxy.faults import parse_fault
from harness.proxy.server import ChaosProxy
from tests.proxy_support import Upstream
from tests.stack_support import wait_until


@pytest.fixture(scope="module")
def upstream():
    return Upstream()


@pytest.fixture
def make_proxy(upstream):
    proxies = []

    def make(*faults, seed=0):
        proxy = ChaosProxy(upstream.url, seed=seed, faults=[parse_fault(f, f"f{i}") for i, f in enumerate(faults)])
        proxies.append(proxy.start())
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


_clients = iter(range(1_000_000))


def _client(proxy, **tags):
    tags.setdefault("client", str(next(_clients)))
    query = "&".join(f"{k}={v}" for k, v in tags.items())
    return websocket.create_connection(f"{proxy.endpoint}/?{query}", timeout=5), f"/?{query}"


def _push(ws, count, type_="MESSAGE"):
    ws.send(json.dumps({"push": count, "type": type_}))


def _recv_all(ws, count):
    return [json.loads(ws.recv()) for _ in range(count)]


def _close_code(ws):
    opcode, data = ws.recv_data(control_frame=True)
    while opcode != websocket.ABNF.OPCODE_CLOSE:
        opcode, data = ws.recv_data(control_frame=True)
    return int.from_bytes(data[:2], "big")


def test_drop_only_what_matches(make_proxy):
    proxy = make_proxy({"type": "drop", "direction": "downstream", "match": {"type": "MESSAGE"}})
    ws, _ = _client(proxy)
    _push(ws, 3)
    _push(ws, 2, "OTHER")
    assert [m[0]["type"] for m in _recv_all(ws, 2)] == ["OTHER", "OTHER"]
    assert [e["target"]["frame"] for e in proxy.fault_log.entries] == [0, 1, 2]
    ws.close()


def test_duplicate_delivers_copies(make_proxy):
    proxy = make_proxy({"type": "duplicate", "direction": "downstream", "params": {"copies": 2}})
    ws, _ = _client(proxy)
    _push(ws, 2)
    assert [m[0]["n"] for m in _recv_all(ws, 6)] == [0, 0, 0, 1, 1, 1]
    ws.close()


def test_delay_keeps_order(make_proxy):
    proxy = make_proxy({"type": "delay", "direction": "downstream", "params": {"ms": 200}, "count": 1})
    ws, _ = _client(proxy)
    started = time.monotonic()
    _push(ws, 3)
    assert [m[0]["n"] for m in _recv_all(ws, 3)] == [0, 1, 2]
    assert time.monotonic() - started >= 0.2
    ws.close()


def test_reorder_swaps_neighbours(make_proxy):
    proxy = make_proxy({"type": "reorder", "direction": "downstream", "count": 1, "params": {"hold": 1}})
    ws, _ = _client(proxy)
    _push(ws, 3)
    assert [m[0]["n"] for m in _recv_all(ws, 3)] == [1, 0, 2]
    ws.close()


def test_corrupt_text_is_invalid_utf8_and_the_receiver_closes_1007(make_proxy, upstream):
    proxy = make_proxy({"type": "corrupt", "direction": "upstream"})
    ws, key = _client(proxy)
    ws.send("hello")
    assert _close_code(ws) == 1007  # the server's verdict on the corrupted frame
    assert upstream.received.get(key, []) == []
    ws.close()


def test_truncate_keeps_the_first_bytes(make_proxy, upstream):
    proxy = make_proxy({"type": "truncate", "direction": "upstream", "params": {"keep_bytes": 3}})
    ws, key = _client(proxy)
    ws.send("abcdef")
    assert ws.recv() == "abc"
    assert upstream.received[key] == ["abc"]
    ws.close()


def test_reset_aborts_both_sides(make_proxy, upstream):
    proxy = make_proxy({"type": "reset", "direction": "upstream"})
    ws, key = _client(proxy)
    ws.send("x")
    with pytest.raises((ConnectionError, websocket.WebSocketConnectionClosedException)):
        ws.recv()
    wait_until(lambda: upstream.closes.get(key) == 1006, what="an abnormal close upstream")
    assert wait_until(lambda: not proxy.connections, what="the connection to be released")


def test_close_with_a_code(make_proxy, upstream):
    proxy = make_proxy({"type": "close", "direction": "upstream", "params": {"code": 4001, "reason": "chaos"}})
    ws, key = _client(proxy)
    ws.send("x")
    assert _close_code(ws) == 4001
    wait_until(lambda: upstream.closes.get(key) == 4001, what="the server to see 4001")


def test_blackhole_keeps_the_socket_but_stops_that_direction(make_proxy, upstream):
    proxy = make_proxy({"type": "blackhole", "direction": "downstream", "match": {"type": "MESSAGE"}})
    ws, key = _client(proxy)
    _push(ws, 1)
    ws.send("after")
    wait_until(lambda: "after" in upstream.received.get(key, []), what="upstream traffic to keep flowing")
    ws.settimeout(0.3)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv()
    assert len(proxy.connections) == 1
    ws.close()


def test_timeout_closes_after_going_silent(make_proxy):
    proxy = make_proxy({"type": "timeout", "direction": "downstream", "params": {"ms": 200}})
    ws, _ = _client(proxy)
    _push(ws, 1)
    with pytest.raises((ConnectionError, websocket.WebSocketConnectionClosedException)):
        ws.recv()
    wait_until(lambda: not proxy.connections, what="the connection to be released")


def test_latency_delays_every_message_in_order(make_proxy):
    proxy = make_proxy({"type": "latency", "direction": "downstream", "params": {"ms": 150, "jitter_ms": 20}})
    ws, _ = _client(proxy)
    started = time.monotonic()
    _push(ws, 5)
    assert [m[0]["n"] for m in _recv_all(ws, 5)] == [0, 1, 2, 3, 4]
    assert time.monotonic() - started >= 0.13
    assert proxy.fault_log.entries[0]["fault"] == "latency"
    ws.close()


def test_bandwidth_and_slicer_shape_but_do_not_change_data(make_proxy):
    proxy = make_proxy({"type": "bandwidth", "direction": "downstream", "params": {"kbps": 100}},
                       {"type": "slicer", "direction": "downstream", "params": {"size_bytes": 7}})
    ws, _ = _client(proxy)
    payload = "y" * 50_000
    started = time.monotonic()
    ws.send(payload)
    assert ws.recv() == payload
    assert time.monotonic() - started >= 0.4  # 50 KB at 100 KB/s
    assert sorted(e["fault"] for e in proxy.fault_log.entries) == ["bandwidth", "slicer"]
    ws.close()


def test_limit_data_closes_past_the_limit(make_proxy):
    proxy = make_proxy({"type": "limit_data", "direction": "upstream", "params": {"bytes": 100}})
    ws, _ = _client(proxy)
    ws.send("a" * 50)
    assert ws.recv() == "a" * 50
    ws.send("b" * 80)
    with pytest.raises((ConnectionError, websocket.WebSocketConnectionClosedException)):
        ws.recv()


def test_count_window_probability_and_tags_limit_a_fault(make_proxy):
    proxy = make_proxy({"type": "drop", "direction": "downstream", "count": 2, "match": {"tags": {"room": "a"}}},
                       {"type": "drop", "direction": "downstream", "window": {"start": 3600}},
                       {"type": "drop", "direction": "downstream", "probability": 0})
    tagged, _ = _client(proxy, room="a")
    other, _ = _client(proxy, room="b")
    for ws in (tagged, other):
        _push(ws, 4)
    assert [m[0]["n"] for m in _recv_all(tagged, 2)] == [2, 3]
    assert [m[0]["n"] for m in _recv_all(other, 4)] == [0, 1, 2, 3]
    tagged.close()
    other.close()


def test_control_frames_pass_while_data_is_dropped(make_proxy):
    proxy = make_proxy({"type": "drop", "direction": "both"})
    ws, _ = _client(proxy)
    ws.ping(b"are you there")
    opcode, data = ws.recv_data(control_frame=True)
    assert (opcode, data) == (websocket.ABNF.OPCODE_PONG, b"are you there")
    ws.close()


def test_fragmented_messages_pass_whole_and_faults_act_on_the_whole_message(make_proxy, upstream):
    proxy = make_proxy({"type": "drop", "direction": "upstream", "match": {"action": "SKIP"}})
    ws, key = _client(proxy)
    for text in ('{"action": "SKIP", "n": 1}', '{"action": "KEEP", "n": 2}'):
        half = len(text) // 2
        ws.send_frame(websocket.ABNF.create_frame(text[:half], websocket.ABNF.OPCODE_TEXT, fin=0))
        ws.ping(b"between fragments")
        ws.send_frame(websocket.ABNF.create_frame(text[half:], websocket.ABNF.OPCODE_CONT, fin=1))
    assert json.loads(ws.recv()) == {"action": "KEEP", "n": 2}
    assert upstream.received[key] == ['{"action": "KEEP", "n": 2}']
    ws.close()


def test_mass_disconnect_pause_and_refuse(make_proxy):
    proxy = make_proxy()
    sockets = [_client(proxy)[0] for _ in range(3)]
    assert proxy.call(proxy.disconnect_all()) == 3
    assert [_close_code(ws) for ws in sockets] == [1001, 1001, 1001]

    ws, _ = _client(proxy)
    proxy.call(proxy.pause(0.3))
    started = time.monotonic()
    ws.send("held")
    assert ws.recv() == "held"
    assert time.monotonic() - started >= 0.25
    ws.close()

    proxy.call(proxy.refuse(0.5))
    with pytest.raises((ConnectionError, websocket.WebSocketException)):
        _client(proxy)
    wait_until(lambda: _try_connect(proxy), timeout=5, what="connections to be accepted again")
    assert [e["fault"] for e in proxy.fault_log.entries].count("mass_disconnect") == 3


def _try_connect(proxy):
    try:
        ws, _ = _client(proxy)
    except (ConnectionError, websocket.WebSocketException):
        return False
    ws.close()
    return True


def test_a_profile_timeline_fires_proxy_wide_faults(make_proxy):
    proxy = make_proxy({"type": "mass_disconnect", "at": 0.3})
    ws, _ = _client(proxy)
    assert _close_code(ws) == 1001


def test_handshakes_that_fail_get_a_clear_http_answer(make_proxy, upstream):
    proxy = make_proxy()
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.recv(4096).startswith(b"HTTP/1.1 400 Bad Request")
    dead = ChaosProxy("ws://127.0.0.1:9", seed=0).start()
    try:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(dead.endpoint, timeout=5)
        assert refused.value.status_code == 502 and b"ws://127.0.0.1:9" in refused.value.resp_body
    finally:
        dead.stop()

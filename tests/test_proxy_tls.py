"""The chaos proxy in front of a wss:// upstream: plain ws on loopback in, verified TLS out.

Certificates come from local CAs made by trustme; every server is on 127.0.0.1 (``localhost``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trustme
import websocket
from websockets.asyncio.server import serve

from harness.proxy.faults import parse_fault
from harness.proxy.server import ChaosProxy
from harness.proxy.tls import upstream_tls
from tests.proxy_support import Upstream
from tests.stack_support import wait_until

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(autouse=True)
def _no_ca_variables(monkeypatch):
    """The tests say which CAs to trust; the machine's variables must not."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)


def _server_context(ca: trustme.CA, *names: str, seen: list[str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    if seen is not None:
        context.sni_callback = lambda _sock, name, _ctx: seen.append(name)
    return context


class TlsUpstream:
    """The proxy tests' websockets upstream (echo, and ``{"push": N}``), served with TLS; it records
    the server names (SNI) and Host headers its clients sent."""

    def __init__(self, ca: trustme.CA, *names: str) -> None:
        self.plain = Upstream()
        self.server_names: list[str] = []
        self.hosts: list[str] = []

        def note_host(_connection, request):
            self.hosts.append(request.headers["Host"])

        async def start() -> int:
            context = _server_context(ca, *names, seen=self.server_names)
            server = await serve(self.plain._handle, "127.0.0.1", 0, ssl=context, process_request=note_host)
            return server.sockets[0].getsockname()[1]

        self.port = asyncio.run_coroutine_threadsafe(start(), self.plain.loop).result(10)

    @property
    def url(self) -> str:
        return f"wss://localhost:{self.port}"


@pytest.fixture(scope="module")
def tls_upstream(ca) -> TlsUpstream:
    return TlsUpstream(ca, "localhost")


@pytest.fixture
def make_proxy():
    proxies = []

    def make(url, *faults, tls=None):
        proxy = ChaosProxy(url, faults=[parse_fault(f, f"f{i}") for i, f in enumerate(faults)], tls=tls)
        proxies.append(proxy.start())
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


def _refusal(proxy: ChaosProxy) -> tuple[int, str]:
    """The status and body with which the proxy answered a client's handshake."""
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(f"{proxy.endpoint}/?client=x", timeout=15)
    return refused.value.status_code, refused.value.resp_body.decode()


def test_frames_pass_both_ways_with_the_urls_host_as_sni_and_host_header(make_proxy, tls_upstream, ca_file):
    proxy = make_proxy(tls_upstream.url, tls=upstream_tls("localhost", ca_file))
    ws = websocket.create_connection(f"{proxy.endpoint}/?client=both", timeout=5)
    ws.send("hello over TLS")
    assert ws.recv() == "hello over TLS"
    ws.send(json.dumps({"push": 3}))
    assert [json.loads(ws.recv())[0]["n"] for _ in range(3)] == [0, 1, 2]
    ws.close()
    assert tls_upstream.plain.received["/?client=both"][0] == "hello over TLS"
    assert tls_upstream.server_names[-1] == "localhost"
    assert tls_upstream.hosts[-1] == f"localhost:{tls_upstream.port}"


def test_wire_faults_apply_to_the_tls_connection(make_proxy, tls_upstream, ca_file):
    proxy = make_proxy(tls_upstream.url,
                       {"type": "drop", "direction": "downstream", "match": {"type": "MESSAGE"}, "count": 1},
                       {"type": "duplicate", "direction": "upstream", "params": {"copies": 1}, "count": 1},
                       tls=upstream_tls("localhost", ca_file))
    ws = websocket.create_connection(f"{proxy.endpoint}/?client=faults", timeout=5)
    ws.send(json.dumps({"push": 3}))  # reaches the upstream twice: 2 x 3 pushes, the first one dropped
    assert [json.loads(ws.recv())[0]["n"] for _ in range(5)] == [1, 2, 0, 1, 2]
    ws.close()
    assert tls_upstream.plain.received["/?client=faults"] == [json.dumps({"push": 3})] * 2
    assert sorted(e["fault"] for e in proxy.fault_log.entries) == ["drop", "duplicate"]


def test_the_ca_can_come_from_ssl_cert_file_as_a_locust_run_passes_it_on(make_proxy, tls_upstream, ca_file,
                                                                          monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    proxy = make_proxy(tls_upstream.url)
    assert proxy.tls.trust == f"$SSL_CERT_FILE {ca_file}"
    ws = websocket.create_connection(f"{proxy.endpoint}/?client=env", timeout=5)
    ws.send("via the variable")
    assert ws.recv() == "via the variable"
    ws.close()


@pytest.mark.parametrize("trust", ["system", "other CA"])
def test_an_untrusted_certificate_is_a_502_saying_to_pass_the_ca(make_proxy, tls_upstream, tmp_path, trust):
    if trust == "system":
        tls, says = None, "by the system trust store"
    else:
        other = tmp_path / "other.pem"
        trustme.CA().cert_pem.write_to_path(str(other))
        tls, says = upstream_tls("localhost", str(other)), f"by --upstream-ca {other}"
    status, body = _refusal(make_proxy(tls_upstream.url, tls=tls))
    assert status == 502
    assert body.startswith(f"chaos proxy: upstream {tls_upstream.url} failed: TLS: the certificate of localhost is "
                           f"not trusted (")
    assert says in body and "pass --upstream-ca FILE" in body and len(body.strip().splitlines()) == 1, body


def test_a_certificate_for_another_name_is_a_502(make_proxy, ca, ca_file):
    upstream = TlsUpstream(ca, "relay.test")
    status, body = _refusal(make_proxy(upstream.url, tls=upstream_tls("localhost", ca_file)))
    assert status == 502
    assert body.startswith(f"chaos proxy: upstream {upstream.url} failed: TLS: the certificate is not valid for "
                           "localhost (Hostname mismatch"), body
    assert "connect by a name the certificate covers" in body
    assert upstream.plain.received == {}


def test_a_port_that_does_not_speak_tls_is_a_502(make_proxy, tls_upstream, ca_file):
    plain = f"wss://localhost:{tls_upstream.plain.port}"
    status, body = _refusal(make_proxy(plain, tls=upstream_tls("localhost", ca_file)))
    assert status == 502 and "check that the port speaks TLS (else use ws://)" in body, body
    with socket.create_server(("127.0.0.1", 0)) as silent:  # connects, then never answers
        url = f"wss://localhost:{silent.getsockname()[1]}"
        status, body = _refusal(make_proxy(url, tls=replace(upstream_tls("localhost", ca_file), handshake_timeout=0.3)))
    assert status == 502 and "TLS: no handshake with localhost within 0.3 s" in body, body


@pytest.mark.parametrize(("args", "says"), [
    (["--upstream", "wss://localhost:1", "--upstream-ca", "missing.pem"],
     "--upstream-ca missing.pem: no such file; pass a PEM bundle of the CAs to trust"),
    (["--upstream", "wss://localhost:1", "--upstream-ca", __file__],
     f"--upstream-ca {__file__}: not a readable PEM CA bundle"),
    (["--upstream", "ws://localhost:1", "--upstream-ca", __file__], "--upstream-ca is for a wss:// --upstream"),
])
def test_a_bad_ca_option_is_one_line_and_exit_2(tmp_path, args, says):
    log = tmp_path / "faults.jsonl"
    done = subprocess.run([sys.executable, "-m", "harness", "proxy", *args, "--fault-log", str(log)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not log.exists()


class TlsFront:
    """Test-only TLS termination in front of a plain TCP port (as API Gateway fronts a relay)."""

    def __init__(self, context: ssl.SSLContext, backend_port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.backend_port = backend_port
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._forward, "127.0.0.1", 0, ssl=context), self.loop)
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.port = self.server.result(10).sockets[0].getsockname()[1]

    async def _forward(self, client_reader, client_writer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.backend_port)

        async def pipe(source, sink) -> None:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
            sink.close()

        await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer), return_exceptions=True)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def stack_behind_tls(ca, tmp_path) -> Iterator[dict]:
    ready = tmp_path / "stack.json"
    process = subprocess.Popen([sys.executable, "-m", "harness", "up", "--quiet", "--ready-file", str(ready)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    front = None
    try:
        stack = wait_until(lambda: ready.exists() and json.loads(ready.read_text()), timeout=60, what="the stack")
        websocket_api = urlsplit(stack["websocket"])
        front = TlsFront(_server_context(ca, "localhost"), websocket_api.port)
        yield {**stack, "wss": f"wss://localhost:{front.port}{websocket_api.path}"}
    finally:
        if front is not None:
            front.stop()
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)


def test_a_chaos_run_against_a_wss_target_injects_wire_faults(stack_behind_tls, ca_file, tmp_path):
    """``relay-harness chaos --target wss://...`` (so Locust's --host wss:// with --chaos-profile): the
    proxy forwards to the TLS front, trusting the CA given by $SSL_CERT_FILE, and drops frames."""
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "harness", "chaos", "--profile", "lossy", "--seed", "3",
                           "--target", stack_behind_tls["wss"], "--ping-url", f"{stack_behind_tls['http']}/ping",
                           "--users", "4", "--duration", "8", "--out", str(run_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=150,
                          env={**os.environ, "SSL_CERT_FILE": ca_file})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    proxy = json.loads((run_dir / "proxy.json").read_text())
    assert (proxy["upstream"], proxy["upstream_trust"]) == (stack_behind_tls["wss"], f"$SSL_CERT_FILE {ca_file}")
    faults = [json.loads(line) for line in (run_dir / "faults.jsonl").read_text().splitlines()]
    assert any(f["seam"] == "wire" and f["fault"] == "drop" for f in faults)
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert any(r["op"] == "recv" and r.get("pid") for r in history), "no message was delivered through TLS"

"""Chaos proxy speed: WebSocket echo round trips direct, through the proxy (no faults), and
through Toxiproxy when a ``toxiproxy-server`` binary is on PATH, in the same run.

The echo server, the proxy and Toxiproxy each run in their own process; the load generator
(asyncio websockets clients) runs here. Figures: round trips per second and median round trip
at 1 and at 50 concurrent connections; the proxy's are also given as ratios to the direct ones
measured in the same run.

With ``--tls`` the echo server speaks TLS (a certificate from a local CA made with trustme, a test
dependency): "direct" is then wss:// straight to it, and the proxy takes plain ws and speaks TLS to
it, as in front of a deployed API Gateway.

Run: python benchmarks/proxy_benchmark.py [--seconds 5] [--tls]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.stack.ports import free_port  # noqa: E402

ECHO_SERVER = """
import asyncio, ssl, sys
from websockets.asyncio.server import serve
async def echo(ws):
    async for message in ws:
        await ws.send(message)
async def main():
    context = None
    if len(sys.argv) > 2:  # PEM files: certificate chain, key
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[2], sys.argv[3])
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), max_size=None, compression=None, ssl=context):
        await asyncio.Future()
asyncio.run(main())
"""


def _wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


async def _round_trips(url: str, connections: int, seconds: float, payload: bytes,
                       context: ssl.SSLContext | None) -> tuple[float, float]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        async with websockets.connect(url, max_size=None, compression=None,
                                      ssl=context if url.startswith("wss://") else None) as ws:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                await ws.send(payload)
                await ws.recv()
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, statistics.median(latencies) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--payload", type=int, default=64, help="bytes per message")
    parser.add_argument("--tls", action="store_true", help="the echo server speaks TLS; the proxy speaks TLS to it")
    args = parser.parse_args()
    payload = b"x" * args.payload
    processes = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            _run(args, payload, processes, Path(tmp))
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=10)


def _tls_files(tmp: Path) -> tuple[ssl.SSLContext, list[str]]:
    """A client context trusting a new local CA, and the echo server's certificate files and CA file."""
    import trustme

    ca = trustme.CA()
    files = [str(tmp / name) for name in ("chain.pem", "key.pem", "ca.pem")]
    certificate = ca.issue_cert("localhost")
    certificate.private_key_and_cert_chain_pem.write_to_path(files[0])
    certificate.private_key_pem.write_to_path(files[1])
    ca.cert_pem.write_to_path(files[2])
    return ssl.create_default_context(cafile=files[2]), files


def _run(args: argparse.Namespace, payload: bytes, processes: list[subprocess.Popen], tmp: Path) -> None:
    context, files = _tls_files(tmp) if args.tls else (None, [])
    echo_port = free_port()
    processes.append(subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(echo_port), *files[:2]]))
    _wait_port(echo_port)
    targets = {"direct": f"wss://localhost:{echo_port}" if args.tls else f"ws://127.0.0.1:{echo_port}"}

    ready = tmp / "ready.json"
    processes.append(subprocess.Popen(
        [sys.executable, "-m", "harness", "proxy", "--upstream", targets["direct"],
         *(["--upstream-ca", files[2]] if args.tls else []), "--ready-file", str(ready)],
        cwd=ROOT, stdout=subprocess.DEVNULL))
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    targets["relay-harness proxy"] = json.loads(ready.read_text())["proxy"]

    toxiproxy = None if args.tls else shutil.which("toxiproxy-server")  # it would pass TLS through unchanged
    if toxiproxy:
        api_port, listen_port = free_port(), free_port()
        processes.append(subprocess.Popen([toxiproxy, "-port", str(api_port)], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        _wait_port(api_port)
        body = json.dumps({"name": "bench", "listen": f"127.0.0.1:{listen_port}",
                           "upstream": f"127.0.0.1:{echo_port}"}).encode()
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{api_port}/proxies", data=body,
                                                      method="POST"), timeout=10).read()
        targets["toxiproxy"] = f"ws://127.0.0.1:{listen_port}"

    results = {}
    for connections in (1, 50):
        for name, url in targets.items():
            results[(name, connections)] = asyncio.run(_round_trips(url, connections, args.seconds, payload,
                                                                    context))
    print(f"{args.payload}-byte messages, {args.seconds:.0f} s per figure, {'TLS' if args.tls else 'plain'} "
          f"echo server; toxiproxy-server {'found' if toxiproxy else 'not measured'}")
    for connections in (1, 50):
        direct_rate, direct_latency = results[("direct", connections)]
        for name in targets:
            rate, latency = results[(name, connections)]
            line = f"{connections:>2} conn  {name:<20} {rate:>9.0f} round trips/s  median {latency:>7.0f} us"
            if name != "direct":
                line += (f"  (x{rate / direct_rate:.2f} throughput, +{latency - direct_latency:.0f} us "
                         f"median vs direct)")
            print(line)


if __name__ == "__main__":
    main()

"""Local stack speed: deliveries per second, join latency, transaction cost as streams grow.

Each figure is printed with the baseline it is measured against in the same run, since these
machines are noisy:
- message deliveries/s through the stack (reference relay, 2-member sessions, load generator in
  this process, stack in its own), against the same load generator on a bare WebSocket echo server
  (in its own process too);
- the CPU time per delivered message of the stack (all its processes: gateway, functions, local
  DynamoDB; from psutil, over the load window only) against the bare echo server's;
- join -> SESSION_CONNECT latency p50/p95, against a bare WebSocket handshake to that echo server;
- TransactWriteItems cost with 10,000 stream records against 100, on our local DynamoDB and on
  bare moto.

Run: python benchmarks/stack_benchmark.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.stack import dynamodb as local_ddb  # noqa: E402
from harness.stack.ports import free_port  # noqa: E402
from harness.stack.template import TableSpec  # noqa: E402


# ---- transaction cost ---------------------------------------------------------------------------
def _server(command: list[str], port: int) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = local_ddb.client(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            client.list_tables()
            return process
        except Exception:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{command} did not start")


def _transaction_cost(endpoint: str, stream_sizes: list[int], samples: int) -> dict[int, float]:
    client = local_ddb.client(endpoint)
    spec = TableSpec("T", "bench", [{"AttributeName": "id", "KeyType": "HASH"}],
                     [{"AttributeName": "id", "AttributeType": "S"}], "NEW_AND_OLD_IMAGES", None)
    local_ddb.create_tables(client, [spec])
    written = 0
    costs = {}
    for size in stream_sizes:
        while written < size:
            batch = [{"PutRequest": {"Item": {"id": {"S": f"filler-{written + i}"}, "n": {"N": "1"}}}}
                     for i in range(min(25, size - written))]
            client.batch_write_item(RequestItems={"bench": batch})
            written += len(batch)
        timings = []
        for i in range(samples):
            started = time.perf_counter()
            client.transact_write_items(TransactItems=[
                {"Update": {"TableName": "bench", "Key": {"id": {"S": f"tx-{size}-{i % 10}"}},
                            "UpdateExpression": "SET n = :n", "ExpressionAttributeValues": {":n": {"N": str(i)}}}},
                {"Put": {"TableName": "bench", "Item": {"id": {"S": f"tx-{size}-other-{i}"}}}}])
            timings.append(time.perf_counter() - started)
            written += 2
        costs[size] = statistics.median(timings) * 1000
    return costs


def transaction_benchmark(quick: bool) -> list[tuple[str, str]]:
    sizes = [100, 2_000] if quick else [100, 10_000]
    samples = 50 if quick else 100
    rows = []
    servers = (("local DynamoDB (harness)", "harness.stack.moto_server", samples),
               ("bare moto", "moto.server", max(10, samples // 5)))  # bare moto's cost grows too fast for more
    for label, module, count in servers:
        port = free_port()
        process = _server([sys.executable, "-m", module, "-H", "127.0.0.1", "-p", str(port)], port)
        try:
            costs = _transaction_cost(f"http://127.0.0.1:{port}", sizes, count)
        finally:
            process.terminate()
            process.wait()
        small, large = costs[sizes[0]], costs[sizes[1]]
        rows.append((f"TransactWriteItems p50, {label}",
                     f"{small:.2f} ms at {sizes[0]} records, {large:.2f} ms at {sizes[1]}: x{large / small:.2f}"))
    return rows


# ---- stack throughput and join latency -----------------------------------------------------------
WARM_UP_S = 3.0
async def _echo(websocket) -> None:
    async for message in websocket:
        await websocket.send(f'[{{"type":"MESSAGE","payload":{json.dumps(message)}}}]')
        await websocket.send(f'[{{"type":"MESSAGE","payload":{json.dumps(message)}}}]')


async def _pair(url: str, join_times: list[float]) -> tuple:
    """Two players; the time measured is the second one's, from its connect to its SESSION_CONNECT
    (its join is the one that starts the session; the first one's wait is for a partner)."""
    target = url + "?sessionType=bench&targetNumMembers=2"
    first = await websockets.connect(target, max_size=None)
    await first.recv()  # CONNECTION: the first player is in, waiting
    started = time.perf_counter()
    second = await websockets.connect(target, max_size=None)
    while not any(m.get("type") == "SESSION_CONNECT" for m in json.loads(await second.recv())):
        pass
    join_times.append(time.perf_counter() - started)
    while not any(m.get("type") == "SESSION_CONNECT" for m in json.loads(await first.recv())):
        pass
    return first, second


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and every process under it."""
    total = 0.0
    root = psutil.Process(pid)
    for process in (root, *root.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


async def _load(url: str, sessions: int, rate: float, seconds: float, relay: bool, server_pid: int) -> dict:
    join_times: list[float] = []
    if relay:
        pairs = [await _pair(url, join_times) for _ in range(sessions)]
        sockets = [ws for pair in pairs for ws in pair]
    else:
        sockets = []
        for _ in range(sessions * 2):
            started = time.perf_counter()
            sockets.append(await websockets.connect(url, max_size=None))
            join_times.append(time.perf_counter() - started)
    delivered = 0
    body = json.dumps({"action": "SEND_MESSAGE", "payload": "x" * 64})
    # The same load for WARM_UP_S first, not counted: the stack's instances start (cold starts) as the
    # load needs them, once; the figures are the steady state's.
    count_from = time.perf_counter() + WARM_UP_S
    stop_at = count_from + seconds

    async def reader(ws):
        nonlocal delivered
        try:
            async for frame in ws:
                if count_from <= time.perf_counter() < stop_at:
                    delivered += frame.count('"MESSAGE"')
        except websockets.ConnectionClosed:
            pass

    async def sender(ws, share):
        interval = 1.0 / share
        next_at = time.perf_counter()
        while time.perf_counter() < stop_at:
            await ws.send(body)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    senders = sockets[::2]  # one sender per session: each send is 2 deliveries
    readers = [asyncio.create_task(reader(ws)) for ws in sockets]
    sending = asyncio.gather(*(sender(ws, rate / len(senders)) for ws in senders))
    await asyncio.sleep(count_from - time.perf_counter())
    cpu_before = _cpu_s(server_pid)
    await sending
    elapsed = time.perf_counter() - count_from
    server_cpu = _cpu_s(server_pid) - cpu_before
    await asyncio.sleep(1.0)  # a benchmark, not a test: let in-flight deliveries land
    for ws in sockets:
        await ws.close()
    for task in readers:
        task.cancel()
    return {"deliveries_per_s": delivered / elapsed, "cpu_ms_per_delivery": server_cpu * 1000 / max(1, delivered),
            "join_p50_ms": statistics.median(join_times) * 1000,
            "join_p95_ms": sorted(join_times)[int(len(join_times) * 0.95) - 1] * 1000}


async def _serve_echo(ready: Path) -> None:
    async with websockets.serve(_echo, "127.0.0.1", 0, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        ready.write_text(str(port))
        await asyncio.Future()


def _wait_for(path: Path, process: subprocess.Popen) -> str:
    deadline = time.monotonic() + 60
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.args} did not start")
        time.sleep(0.1)
    return path.read_text()


def _echo_baseline(sessions: int, rate: float, seconds: float) -> dict:
    """The same load against a bare echo server in its own process (so its CPU can be measured)."""
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "port"
        process = subprocess.Popen([sys.executable, __file__, "--echo-server", str(ready)])
        try:
            port = _wait_for(ready, process)
            return asyncio.run(_load(f"ws://127.0.0.1:{port}", sessions, rate, seconds, relay=False,
                                     server_pid=process.pid))
        finally:
            process.terminate()
            process.wait(timeout=30)


def stack_benchmark(quick: bool) -> list[tuple[str, str]]:
    sessions, rate, seconds = (20, 200.0, 5.0) if quick else (50, 500.0, 15.0)
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready.json"
        process = subprocess.Popen([sys.executable, "-m", "harness", "up", "--quiet", "--ready-file", str(ready)],
                                   cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            url = json.loads(_wait_for(ready, process))["websocket"]
            through_stack = asyncio.run(_load(url, sessions, rate, seconds, relay=True, server_pid=process.pid))
        finally:
            process.terminate()
            process.wait(timeout=30)
    bare = _echo_baseline(sessions, rate, seconds)
    cpu, bare_cpu = through_stack["cpu_ms_per_delivery"], bare["cpu_ms_per_delivery"]
    return [
        (f"deliveries/s ({rate:.0f} sends/s offered, {sessions} sessions of 2)",
         f"{through_stack['deliveries_per_s']:.0f} through the stack; bare echo {bare['deliveries_per_s']:.0f} "
         f"(x{through_stack['deliveries_per_s'] / bare['deliveries_per_s']:.2f})"),
        ("CPU per delivered message",
         f"{cpu:.2f} ms in the stack's processes; bare echo server {bare_cpu:.3f} ms (x{cpu / bare_cpu:.0f})"),
        ("join -> SESSION_CONNECT",
         f"p50 {through_stack['join_p50_ms']:.1f} ms, p95 {through_stack['join_p95_ms']:.1f} ms; bare handshake "
         f"p50 {bare['join_p50_ms']:.1f} ms (x{through_stack['join_p50_ms'] / bare['join_p50_ms']:.1f})"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke check")
    parser.add_argument("--only", choices=["transactions", "stack"], help="run one part")
    parser.add_argument("--echo-server", type=Path, help=argparse.SUPPRESS)  # the baseline's server process
    args = parser.parse_args()
    if args.echo_server:
        asyncio.run(_serve_echo(args.echo_server))
        return
    rows = []
    if args.only in (None, "stack"):
        rows += stack_benchmark(args.quick)
    if args.only in (None, "transactions"):
        rows += transaction_benchmark(args.quick)
    width = max(len(name) for name, _ in rows)
    for name, figure in rows:
        print(f"{name.ljust(width)}  {figure}")


if __name__ == "__main__":
    main()

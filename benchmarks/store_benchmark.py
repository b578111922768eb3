"""Local DynamoDB speed: the server process's CPU per request, against bare moto in the same run.

Starts the harness's local DynamoDB (``LocalDynamoDB``: moto's server with the harness's lock,
stream coalescing and fixes, TTL sweeper on) and bare moto (``python -m moto.server``), each in
its own process, with the reference relay's tables. Then, in alternating rounds (these machines
are noisy), drives the same fixed mix from N client threads (one boto3 client each) at each:
GetItem, PutItem, UpdateItem with a condition, Query, a two-item TransactWriteItems, GetItem.
Before each round both servers are reset (moto's ``/moto-api/reset``) and the tables created and
seeded again, so bare moto's transaction cost (it deep-copies the tables it touches) is the same
in every round.

Prints, per server: requests/s seen by the clients and the server process's CPU ms per request
(psutil user + system of its pid over the measured window), medians over the rounds, and the
harness's CPU per request as a ratio of bare moto's.

Run: python benchmarks/store_benchmark.py [--threads 4] [--rounds 5] [--iterations 60]
     [--compare DIR ...]  (also the local DynamoDB of other checkouts: before/after a change)
     [--py-spy OUT.svg]   (profiles the harness's server over one extra round)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.stack import dynamodb as local_ddb  # noqa: E402
from harness.stack.deployment import deployment_context  # noqa: E402
from harness.stack.ports import free_port  # noqa: E402
from harness.stack.template import Template, table_specs  # noqa: E402

SEED_ITEMS = 50
MIX = ("GetItem", "PutItem", "UpdateItem", "Query", "TransactWriteItems", "GetItem")


class Server:
    """One DynamoDB server process under test: its endpoint and pid."""

    def __init__(self, label: str, endpoint: str, pid: int, stop: Callable[[], None]) -> None:
        self.label = label
        self.endpoint = endpoint
        self.pid = pid
        self.stop = stop


def _harness_server() -> Server:
    ddb = local_ddb.LocalDynamoDB(ttl_delay=5.0).start()
    assert ddb.process is not None
    return Server("local DynamoDB (harness)", ddb.endpoint, ddb.process.pid, ddb.stop)


def _process_server(label: str, command: list[str], cwd: Path | None = None) -> Server:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(cwd)) if cwd else None
    process = subprocess.Popen([sys.executable, "-m", *command, "-H", "127.0.0.1", "-p", str(port)], cwd=cwd,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"{label} did not start") from None
            time.sleep(0.05)  # polling a starting process, with a deadline

    def stop() -> None:
        process.terminate()
        process.wait(timeout=10)

    return Server(label, endpoint, process.pid, stop)


def _prepare(server: Server) -> None:
    """Forget everything, create the reference relay's tables, seed each with SEED_ITEMS items."""
    request = urllib.request.Request(f"{server.endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
    template = Template.load(ROOT / "reference_relay" / "template.yaml")
    client = local_ddb.client(server.endpoint)
    local_ddb.create_tables(client, table_specs(template, deployment_context(template)))
    for table in ("local-sessions", "local-connections", "local-members"):
        for start in range(0, SEED_ITEMS, 25):
            client.batch_write_item(RequestItems={table: [
                {"PutRequest": {"Item": {"id": {"S": f"seed-{i}"}, "n": {"N": "0"}, "payload": {"S": "x" * 200}}}}
                for i in range(start, min(start + 25, SEED_ITEMS))]})


def _worker(client: Any, thread: int, iterations: int, errors: list[BaseException]) -> None:
    try:
        for i in range(iterations):
            seed = {"S": f"seed-{(thread * 7 + i) % SEED_ITEMS}"}
            own = {"S": f"t{thread}-{i % 10}"}
            client.get_item(TableName="local-sessions", Key={"id": seed})
            client.put_item(TableName="local-connections",
                            Item={"id": own, "n": {"N": str(i)}, "payload": {"S": "y" * 100}})
            client.update_item(TableName="local-members", Key={"id": seed},
                               UpdateExpression="SET n = n + :one", ConditionExpression="n < :cap",
                               ExpressionAttributeValues={":one": {"N": "1"}, ":cap": {"N": "1000000"}})
            client.query(TableName="local-sessions", KeyConditionExpression="id = :id",
                         ExpressionAttributeValues={":id": seed})
            client.transact_write_items(TransactItems=[
                {"Update": {"TableName": "local-sessions", "Key": {"id": own},
                            "UpdateExpression": "SET n = :n", "ExpressionAttributeValues": {":n": {"N": str(i)}}}},
                {"Put": {"TableName": "local-members", "Item": {"id": own, "n": {"N": "0"}}}}])
            client.get_item(TableName="local-connections", Key={"id": own}, ConsistentRead=True)
    except BaseException as exc:  # reported by the round, which fails the run
        errors.append(exc)


def _cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run_round(server: Server, clients: list[Any], iterations: int) -> tuple[float, float]:
    """One measured round: (requests/s, server CPU ms per request)."""
    _prepare(server)
    errors: list[BaseException] = []
    _worker(clients[0], 99, 3, errors)  # warm-up: connections open, code paths loaded
    threads = [threading.Thread(target=_worker, args=(client, n, iterations, errors))
               for n, client in enumerate(clients)]
    cpu_before = _cpu_s(server.pid)
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu = _cpu_s(server.pid) - cpu_before
    if errors:
        raise RuntimeError(f"{server.label}: a request failed: {errors[0]!r}") from errors[0]
    requests = len(clients) * iterations * len(MIX)
    return requests / elapsed, cpu * 1000 / requests


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=60, help="mixes per thread per round")
    parser.add_argument("--compare", metavar="DIR", action="append", default=[],
                        help="also measure the local DynamoDB of another checkout of the harness (before/after); "
                             "may be repeated")
    parser.add_argument("--py-spy", metavar="OUT", help="also profile the harness's server over one round")
    args = parser.parse_args(argv)
    servers = [_harness_server(), _process_server("bare moto", ["moto.server"])]
    for tree in args.compare:
        servers.append(_process_server(f"harness at {tree}", ["harness.stack.moto_server", "--ttl-delay", "5"],
                                       Path(tree).resolve()))
    try:
        clients = {s.label: [local_ddb.client(s.endpoint) for _ in range(args.threads)] for s in servers}
        results: dict[str, list[tuple[float, float]]] = {s.label: [] for s in servers}
        for _ in range(args.rounds):
            for server in servers:
                results[server.label].append(run_round(server, clients[server.label], args.iterations))
        requests = args.threads * args.iterations * len(MIX)
        print(f"{args.threads} client threads, {requests} requests per round ({', '.join(MIX)}), "
              f"{args.rounds} rounds, medians:")
        cpu = {}
        for server in servers:
            rate = statistics.median(r for r, _ in results[server.label])
            cpu[server.label] = statistics.median(c for _, c in results[server.label])
            spread = ", ".join(f"{c:.3f}" for _, c in results[server.label])
            print(f"  {server.label:26} {rate:7.0f} requests/s   server CPU {cpu[server.label]:.3f} ms/request "
                  f"(rounds: {spread})")
        harness, bare = cpu[servers[0].label], cpu[servers[1].label]
        print(f"  harness CPU per request / bare moto's: x{harness / bare:.2f}")
        for other in servers[2:]:
            print(f"  harness CPU per request / {other.label}'s: x{harness / cpu[other.label]:.2f}")
        if args.py_spy:
            harness_server = servers[0]
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(harness_server.pid), "--gil", "-r", "200",
                                    "-o", args.py_spy, "--format", "speedscope" if args.py_spy.endswith(".json")
                                    else "flamegraph"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # py-spy attaches; nothing waits on it
            run_round(harness_server, clients[harness_server.label], args.iterations * 2)
            spy.send_signal(2)
            spy.wait(timeout=30)
            print(f"  profile of the harness's server: {args.py_spy}")
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()

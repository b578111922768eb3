"""The embedded target of a run: the local stack and the chaos proxy in front of it, each in its
own process, so that the load generator never competes with them for the GIL.

Each runs in its own session (process group): a terminal's Ctrl-C reaches only the load generator,
which then stops them in order, the proxy first (its sockets close while the store still lives),
then the stack."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CPU_SAMPLE_INTERVAL = 1.0  # seconds between two samples of the target's processes


class TargetError(Exception):
    """The local stack or proxy did not come up; the message says why in one line."""


def _wait_ready(process: subprocess.Popen, ready: Path, command: str, log: Path, timeout: float) -> dict[str, Any]:
    what = {"up": "the local stack", "proxy": "the chaos proxy"}.get(command, f"relay-harness {command}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists():
            return json.loads(ready.read_text())
        if process.poll() is not None:
            last = log.read_text().strip().splitlines()[-1:] if log.exists() else []
            reason = last[0].removeprefix(f"relay-harness {command}: ") if last else f"exit status {process.returncode}"
            raise TargetError(f"{what} did not start: {reason}")
        time.sleep(0.1)  # polling a starting process, with a deadline
    raise TargetError(f"{what} did not become ready within {timeout:.0f} s (see {log})")


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``, whichever of its threads started them (Linux /proc; none
    elsewhere or once it is gone)."""
    children = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return children


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` in seconds, or None when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class CpuSampler:
    """The busiest process among some roots and their descendants (but not those under ``skip``),
    sampled about once a second.

    ``peak_percent`` is the highest share of one core (100.0 = one core busy for the whole
    interval) any single process used over one interval; None until two samples were taken.
    """

    def __init__(self, roots: list[int], interval: float = CPU_SAMPLE_INTERVAL, skip: Iterable[int] = ()) -> None:
        self.roots = roots
        self.skip = set(skip)
        self.interval = interval
        self.peak_percent: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="target-cpu", daemon=True)

    def start(self) -> CpuSampler:
        self._thread.start()
        return self

    def _pids(self) -> list[int]:
        pids, todo = [], list(self.roots)
        while todo:
            pid = todo.pop()
            if pid not in self.skip:
                pids.append(pid)
                todo.extend(_children(pid))
        return pids

    def _sample(self) -> tuple[float, dict[int, float]]:
        times = {pid: cpu for pid in self._pids() if (cpu := _cpu_seconds(pid)) is not None}
        return time.monotonic(), times

    def _run(self) -> None:
        last_at, last = self._sample()
        while not self._stop.wait(self.interval):
            now_at, now = self._sample()
            shares = [100.0 * (now[pid] - last[pid]) / (now_at - last_at) for pid in now.keys() & last.keys()]
            if shares:
                self.peak_percent = round(max(max(shares), self.peak_percent or 0.0), 1)
            last_at, last = now_at, now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class LocalTarget:
    def __init__(self, run_dir: Path, *, seed: int, profile: str | None, upstream: str | None = None,
                 short_expiry: bool = False, template: str | None = None) -> None:
        self.run_dir = run_dir
        self.template = template
        self.short_expiry = short_expiry
        self.seed = seed
        self.profile = profile
        self.upstream = upstream  # None: bring up the local stack
        self.processes: list[subprocess.Popen] = []
        self.stack: dict[str, Any] = {}
        self.proxy: dict[str, Any] = {}
        self.cpu: CpuSampler | None = None

    def _start(self, args: list[str], name: str, timeout: float) -> dict[str, Any]:
        ready = self.run_dir / f"{name}.json"
        log = self.run_dir / f"{name}.out"
        with open(log, "ab") as output:
            process = subprocess.Popen([sys.executable, "-m", "harness", *args, "--ready-file", str(ready)],
                                       stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return _wait_ready(process, ready, args[0], log, timeout)

    def start(self, timeout: float = 90.0) -> LocalTarget:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.upstream is None:
                args = ["up", "--quiet", "--log-dir", str(self.run_dir)]
                if self.template:
                    args += ["--template", self.template]
                if self.short_expiry:
                    # The reference relay's shortest expiries and a 5 s clean-up, so that a run can
                    # wait for its clean-up window (--cleanup-wait) in about a minute and a half.
                    for parameter in ("ConnectionExpirySeconds=30", "MemberExpirySeconds=30",
                                      "SessionExpirySeconds=60"):
                        args += ["--parameter", parameter]
                    args += ["--schedule-interval", "5"]
                if self.profile:  # the seams behind the gateway; the proxy serves the wire seam
                    args += ["--profile", self.profile, "--seed", str(self.seed),
                             "--fault-log", str(self.run_dir / "faults.jsonl")]
                self.stack = self._start(args, "stack", timeout)
                upstream = self.stack["websocket"]
            else:
                upstream = self.upstream
            args = ["proxy", "--upstream", upstream, "--seed", str(self.seed),
                    "--fault-log", str(self.run_dir / "faults.jsonl")]
            if self.profile:
                args += ["--profile", self.profile]
            self.proxy = self._start(args, "proxy", timeout)
        except BaseException:
            self.stop()
            raise
        self.cpu = CpuSampler([p.pid for p in self.processes]).start()
        return self

    @property
    def peak_cpu_percent(self) -> float | None:
        """The busiest process of the stack and proxy: its highest share of one core, in percent."""
        return self.cpu.peak_percent if self.cpu else None

    @property
    def websocket_url(self) -> str:
        return self.proxy["proxy"]

    @property
    def ping_url(self) -> str | None:
        return f"{self.stack['http']}/ping" if self.stack else None

    def scan_store(self) -> dict[str, Any]:
        """Every item left in the stack's tables, and the state of its schedules; or, when the store
        cannot be read (the stack is gone), ``{"unavailable": "one-line reason"}``."""
        stack_process = self.processes[0] if self.stack and self.processes else None  # started first
        if stack_process is not None and stack_process.poll() is not None:
            return {"unavailable": f"the local stack had exited (status {stack_process.returncode}) before the scan"}
        endpoint = urlsplit(self.stack["dynamodb"])
        try:  # a quick look first: botocore would retry a refused connection for half a minute
            socket.create_connection((endpoint.hostname, endpoint.port or 80), timeout=5).close()
        except OSError as exc:
            return {"unavailable": f"nothing answers at {self.stack['dynamodb']} ({exc.strerror or exc}): the "
                                   "local DynamoDB is gone"}
        try:
            return self._scan()
        except Exception as exc:  # botocore's connection and client errors: the store went away
            return {"unavailable": f"the store could not be read: {type(exc).__name__}: {exc}"}

    def _scan(self) -> dict[str, Any]:
        from .stack.dynamodb import client

        dynamodb = client(self.stack["dynamodb"])
        events = client(self.stack["dynamodb"], "events")
        tables = {}
        for logical_id, name in self.stack["tables"].items():
            pages = dynamodb.get_paginator("scan").paginate(TableName=name, ConsistentRead=True)
            tables[logical_id] = [{k: next(iter(v.values())) for k, v in item.items()}
                                  for page in pages for item in page["Items"]]
        rules = self.stack.get("schedules") or []
        states = {rule: events.describe_rule(Name=rule)["State"] for rule in rules}
        return {"tables": tables, "rule_name": rules[0] if rules else None,
                "rule_state": next(iter(states.values()), None), "rules": states}

    def stop(self) -> None:
        """Stop the proxy, then the stack (each within 30 s, else killed); safe to call twice."""
        if self.cpu is not None:
            self.cpu.stop()
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []

"""The embedded target of a run: the local stack and the chaos proxy in front of it, each in its
own process, so that the load generator never competes with them for the GIL."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


class TargetError(Exception):
    """The local stack or proxy did not come up; the message says why in one line."""


def _wait_ready(process: subprocess.Popen, ready: Path, what: str, log: Path, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists():
            return json.loads(ready.read_text())
        if process.poll() is not None:
            last = log.read_text().strip().splitlines()[-1:] if log.exists() else []
            reason = last[0] if last else f"exit status {process.returncode}"
            raise TargetError(f"{what} did not start: {reason}")
        time.sleep(0.1)  # polling a starting process, with a deadline
    raise TargetError(f"{what} did not become ready within {timeout:.0f} s (see {log})")


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

    def _start(self, args: list[str], name: str, timeout: float) -> dict[str, Any]:
        ready = self.run_dir / f"{name}.json"
        log = self.run_dir / f"{name}.out"
        with open(log, "ab") as output:
            process = subprocess.Popen([sys.executable, "-m", "harness", *args, "--ready-file", str(ready)],
                                       stdout=output, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return _wait_ready(process, ready, f"relay-harness {args[0]}", log, timeout)

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
        return self

    @property
    def websocket_url(self) -> str:
        return self.proxy["proxy"]

    @property
    def ping_url(self) -> str | None:
        return f"{self.stack['http']}/ping" if self.stack else None

    def scan_store(self) -> dict[str, Any]:
        """Every item left in the stack's tables, and the state of its schedules."""
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
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []

"""The embedded target of a run: the local stack and the chaos proxy in front of it, each in its
own process, so that the load generator never competes with them for the GIL.

Each runs in its own session (process group): a terminal's Ctrl-C reaches only the load generator,
which then stops them in order, the proxy first (its sockets close while the store still lives),
then the stack.

A profile's process ``kill`` rules are carried out here, not by the stack: the local DynamoDB then
runs in a third process (``relay-harness dynamodb``), and at each kill's time the stack's process
group gets SIGKILL, one line goes to the fault log, and after the rule's ``for`` a new stack starts
on the same ports, store, profile, seed, stream positions and fault-window origin. The proxy stays
up throughout: its upstream connections fail while the stack is down."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .faults.log import FaultLog
from .faults.plan import Rule
from .faults.profile import ProfileError, load_profile

CPU_SAMPLE_INTERVAL = 1.0  # seconds between two samples of the target's processes
RESOURCE_SAMPLE_INTERVAL = 2.0  # seconds between two lines per role of resources.jsonl
MOTO_SERVER = b"harness.stack.moto_server"  # how the stack's own local DynamoDB process is recognised


class TargetError(Exception):
    """The local stack or proxy did not come up; the message says why in one line."""


def _wait_ready(process: subprocess.Popen, ready: Path, command: str, log: Path, timeout: float,
                stopping: threading.Event | None = None) -> dict[str, Any]:
    """The ready file's JSON once ``process`` wrote it; TargetError when it exits first, takes longer
    than ``timeout`` seconds, or ``stopping`` is set meanwhile."""
    what = {"up": "the local stack", "proxy": "the chaos proxy"}.get(command, f"relay-harness {command}")
    stopping = stopping or threading.Event()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists():
            return json.loads(ready.read_text())
        if process.poll() is not None:
            last = log.read_text().strip().splitlines()[-1:] if log.exists() else []
            reason = last[0].removeprefix(f"relay-harness {command}: ") if last else f"exit status {process.returncode}"
            raise TargetError(f"{what} did not start: {reason}")
        if stopping.wait(0.1):  # polling a starting process, with a deadline
            raise TargetError(f"{what} was stopped while starting")
    raise TargetError(f"{what} did not become ready within {timeout:.0f} s (see {log})")


def kill_rules(profile: str | None) -> list[Rule]:
    """The process seam's ``kill`` rules of a chaos profile (none without one); TargetError for a bad profile."""
    if not profile:
        return []
    try:
        rules = load_profile(profile).rules()
    except ProfileError as exc:
        raise TargetError(str(exc)) from None
    return [rule for rule in rules if rule.seam == "process" and rule.type == "kill"]


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


def _machine_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU time of the whole machine, all cores, in clock ticks (/proc/stat's ``cpu``
    line: busy is everything but idle and iowait), or None when it cannot be read."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - fields[3] - fields[4], total


def _tree(roots: Sequence[int], skip: Sequence[int] = ()) -> list[int]:
    """``roots`` and all their descendants, leaving out those under ``skip``."""
    pids, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid not in skip:
            pids.append(pid)
            todo.extend(_children(pid))
    return pids


def _rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` in bytes (``VmRSS`` of /proc/PID/status, kB), or None when it
    cannot be read (gone, or a zombie, which has no ``VmRSS``)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _command_line(pid: int) -> bytes:
    """The command line of ``pid`` (NUL-separated words), or b"" when it cannot be read."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as command:
            return command.read()
    except OSError:
        return b""


def _fd_count(pid: int) -> int | None:
    """How many file descriptors ``pid`` has open (entries of /proc/PID/fd), or None when unreadable."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class CpuSampler:
    """The busiest process among some roots and their descendants (but not those under ``skip``),
    sampled about once a second. ``roots`` and ``skip`` are read at every sample, so a list kept up
    to date (``LocalTarget.pids``: a restarted stack has a new pid) is followed.

    ``peak_percent`` is the highest share of one core (100.0 = one core busy for the whole
    interval) any single process used over one interval; None until two samples were taken.
    ``saturated_share`` is the share of intervals (0.0-1.0) in which the whole machine, every core,
    was at least ``SATURATED`` busy (whoever used it): processes spread over several cores can starve
    with none of them near 100 % of one core. None until two samples were taken.
    """

    SATURATED = 95.0  # percent of all cores

    def __init__(self, roots: Sequence[int], interval: float = CPU_SAMPLE_INTERVAL, skip: Sequence[int] = ()) -> None:
        self.roots = roots
        self.skip = skip
        self.interval = interval
        self.peak_percent: float | None = None
        self.intervals = 0
        self.saturated_intervals = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="target-cpu", daemon=True)

    def start(self) -> CpuSampler:
        self._thread.start()
        return self

    def _sample(self) -> tuple[float, dict[int, float]]:
        times = {pid: cpu for pid in _tree(self.roots, self.skip) if (cpu := _cpu_seconds(pid)) is not None}
        return time.monotonic(), times

    @property
    def saturated_share(self) -> float | None:
        return round(self.saturated_intervals / self.intervals, 3) if self.intervals else None

    def _run(self) -> None:
        last_at, last = self._sample()
        last_machine = _machine_jiffies()
        while not self._stop.wait(self.interval):
            now_at, now = self._sample()
            shares = [100.0 * (now[pid] - last[pid]) / (now_at - last_at) for pid in now.keys() & last.keys()]
            if shares:
                self.peak_percent = round(max(max(shares), self.peak_percent or 0.0), 1)
            machine = _machine_jiffies()
            if machine and last_machine and machine[1] > last_machine[1]:
                self.intervals += 1
                busy = 100.0 * (machine[0] - last_machine[0]) / (machine[1] - last_machine[1])
                self.saturated_intervals += busy >= self.SATURATED
            last_at, last, last_machine = now_at, now, machine

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class ResourceSampler:
    """Memory, open file descriptors and CPU of some roles (name -> a function giving its root pids,
    read at every sample, so restarted processes are followed), each role with every descendant of
    its roots that is not another role's root, every ``interval`` seconds: one line per role
    appended to ``path`` (resources.jsonl):

        {"t": wall-clock ms, "role": name, "rss_bytes": int, "fds": int, "cpu": float | null,
         "procs": int}

    ``rss_bytes`` and ``fds`` are sums over the role's processes (VmRSS of /proc/PID/status, the
    entries of /proc/PID/fd); ``cpu`` is the role's CPU over the interval since its previous line in
    percent of one core (null on the first line); ``procs`` how many processes were read. A role
    with no process alive (a killed stack before its restart, with no store of its own) writes no
    line. A few /proc reads per process every 2 s: no measurable CPU (README "Soak")."""

    def __init__(self, roles: dict[str, Callable[[], Sequence[int]]], path: Path,
                 interval: float = RESOURCE_SAMPLE_INTERVAL) -> None:
        self.roles = roles
        self.path = path
        self.interval = interval
        self._last: dict[str, tuple[float, dict[int, float]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="target-resources", daemon=True)
        self._fd = -1

    def start(self) -> ResourceSampler:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        self._thread.start()
        return self

    def sample(self) -> list[dict[str, Any]]:
        """One line per role that has a process alive now."""
        lines = []
        t = int(time.time() * 1000)
        roots = {role: list(pids()) for role, pids in self.roles.items()}
        for role, own in roots.items():
            rss = fds = 0
            cpu: dict[int, float] = {}
            for pid in _tree(own, [pid for other, pids in roots.items() if other != role for pid in pids]):
                memory, files, seconds = _rss_bytes(pid), _fd_count(pid), _cpu_seconds(pid)
                if memory is None or files is None or seconds is None:
                    continue  # gone meanwhile
                rss, fds, cpu[pid] = rss + memory, fds + files, seconds
            if not cpu:
                continue
            now = time.monotonic()
            last_at, last = self._last.get(role, (now, {}))
            shared = cpu.keys() & last.keys()
            percent = round(100.0 * sum(cpu[p] - last[p] for p in shared) / (now - last_at), 1) \
                if shared and now > last_at else None
            self._last[role] = (now, cpu)
            lines.append({"t": t, "role": role, "rss_bytes": rss, "fds": fds, "cpu": percent, "procs": len(cpu)})
        return lines

    def _run(self) -> None:
        while True:
            lines = self.sample()
            if lines:
                os.write(self._fd, "".join(json.dumps(line) + "\n" for line in lines).encode())
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LocalTarget:
    """The local stack and the chaos proxy of one run, and the supervisor of the profile's process
    ``kill`` rules (see ``_kill_and_restart``)."""

    def __init__(self, run_dir: Path, *, seed: int, profile: str | None, upstream: str | None = None,
                 short_expiry: bool = False, template: str | None = None,
                 parameters: dict[str, str] | None = None, functions: dict[str, str] | None = None,
                 concurrency: int | None = None, sample_interval: float = RESOURCE_SAMPLE_INTERVAL) -> None:
        self.run_dir = run_dir
        self.sample_interval = sample_interval  # seconds; 0: no resources.jsonl
        self.template = template
        self.short_expiry = short_expiry
        # As `up --parameter` (the user's and the short expiries, harness/stack/short_expiry.py),
        # `up --function` and `up --concurrency`; None: up's default.
        self.parameters = dict(parameters or {})
        self.functions = dict(functions or {})
        self.concurrency = concurrency
        self.seed = seed
        self.profile = profile
        self.upstream = upstream  # None: bring up the local stack
        self.processes: list[subprocess.Popen] = []  # in start order: [store,] stack, proxy
        self.pids: list[int] = []  # their pids, kept up to date in place (the CPU samplers read it live)
        self.stack: dict[str, Any] = {}
        self.proxy: dict[str, Any] = {}
        self.dynamodb: dict[str, Any] = {}  # the store in its own process, when the stack is to be killed
        self.cpu: CpuSampler | None = None
        self.resources: ResourceSampler | None = None  # only with the embedded stack
        self.kills: list[Rule] = []
        # One entry per kill: killed_t and ready_t (wall-clock ms; ready_t None if it never came back), ...
        self.restarts: list[dict[str, Any]] = []
        self._stack_index = 0  # of the stack's process in ``processes``
        self._stack_args: list[str] = []
        self._lock = threading.Lock()  # a kill or a restart's start against stop()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def _spawn(self, args: list[str], name: str, log_name: str | None = None) -> subprocess.Popen:
        """Start ``relay-harness ARGS --ready-file RUN_DIR/NAME.json`` in its own session, its output
        appended to RUN_DIR/LOG_NAME.out (default NAME)."""
        with open(self.run_dir / f"{log_name or name}.out", "ab") as output:
            return subprocess.Popen([sys.executable, "-m", "harness", *args, "--ready-file",
                                     str(self.run_dir / f"{name}.json")],
                                    stdout=output, stderr=subprocess.STDOUT, start_new_session=True)

    def up_args(self) -> list[str]:
        """The ``relay-harness up`` arguments of the stack (without the store's own process, which
        only a run with kills has); a restart after a kill reuses them."""
        args = ["up", "--quiet", "--log-dir", str(self.run_dir)]
        if self.template:
            args += ["--template", self.template]
        for name, value in self.parameters.items():
            args += ["--parameter", f"{name}={value}"]
        for name, url in self.functions.items():
            args += ["--function", f"{name}={url}"]
        if self.concurrency is not None:
            args += ["--concurrency", str(self.concurrency)]
        if self.short_expiry:
            # With the short expiries among the parameters, a 5 s clean-up, so that a run can wait
            # for its clean-up window (--cleanup-wait) in about a minute and a half.
            args += ["--schedule-interval", "5"]
        if self.profile:  # the seams behind the gateway; the proxy serves the wire seam
            args += ["--profile", self.profile, "--seed", str(self.seed),
                     "--fault-log", str(self.run_dir / "faults.jsonl")]
        return args

    def _start(self, args: list[str], name: str, timeout: float) -> dict[str, Any]:
        process = self._spawn(args, name)
        self.processes.append(process)
        self.pids.append(process.pid)
        return _wait_ready(process, self.run_dir / f"{name}.json", args[0], self.run_dir / f"{name}.out", timeout)

    def start(self, timeout: float = 90.0) -> LocalTarget:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.upstream is None:
                self.kills = kill_rules(self.profile)
                args = self.up_args()
                if self.kills:  # the store outlives the stack, and so do the streams' positions
                    self.dynamodb = self._start(["dynamodb", "--port", "0"], "dynamodb", timeout)
                    args += ["--dynamodb-endpoint", self.dynamodb["dynamodb"],
                             "--stream-checkpoints", str(self.run_dir / "stream-checkpoints.json")]
                self._stack_args = args
                self._stack_index = len(self.processes)
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
        self.cpu = CpuSampler(self.pids).start()
        if self.upstream is None and self.sample_interval > 0:
            self.resources = ResourceSampler({"stack": self._stack_pids,
                                              "store": self._store_pids,
                                              "proxy": lambda: self.pids[self._stack_index + 1:]},
                                             self.run_dir / "resources.jsonl", self.sample_interval).start()
        if self.kills:
            self._supervisor = threading.Thread(target=self._supervise, args=(timeout,), name="stack-kills",
                                                daemon=True)
            self._supervisor.start()
        return self

    # ---- the process seam's kill ---------------------------------------------------------------
    def _supervise(self, timeout: float) -> None:
        """Carry out each kill at its time: ``at`` seconds after the stack's fault plan started."""
        origin = float(self.stack["faults_started_at"])
        for rule in sorted(self.kills, key=lambda r: r.start or 0.0):
            if self._stopping.wait(max(0.0, origin + (rule.start or 0.0) - time.time())):
                return
            try:
                self._kill_and_restart(rule, origin, timeout)
            except TargetError as exc:
                if not self._stopping.is_set():
                    self.restarts[-1]["error"] = str(exc)
                    print(f"relay-harness: {exc}; the run goes on without a stack", file=sys.stderr, flush=True)
                return

    def _kill_and_restart(self, rule: Rule, origin: float, timeout: float) -> None:
        """SIGKILL the stack's process group, log the fault, wait the rule's ``for``, then start the
        stack again on the same ports, store, profile, seed, stream positions and fault-window origin.
        Raises TargetError when the new stack does not come up."""
        with self._lock:
            if self._stopping.is_set():
                return
            killed = self.processes[self._stack_index]
            log = FaultLog(self.run_dir / "faults.jsonl", keep=False)
            try:  # logged first, so that nothing the kill caused comes before its time
                logged = log.record("process", "kill", {"scope": "stack"}, rule.params, rule.name, rule.name)
            finally:
                log.close()
            with contextlib.suppress(ProcessLookupError):  # it had died already: it is restarted all the same
                os.killpg(killed.pid, signal.SIGKILL)
            killed.wait()
            self.restarts.append({"rule": rule.name, "killed_t": logged["t"], "ready_t": None,
                                  "pids": [killed.pid, None]})
        if self._stopping.wait(float(rule.params.get("seconds") or 0.0)):
            return
        ports = [str(urlsplit(self.stack[key]).port) for key in ("websocket", "http", "management", "management_https")]
        name = f"stack-restart-{len(self.restarts)}"
        args = [*self._stack_args, "--port", ports[0], "--http-port", ports[1], "--management-port", ports[2],
                "--management-https-port", ports[3],
                "--faults-started-at", repr(origin)]
        with self._lock:
            if self._stopping.is_set():
                return
            process = self._spawn(args, name, log_name="stack")
            self.processes[self._stack_index] = process
            self.pids[self._stack_index] = process.pid
            self.restarts[-1]["pids"][1] = process.pid
        self.stack = _wait_ready(process, self.run_dir / f"{name}.json", "up", self.run_dir / "stack.out", timeout,
                                 self._stopping)
        self.restarts[-1]["ready_t"] = int(time.time() * 1000)

    def _stack_pids(self) -> list[int]:
        """The stack's process and every process under it (its functions' instances, their fork
        server, Node processes) but the local DynamoDB's."""
        found, todo = [], [self.pids[self._stack_index]]
        while todo:
            pid = todo.pop()
            if MOTO_SERVER in _command_line(pid):
                continue
            found.append(pid)
            todo += _children(pid)
        return found

    def _store_pids(self) -> list[int]:
        """The local DynamoDB's process: its own (``relay-harness dynamodb``, with kills), else the
        stack's child that runs it (``harness.stack.moto_server``)."""
        if self.dynamodb:
            return self.pids[:1]
        stack = self.pids[self._stack_index]
        return [pid for pid in _children(stack) if MOTO_SERVER in _command_line(pid)]

    @property
    def sampling(self) -> dict[str, Any] | None:
        """What resources.jsonl holds, for run.json: ``{"interval_s", "roles"}``, or None when nothing
        is sampled (the relay runs elsewhere)."""
        if self.resources is None:
            return None
        return {"interval_s": self.resources.interval, "roles": list(self.resources.roles)}

    @property
    def peak_cpu_percent(self) -> float | None:
        """The busiest process of the stack and proxy: its highest share of one core, in percent."""
        return self.cpu.peak_percent if self.cpu else None

    @property
    def saturated_share(self) -> float | None:
        """The share of the run (0.0-1.0) in which all of the machine's cores were busy (``CpuSampler``)."""
        return self.cpu.saturated_share if self.cpu else None

    @property
    def websocket_url(self) -> str:
        return self.proxy["proxy"]

    @property
    def ping_url(self) -> str | None:
        return f"{self.stack['http']}/ping" if self.stack else None

    def scan_store(self) -> dict[str, Any]:
        """Every item left in the stack's tables, and the state of its schedules; or, when the store
        cannot be read (the stack is gone), ``{"unavailable": "one-line reason"}``."""
        # The process that holds the store: the local DynamoDB's own, or else the stack's.
        holder = self.processes[0 if self.dynamodb else self._stack_index] if self.stack and self.processes else None
        if holder is not None and holder.poll() is not None:
            what = "local DynamoDB" if self.dynamodb else "local stack"
            return {"unavailable": f"the {what} had exited (status {holder.returncode}) before the scan"}
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
        """Stop the proxy, then the stack, then the store's own process if any (each within 30 s, else
        killed), a kill or restart in progress included; safe to call twice."""
        for sampler in (self.cpu, self.resources):
            if sampler is not None:
                sampler.stop()
        with self._lock:  # from here on no kill or restart starts a process
            self._stopping.set()
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._supervisor is not None:
            self._supervisor.join(timeout=30)
        self.processes = []

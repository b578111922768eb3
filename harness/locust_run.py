"""Locust integration: the run folder, the embedded target, one merged history, the stats.

Everything here hangs off Locust's events, so ``scenarios/relay.py`` stays a plain locustfile:
- ``init`` (master or single process): check every option (nothing is created for a bad one), make
  the run folder, bring up the local stack and the chaos proxy unless ``--host`` names a target,
  print the seed;
- every process ships its clients' history: workers to the master (``send_message``), the master
  or single process to ``history.jsonl``. Before the master quits, each worker stops its players
  and sends its last batch with its total count; the master waits for them (with a deadline) and
  acknowledges, so no tail is lost; what never arrived is recorded in run.json;
- ``quitting``: stop the load (``ended_t``), write Locust's stats and the end of run.json, scan
  the store, tear the target down (proxy, then stack), check the run and write its report. The
  process exits with the report's status: 0 pass, 1 violations, 3 inconclusive; 2 only when the
  harness itself failed.
- the live line (master or single process; ``harness/progress.py``): phase, players, faults and
  provisional violations so far, ended before the verdict's line.

Ctrl-C (a terminal signals the whole process group): the stack and proxy run in their own process
groups, so they outlive the signal and are torn down in order; the report is written from what was
collected and marked partial. Further Ctrl-Cs during that are ignored, with a line saying so.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from .cli import UsageError
from .faults.profile import Profile, ProfileError, load_profile
from .history import History, HistoryFile, ShippingLedger
from .local_target import RESOURCE_SAMPLE_INTERVAL, CpuSampler, LocalTarget, TargetError
from .progress import SAFETY_CHECKS, FaultCount, LiveLine, ProvisionalCheck, Snapshot, faults_end_s
from .proxy.cli import fault_specs
from .report.build import EXIT_HARNESS_FAILED, build_report, verdict_line, write_atomic
from .run_shape import ShapeError, session_sizes
from .stack.cli import POSITIVE_INT, check_functions, check_parameters, check_template
from .stack.local_stack import DEFAULT_TEMPLATE
from .stack.short_expiry import ExpiryError, shorten
from .stack.template import TemplateError

HISTORY_MESSAGE = "relay_history"  # worker -> master: {"records": [...], "sent": running total, "final": bool}
FINAL_REQUEST = "relay_history_final"  # master -> worker: stop your players and send your last batch
HISTORY_ACK = "relay_history_ack"  # master -> worker: your last batch arrived
FINAL_DEADLINE = 30.0  # seconds the master waits for every worker's last batch
ACK_DEADLINE = 10.0  # seconds a quitting worker waits for the master's acknowledgement
SHORT_OF_CPU = 90.0  # percent of one core; Locust warns above the same figure
SATURATED_SHARE = 0.25  # of the run with every core busy: the stack's processes, the load and the store starve
REPORTS_DIR = Path(__file__).resolve().parent.parent / "reports"


class RunState:
    """What this process knows about the run; one per process."""

    def __init__(self) -> None:
        self.history = History()
        self.history_file: HistoryFile | None = None
        self.target: LocalTarget | None = None
        self.run_dir: Path | None = None
        self.info: dict[str, Any] = {}  # run.json
        # The embedded stack's `up` options (run.json "stack_options"): --parameter values (the user's
        # and the short expiries), the short ones alone, the expiry settings in force (None: unknown),
        # --function endpoints, --concurrency.
        self.stack_options: dict[str, Any] = {}
        self.seed = 0
        self.started_at = time.time()
        self.test_started: float | None = None
        self.ended_t: int | None = None  # wall ms when the load last stopped
        self.interrupted = False  # Ctrl-C before the load stopped by itself
        self.tearing_down = False
        self.sigint: Any = None  # gevent's watcher for Ctrl-C, kept while the run lasts
        self.load_cpu: CpuSampler | None = None  # this machine's load generator processes
        self.load_cpu_peak: float | None = None  # Locust's figures: the busiest process, % of one core
        self.ledger = ShippingLedger()  # master: what each worker sent and what arrived
        self.all_final = threading.Event()  # master: every worker it knew sent its last batch
        self.collected = False  # master: asked the workers for their last batches
        self.shipped = 0  # worker: records sent to the master so far
        self.acked = threading.Event()  # worker: the master acknowledged the last batch
        self._stop = threading.Event()
        # The live line (master or single process): the phase, when it began (monotonic), its length.
        self.phase: tuple[str, float, float | None] = ("", time.monotonic(), None)
        self.faults_end_s: float | None = None  # the profile's faults are over this long after the stack started
        self.live: LiveLine | None = None
        self.environment: Environment | None = None  # the live line's: its runner counts the users
        self.fault_count: FaultCount | None = None
        self.check: ProvisionalCheck | None = None
        self.restore: list[tuple[Any, str, Any]] = []  # (object, attribute, value) the live line replaced


RUN = RunState()


def add_arguments(parser: Any) -> None:
    # In an argument group, so Locust leaves them out of its web UI: they are fixed when the run starts.
    group = parser.add_argument_group("relay-harness")
    group.add_argument("--chaos-profile", default="", help="chaos profile NAME (scenarios/profiles/) or FILE.toml")
    group.add_argument("--seed", type=int, default=-1, help="seed of every fault decision (default: a random one, "
                                                            "printed and stored)")
    group.add_argument("--ping-url", default="", help="the relay's GET /ping URL, with --host (e.g. "
                                                     "https://ID.execute-api.REGION.amazonaws.com/production/ping)")
    group.add_argument("--session-size", default="2", help="players per session: N, or A-B for sizes each player "
                                                          "draws per session (2-32; private sessions too)")
    group.add_argument("--heartbeat-interval", type=float, default=7.0, help="seconds between heartbeats")
    group.add_argument("--template", default="", help="with no --host: the SAM template of the relay to run on the "
                                                      "local stack (default: the reference relay)")
    group.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE",
                       help="with no --host: a template parameter of the local stack (repeatable; as `relay-harness "
                            "up --parameter`; wins over --short-expiry's values)")
    group.add_argument("--function", action="append", default=[], metavar="NAME=URL",
                       help="with no --host: serve function NAME from a Lambda Invoke API endpoint (repeatable; as "
                            "`relay-harness up --function`)")
    group.add_argument("--concurrency", type=POSITIVE_INT, default=None,
                       help="with no --host: concurrent invocations per function on the local stack (as "
                            "`relay-harness up --concurrency`)")
    group.add_argument("--run-dir", default="", help="folder for this run's files (default: reports/<time>-...)")
    group.add_argument("--cleanup-wait", type=float, default=0.0,
                       help="after the run, wait this long before scanning the store for leftovers (the local "
                            "stack then uses its shortest expiries; 90 is enough)")
    group.add_argument("--short-expiry", action="store_true",
                       help="the local stack uses its shortest expiries and a 5 s clean-up schedule, so the relay's "
                            "clean-up runs during play (--cleanup-wait implies it)")
    group.add_argument("--sample-interval", type=float, default=RESOURCE_SAMPLE_INTERVAL,
                       help="with no --host: seconds between two samples of the local stack's and proxy's memory, "
                            "open files and CPU (resources.jsonl; 0: none)")
    group.add_argument("--rules", choices=("auto", "protocol", "reference"), default="auto",
                       help="which rules the checkers apply: the protocol's, or also the reference relay's own "
                            "choices (auto: reference when the local stack runs the reference relay)")


def _fail(message: str) -> None:
    _stop_progress()
    print(f"relay-harness: {message}", file=sys.stderr)
    raise SystemExit(2)


def _run_dir(options: Any, profile_name: str, seed: int) -> Path:
    if options.run_dir:
        return Path(options.run_dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return REPORTS_DIR / f"{stamp}-{profile_name or 'no-faults'}-seed{seed}"


def _check_options(environment: Environment) -> Profile | None:
    """Every check a bad option can fail, before anything is created; returns the profile, if any."""
    options = environment.parsed_options
    host = environment.host or ""
    try:
        session_sizes(options.session_size)
    except ShapeError as exc:
        _fail(f"--session-size: {exc}")
    if options.cleanup_wait < 0:
        _fail(f"--cleanup-wait {options.cleanup_wait:g} must be 0 or more seconds")
    if options.sample_interval < 0:
        _fail(f"--sample-interval {options.sample_interval:g} must be 0 (no sampling) or more seconds")
    if options.run_dir and Path(options.run_dir).exists() and not Path(options.run_dir).is_dir():
        _fail(f"--run-dir {options.run_dir} is a file: pass a folder (it is created if missing)")
    if options.template:
        if host:
            _fail("--template runs a relay on the local stack: leave out --host")
        try:
            check_template(Path(options.template))
        except UsageError as exc:
            _fail(str(exc))
    if not host:
        _check_stack_options(options)
    elif options.parameter or options.function or options.concurrency is not None:
        _fail("--parameter, --function and --concurrency configure the local stack: leave out --host")
    if not options.chaos_profile:
        return None
    try:
        profile = load_profile(options.chaos_profile)
        fault_specs(options.chaos_profile, [])
    except ProfileError as exc:
        _fail(str(exc))
    except UsageError as exc:
        _fail(f"chaos profile {options.chaos_profile}: {exc}")
    if options.seed < 0 and profile.seed is not None:
        options.seed = profile.seed
    RUN.faults_end_s = faults_end_s(profile)
    return profile


def _check_stack_options(options: Any) -> None:
    """The embedded stack's --parameter, --function, --concurrency and short expiries, into
    ``RUN.stack_options``; one line and exit 2 for a bad one (as `up` would say it)."""
    template = Path(options.template) if options.template else DEFAULT_TEMPLATE
    try:
        given = check_parameters(template, options.parameter)
        functions = check_functions(options.function)
    except UsageError as exc:
        _fail(str(exc))
    shortened: dict[str, str] = {}
    expiries: dict[str, float] | None = None
    if options.short_expiry or options.cleanup_wait > 0:
        try:
            shortened, found = shorten(template, given)
        except (ExpiryError, TemplateError) as exc:
            _fail(str(exc))
        expiries = {name: float({**shortened, **given}[name]) for name in found} or None
        kept = {name: given[name] for name in found if name in given}
        print("relay-harness: short expiries: " + (", ".join(f"{k}={v} s" for k, v in shortened.items()) or "none")
              + (f" (yours kept: {', '.join(f'{k}={v}' for k, v in kept.items())})" if kept else "")
              + ("" if found else "; the template has no expiry parameter, the relay runs with your --parameter "
                                 "values"), flush=True)
    RUN.stack_options = {"parameters": {**given, **shortened}, "shortened": shortened, "expiries_s": expiries,
                         "functions": functions, "concurrency": options.concurrency}


def _rules(options: Any) -> str:
    """The rule set the checkers apply; auto: "reference" when the embedded stack runs the reference relay."""
    if options.rules != "auto":
        return options.rules
    embedded = RUN.target is not None and bool(RUN.target.stack)
    reference = not options.template or Path(options.template).resolve() == DEFAULT_TEMPLATE
    return "reference" if embedded and reference else "protocol"


def on_init(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message(FINAL_REQUEST, lambda **_: _finish_worker(environment, wait_for_ack=False),
                                concurrent=True)
        runner.register_message(HISTORY_ACK, lambda **_: RUN.acked.set())
        # Registered after the runner's own listener, so it runs first (quitting fires in reverse):
        # the last batch goes before the worker tells the master it quits.
        environment.events.quitting.add_listener(lambda **_: _finish_worker(environment, wait_for_ack=True))
        _start_flusher(environment)
        return
    profile = _check_options(environment)
    profile_name = profile.name if profile else ""
    if options.seed < 0:
        options.seed = random.randrange(1 << 31)
    RUN.seed = options.seed
    RUN.run_dir = _run_dir(options, profile_name, options.seed)
    try:
        RUN.run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"cannot create the run folder {RUN.run_dir}: {exc.strerror}; pass another --run-dir")
    _start_progress(environment)
    host = environment.host or ""
    if not host or options.chaos_profile:
        RUN.target = LocalTarget(RUN.run_dir, seed=options.seed, profile=options.chaos_profile or None,
                                 upstream=host or None, short_expiry=options.short_expiry or options.cleanup_wait > 0,
                                 template=options.template or None,
                                 parameters=RUN.stack_options.get("parameters"),
                                 functions=RUN.stack_options.get("functions"),
                                 concurrency=RUN.stack_options.get("concurrency"),
                                 sample_interval=options.sample_interval)
        try:
            RUN.target.start()
        except TargetError as exc:
            RUN.target = None
            _fail(str(exc))
        environment.host = RUN.target.websocket_url
        if not options.ping_url and RUN.target.ping_url:
            options.ping_url = RUN.target.ping_url
    RUN.history_file = HistoryFile(RUN.run_dir / "history.jsonl")
    RUN.info = {"seed": RUN.seed, "profile": profile_name or None, "host": environment.host,
                "ping_url": options.ping_url or None, "started": RUN.started_at, "command": sys.argv,
                "session_sizes": session_sizes(options.session_size), "rules": _rules(options),
                "stack": RUN.target.stack if RUN.target else None,
                "stack_options": RUN.stack_options if RUN.target and RUN.target.stack else None,
                "proxy": RUN.target.proxy if RUN.target else None,
                "resource_sampling": RUN.target.sampling if RUN.target else None,
                "leaks": profile.leaks.as_dict() if profile and profile.leaks else None}
    # Ctrl-C is ours before run.json says the run started (a job cancelled as soon as it sees it). The
    # handler runs from gevent's loop, never in the middle of whatever code the signal interrupted: a
    # Python-level handler that threw into the main greenlet there could leave gevent's resolver
    # queue locked, and the process hung in "stopping" (a players' rejoin resolving the ping host).
    RUN.sigint = gevent.signal_handler(signal.SIGINT, _on_sigint)
    write_atomic(RUN.run_dir / "run.json", json.dumps(RUN.info, indent=2))
    print(f"relay-harness: seed {options.seed}; target {environment.host}; run folder {RUN.run_dir}", flush=True)
    # This process and its --processes workers, not the target's processes (also its children);
    # Locust's own figures (every 10 s, remote workers included) are taken too.
    RUN.load_cpu = CpuSampler([os.getpid()], skip=RUN.target.pids if RUN.target else []).start()
    environment.events.usage_monitor.add_listener(_note_cpu)
    if isinstance(runner, MasterRunner):
        runner.register_message(HISTORY_MESSAGE, _receive_history)
        environment.events.heartbeat_sent.add_listener(
            lambda client_id, **_: _note_cpu(cpu_usage=getattr(runner.clients.get(client_id), "cpu_usage", None)))
        quit_runner = runner.quit

        def quit_after_the_last_batches() -> None:  # every way Locust quits goes through runner.quit
            _collect_last_batches(environment)
            quit_runner()

        runner.quit = quit_after_the_last_batches
    _start_flusher(environment)


def _on_sigint() -> None:
    """Ctrl-C: note that the run was interrupted and let Locust shut down; once the report is being
    written, say so and carry on."""
    if not RUN.tearing_down:
        RUN.interrupted = True
        # As gevent does for a KeyboardInterrupt, minus printing it as an error: Locust's main
        # greenlet gets it and shuts down.
        gevent.get_hub().handle_system_error(KeyboardInterrupt, KeyboardInterrupt())
        return
    print("relay-harness: still writing the report of what was collected; it takes a few seconds", file=sys.stderr,
          flush=True)


def _note_cpu(cpu_usage: float | None = None, **_: Any) -> None:
    if cpu_usage is not None:
        RUN.load_cpu_peak = round(max(cpu_usage, RUN.load_cpu_peak or 0.0), 1)


# --- shipping the history --------------------------------------------------------------------------

def _receive_history(environment: Environment, msg: Any, **_: Any) -> None:
    """Master: one batch from a worker; its last one is acknowledged."""
    data = msg.data
    if RUN.history_file is not None:
        RUN.history_file.write(data["records"])
    worker = environment.runner.get_worker_index(msg.node_id)
    RUN.ledger.arrived(worker, len(data["records"]), sent=data["sent"], final=data["final"])
    if data["final"]:
        environment.runner.send_message(HISTORY_ACK, None, client_id=msg.node_id)
    if RUN.ledger.complete():
        RUN.all_final.set()


def _collect_last_batches(environment: Environment) -> None:
    """Master, before it quits: ask every worker for its last batch and wait for all of them (or the
    deadline). From inside Locust's message listener it cannot wait: then the workers have quit by
    themselves, and their last batches came before their quit messages."""
    runner = environment.runner
    if RUN.collected:
        return
    RUN.collected = True
    RUN.ledger.expect(runner.worker_indexes.values())
    if RUN.ledger.complete():
        return
    for client in list(runner.clients.all):
        runner.send_message(FINAL_REQUEST, None, client_id=client.id)
    if gevent.getcurrent() in runner.greenlet:
        return
    deadline = time.monotonic() + FINAL_DEADLINE
    while not RUN.ledger.complete() and time.monotonic() < deadline:
        RUN.all_final.clear()  # set by the next batch that completes the ledger
        RUN.all_final.wait(deadline - time.monotonic())


def _ship(environment: Environment, final: bool = False) -> None:
    """Worker: send the records made since the last batch, with the running total."""
    records = RUN.history.drain()
    if not records and not final:
        return
    RUN.shipped += len(records)
    environment.runner.send_message(HISTORY_MESSAGE, {"records": records, "sent": RUN.shipped, "final": final})


def _finish_worker(environment: Environment, wait_for_ack: bool) -> None:
    """Worker: stop the players (their last records are made now), send the last batch and, when
    quitting by itself, wait a little for the master's acknowledgement."""
    RUN._stop.set()
    environment.runner.stop()
    _ship(environment, final=True)
    if wait_for_ack and not RUN.acked.is_set() and len(environment.runner.greenlet):  # its listener still runs
        RUN.acked.wait(ACK_DEADLINE)


def flush_history(environment: Environment) -> None:
    if isinstance(environment.runner, WorkerRunner):
        _ship(environment)
    elif RUN.history_file is not None:
        RUN.history_file.write(RUN.history.drain())


def _start_flusher(environment: Environment) -> None:
    def loop() -> None:
        while not RUN._stop.wait(1.0):
            flush_history(environment)

    threading.Thread(target=loop, name="history-flusher", daemon=True).start()


# --- the run's end ---------------------------------------------------------------------------------

def on_test_start(environment: Environment, **_: Any) -> None:
    RUN.test_started = time.monotonic()
    RUN.ended_t = None
    _set_phase("load", getattr(environment.parsed_options, "run_time", None))


def on_test_stop(environment: Environment, **_: Any) -> None:
    flush_history(environment)
    if not isinstance(environment.runner, WorkerRunner):
        RUN.ended_t = int(time.time() * 1000)
        _set_phase("stopping")


def _partial(environment: Environment) -> bool:
    """Ended by hand (Ctrl-C, SIGTERM) before its --run-time was up: the report covers what the run saw."""
    run_time = getattr(environment.parsed_options, "run_time", None)
    early = bool(run_time and RUN.test_started and time.monotonic() - RUN.test_started < run_time - 1)
    return RUN.interrupted or early


def _resources(environment: Environment) -> dict[str, Any]:
    """Peak CPU of the load generator and of the stack (each: its busiest process, in % of one
    core), Locust's CPU warning, and which of the two was short of CPU."""
    runner = environment.runner
    if RUN.load_cpu is not None:
        RUN.load_cpu.stop()
    warned = bool(runner.cpu_warning_emitted or getattr(runner, "worker_cpu_warning_emitted", False))
    peaks = [p for p in (RUN.load_cpu_peak, RUN.load_cpu.peak_percent if RUN.load_cpu else None) if p is not None]
    load = {"peak_cpu_percent": max(peaks, default=None), "warned": warned}
    stack = {"peak_cpu_percent": RUN.target.peak_cpu_percent if RUN.target else None}
    machine = {"cores": os.cpu_count(), "saturated_share": RUN.target.saturated_share if RUN.target else None}
    short = []
    if warned or (load["peak_cpu_percent"] or 0) > SHORT_OF_CPU:
        short.append("load generator")
    if (stack["peak_cpu_percent"] or 0) > SHORT_OF_CPU:
        short.append("stack")
    if (machine["saturated_share"] or 0) >= SATURATED_SHARE:
        short.append("machine")
    return {"load_generator": load, "stack": stack, "machine": machine, "short_of_cpu": short}


def _write_run_end(environment: Environment) -> None:
    assert RUN.run_dir is not None and RUN.history_file is not None
    missing = RUN.ledger.missing()
    if RUN.history_file.dropped:
        missing.append(f"{RUN.history_file.dropped} records arrived after the history was closed")
    RUN.info.update(ended_t=RUN.ended_t, history_complete=not missing, history_missing=missing,
                    resources=_resources(environment))
    if RUN.target is not None and RUN.target.kills:  # the process seam's kills, as the checkers read them
        RUN.info["stack_restarts"] = RUN.target.restarts
    write_atomic(RUN.run_dir / "run.json", json.dumps(RUN.info, indent=2))


def on_quitting(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or RUN.run_dir is None or RUN.tearing_down:
        return
    RUN.tearing_down = True
    _set_phase("stopping")
    try:
        _stop_load(environment)
        _write_run_end(environment)
        write_stats(environment, RUN.run_dir / "locust_stats.json")
        if RUN.target is not None and RUN.target.stack:
            _scan_store(environment.parsed_options.cleanup_wait)
    finally:
        if RUN.target is not None:
            RUN.target.stop()
            RUN.target = None
    _set_phase("checking")
    try:
        status, results = build_report(RUN.run_dir, partial=_partial(environment))
    except Exception as exc:  # the harness failed, not the relay: say so and exit 2
        _end_progress(None)
        print(f"relay-harness: the report could not be built: {type(exc).__name__}: {exc}", file=sys.stderr)
        environment.process_exit_code = EXIT_HARNESS_FAILED
        return
    _end_progress(results)
    print(f"relay-harness: {verdict_line(results)}; report {RUN.run_dir / 'report.html'}", flush=True)
    environment.process_exit_code = status


def _stop_load(environment: Environment) -> None:
    """Stop the players (Ctrl-C reaches quitting while they still play), take in the last records
    and close the history."""
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        _collect_last_batches(environment)  # done already when Locust quit the runner first
    runner.stop()
    if RUN.ended_t is None:
        RUN.ended_t = int(time.time() * 1000)
    RUN._stop.set()
    flush_history(environment)
    assert RUN.history_file is not None
    RUN.history_file.close()


def _scan_store(wait: float) -> None:
    assert RUN.target is not None and RUN.run_dir is not None
    if wait > 0:
        print(f"relay-harness: waiting {wait:.0f} s for the relay's clean-up before scanning the store", flush=True)
        _set_phase("clean-up wait", wait)
        time.sleep(wait)
    scan = {"cleanup_wait_s": wait, **RUN.target.scan_store()}
    if "unavailable" in scan:
        print(f"relay-harness: the store scan was skipped: {scan['unavailable']}", file=sys.stderr, flush=True)
    write_atomic(RUN.run_dir / "store.json", json.dumps(scan, indent=2, default=str))


def write_stats(environment: Environment, path: Path) -> None:
    stats = environment.stats
    rows = []
    for entry in [*stats.entries.values(), stats.total]:
        rows.append({"type": entry.method or "", "name": entry.name, "requests": entry.num_requests,
                     "failures": entry.num_failures, "median_ms": entry.median_response_time,
                     "p95_ms": entry.get_response_time_percentile(0.95) if entry.num_requests else None,
                     "p99_ms": entry.get_response_time_percentile(0.99) if entry.num_requests else None,
                     "avg_ms": entry.avg_response_time, "min_ms": entry.min_response_time,
                     "max_ms": entry.max_response_time, "rps": entry.total_rps})
    errors = [{"type": e.method, "name": e.name, "error": str(e.error), "occurrences": e.occurrences}
              for e in stats.errors.values()]
    path.write_text(json.dumps({"entries": rows, "errors": errors}, indent=2, default=str))


# --- the live line (harness/progress.py) -----------------------------------------------------------

def _start_progress(environment: Environment) -> None:
    """Master or single process: the live line on stderr, redrawn by a greenlet; the safety
    checkers' passes on the history so far run in one of gevent's real threads."""
    assert RUN.run_dir is not None
    RUN.live = LiveLine(sys.stderr)
    RUN.environment = environment
    RUN.fault_count = FaultCount(RUN.run_dir / "faults.jsonl")
    RUN.check = ProvisionalCheck(RUN.run_dir, lambda: {
        "rules": RUN.info.get("rules"), "stack_restarts": list(RUN.target.restarts) if RUN.target else []})
    if RUN.live.tty:  # every other writer erases the line first
        handlers = [h for name in (None, "locust", "locust.stats_logger") for h in logging.getLogger(name).handlers]
        for handler in handlers:
            if getattr(handler, "stream", None) in (sys.stdout, sys.stderr):
                RUN.restore.append((handler, "stream", handler.stream))
                handler.stream = RUN.live.wrap(handler.stream)
        for name in ("stdout", "stderr"):
            RUN.restore.append((sys, name, getattr(sys, name)))
            setattr(sys, name, RUN.live.wrap(getattr(sys, name)))
    _set_phase("starting stack")
    gevent.spawn(_tick)


def _set_phase(name: str, total: float | None = None) -> None:
    """Enter phase ``name`` (``total``: its seconds, if known) and draw the line; the phase already
    running is left as it is (the load stops, then Locust quits: one "stopping")."""
    if RUN.phase[0] == name:
        return
    RUN.phase = (name, time.monotonic(), total)
    if RUN.live is not None:
        RUN.live.show(_snapshot(), time.monotonic())


def _faults_over() -> bool:
    """The profile's last fault is over (its windows count from the stack's start)."""
    started = RUN.target.stack.get("faults_started_at") if RUN.target is not None else None
    return RUN.faults_end_s is not None and started is not None and time.time() >= float(started) + RUN.faults_end_s


def _snapshot() -> Snapshot:
    name, since, total = RUN.phase
    elapsed = time.monotonic() - since
    if name == "load" and _faults_over():
        name = "faults quiet"
    runner = RUN.environment.runner if RUN.environment is not None else None
    users = runner.user_count if runner is not None else None
    check = RUN.check
    return Snapshot(name, elapsed, total, users, RUN.fault_count.update() if RUN.fault_count else {},
                    check.violations if check else None, check.note if check else "")


def _tick() -> None:
    """Every half second: the line (its cadence decides whether it is drawn) and, during the load,
    a provisional check when one is due."""
    while RUN.live is not None:
        snapshot = _snapshot()
        RUN.live.show(snapshot, time.monotonic())
        if snapshot.phase in ("load", "faults quiet") and RUN.check is not None and RUN.check.due(time.monotonic()):
            RUN.check.running = True
            gevent.get_hub().threadpool.spawn(RUN.check.run_pass)
        gevent.sleep(0.5)


def _stop_progress() -> LiveLine | None:
    """Stop drawing, erase the line and give the streams back; returns the line (None if none)."""
    live, RUN.live = RUN.live, None
    if live is not None:
        live.erase()
        for owner, attribute, value in reversed(RUN.restore):
            setattr(owner, attribute, value)
        RUN.restore.clear()
    return live


def _end_progress(results: dict[str, Any] | None) -> None:
    """The last line, ended, before the verdict's: the report's verdict and count, and how many
    violations the provisional checks showed that the whole run did not confirm."""
    snapshot = _snapshot()
    live = _stop_progress()
    if live is None:
        return
    snapshot.phase, snapshot.elapsed, snapshot.total = "report", time.time() - RUN.started_at, None
    snapshot.users = None
    if results is None:
        snapshot.verdict, snapshot.violations = "none (the report could not be built)", None
    else:
        checks = results["checks"]
        snapshot.verdict = results["verdict"] + (" (partial)" if results.get("partial") else "")
        snapshot.violations = sum(len(c["violations"]) for c in checks)
        confirmed = sum(len(c["violations"]) for c in checks if c["name"] in SAFETY_CHECKS)
        provisional = RUN.check.violations if RUN.check and RUN.check.violations else 0
        snapshot.unconfirmed = max(0, provisional - confirmed)
    live.finish(snapshot)


_installed = False


def install() -> None:
    """Hook the harness into Locust's events (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    events.init_command_line_parser.add_listener(add_arguments)
    events.init.add_listener(on_init)
    events.test_start.add_listener(on_test_start)
    events.test_stop.add_listener(on_test_stop)
    events.quitting.add_listener(on_quitting)

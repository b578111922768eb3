"""Locust integration: the run folder, the embedded target, one merged history, the stats.

Everything here hangs off Locust's events, so ``scenarios/relay.py`` stays a plain locustfile:
- ``init`` (master or single process): make the run folder, bring up the local stack and the
  chaos proxy unless ``--host`` names a target, print the seed;
- every process ships its clients' history: workers to the master (``send_message``), the master
  or single process to ``history.jsonl``;
- ``quitting``: write Locust's stats, scan the store, tear the target down, check the run and
  write its report; the process exits 0 (no violation), 1 (violations) or 2 (harness failure).
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from .faults.profile import ProfileError, load_profile
from .history import History, HistoryFile
from .local_target import LocalTarget, TargetError
from .report.build import EXIT_HARNESS_FAILED, build_report, verdict_line

HISTORY_MESSAGE = "relay_history"
REPORTS_DIR = Path(__file__).resolve().parent.parent / "reports"


class RunState:
    """What this process knows about the run; one per process."""

    def __init__(self) -> None:
        self.history = History()
        self.history_file: HistoryFile | None = None
        self.target: LocalTarget | None = None
        self.run_dir: Path | None = None
        self.websocket_url: str = ""
        self.ping_url: str | None = None
        self.seed = 0
        self.started_at = time.time()
        self.test_started: float | None = None
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()


RUN = RunState()


def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("relay-harness")
    group.add_argument("--chaos-profile", default="", help="chaos profile NAME (scenarios/profiles/) or FILE.toml")
    group.add_argument("--seed", type=int, default=-1, help="seed of every fault decision (default: a random one, "
                                                            "printed and stored)")
    group.add_argument("--ping-url", default="", help="the relay's GET /ping URL, with --host (e.g. "
                                                     "https://ID.execute-api.REGION.amazonaws.com/production/ping)")
    group.add_argument("--session-size", type=int, default=2, help="players per public session (2-32)")
    group.add_argument("--heartbeat-interval", type=float, default=7.0, help="seconds between heartbeats")
    group.add_argument("--template", default="", help="with no --host: the SAM template of the relay to run on the "
                                                      "local stack (default: the reference relay)")
    group.add_argument("--run-dir", default="", help="folder for this run's files (default: reports/<time>-...)")
    group.add_argument("--cleanup-wait", type=float, default=0.0,
                       help="after the run, wait this long before scanning the store for leftovers (the local "
                            "stack then uses its shortest expiries; 90 is enough)")


def _fail(message: str) -> None:
    print(f"relay-harness: {message}", file=sys.stderr)
    raise SystemExit(2)


def _run_dir(options: Any, profile_name: str, seed: int) -> Path:
    if options.run_dir:
        return Path(options.run_dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return REPORTS_DIR / f"{stamp}-{profile_name or 'no-faults'}-seed{seed}"


def on_init(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    if isinstance(environment.runner, WorkerRunner):
        _start_flusher(environment)  # workers ship their history to the master, which writes it
        return
    if not 2 <= options.session_size <= 32:
        _fail(f"--session-size {options.session_size} must be from 2 to 32")
    if options.template and not Path(options.template).is_file():
        _fail(f"--template {options.template} not found: pass the path of the relay's SAM template.yaml")
    profile_name = ""
    if options.chaos_profile:
        try:
            profile = load_profile(options.chaos_profile)
        except ProfileError as exc:
            _fail(str(exc))
        profile_name = profile.name
        if options.seed < 0 and profile.seed is not None:
            options.seed = profile.seed
    if options.seed < 0:
        options.seed = random.randrange(1 << 31)
    RUN.seed = options.seed
    RUN.run_dir = _run_dir(options, profile_name, options.seed)
    RUN.run_dir.mkdir(parents=True, exist_ok=True)
    host = environment.host or ""
    if host.startswith("wss://") and options.chaos_profile:
        _fail("--chaos-profile needs a ws:// --host (the proxy does not terminate TLS), or no --host")
    if not host or options.chaos_profile:
        RUN.target = LocalTarget(RUN.run_dir, seed=options.seed, profile=options.chaos_profile or None,
                                 upstream=host or None, short_expiry=options.cleanup_wait > 0,
                                 template=options.template or None)
        try:
            RUN.target.start()
        except TargetError as exc:
            RUN.target = None
            _fail(str(exc))
        environment.host = RUN.target.websocket_url
        if not options.ping_url and RUN.target.ping_url:
            options.ping_url = RUN.target.ping_url
    RUN.websocket_url = environment.host
    RUN.ping_url = options.ping_url or None
    RUN.history_file = HistoryFile(RUN.run_dir / "history.jsonl")
    _write_run_file(environment, profile_name)
    print(f"relay-harness: seed {options.seed}; target {environment.host}; run folder {RUN.run_dir}", flush=True)
    if isinstance(environment.runner, MasterRunner):
        environment.runner.register_message(HISTORY_MESSAGE, _receive_history)
    _start_flusher(environment)


def _write_run_file(environment: Environment, profile_name: str) -> None:
    assert RUN.run_dir is not None
    options = environment.parsed_options
    info = {"seed": RUN.seed, "profile": profile_name or None, "host": environment.host,
            "ping_url": options.ping_url or None, "started": RUN.started_at, "command": sys.argv,
            "session_size": options.session_size,
            "stack": RUN.target.stack if RUN.target else None, "proxy": RUN.target.proxy if RUN.target else None}
    (RUN.run_dir / "run.json").write_text(json.dumps(info, indent=2))


def _receive_history(environment: Environment, msg: Any, **_: Any) -> None:
    if RUN.history_file is not None:
        RUN.history_file.write(msg.data)


def flush_history(environment: Environment) -> None:
    records = RUN.history.drain()
    if not records:
        return
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.send_message(HISTORY_MESSAGE, records)
    elif RUN.history_file is not None:
        RUN.history_file.write(records)


def _start_flusher(environment: Environment) -> None:
    def loop() -> None:
        while not RUN._stop.wait(1.0):
            flush_history(environment)

    RUN._flusher = threading.Thread(target=loop, name="history-flusher", daemon=True)
    RUN._flusher.start()


def on_test_start(environment: Environment, **_: Any) -> None:
    RUN.test_started = time.monotonic()


def on_test_stop(environment: Environment, **_: Any) -> None:
    flush_history(environment)


def _interrupted(environment: Environment) -> bool:
    """Stopped before its --run-time was up (Ctrl-C): the report covers what the run saw."""
    run_time = getattr(environment.parsed_options, "run_time", None)
    return bool(run_time and RUN.test_started and time.monotonic() - RUN.test_started < run_time - 1)


def on_quitting(environment: Environment, **_: Any) -> None:
    RUN._stop.set()
    flush_history(environment)
    if isinstance(environment.runner, WorkerRunner) or RUN.run_dir is None:
        return
    try:
        write_stats(environment, RUN.run_dir / "locust_stats.json")
        if RUN.history_file is not None:
            RUN.history_file.close()
        if RUN.target is not None and RUN.target.stack:
            _scan_store(environment.parsed_options.cleanup_wait)
    finally:
        if RUN.target is not None:
            RUN.target.stop()
            RUN.target = None
    try:
        status, results = build_report(RUN.run_dir, partial=_interrupted(environment))
    except Exception as exc:  # the harness failed, not the relay: say so and exit 2
        print(f"relay-harness: the report could not be built: {exc}", file=sys.stderr)
        environment.process_exit_code = EXIT_HARNESS_FAILED
        return
    print(f"relay-harness: {verdict_line(results)}; report {RUN.run_dir / 'report.html'}", flush=True)
    environment.process_exit_code = status


def _scan_store(wait: float) -> None:
    assert RUN.target is not None and RUN.run_dir is not None
    if wait > 0:
        print(f"relay-harness: waiting {wait:.0f} s for the relay's clean-up before scanning the store", flush=True)
        time.sleep(wait)
    scan = {"cleanup_wait_s": wait, **RUN.target.scan_store()}
    (RUN.run_dir / "store.json").write_text(json.dumps(scan, indent=2, default=str))


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


def install() -> None:
    events.init_command_line_parser.add_listener(add_arguments)
    events.init.add_listener(on_init)
    events.test_start.add_listener(on_test_start)
    events.test_stop.add_listener(on_test_stop)
    events.quitting.add_listener(on_quitting)

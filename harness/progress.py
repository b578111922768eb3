"""The run's live line: what phase it is in, for how long, how many players, faults injected and
violations found so far, while a Locust run (or ``relay-harness chaos``) goes on.

    relay-harness: load 12/40 s | 20 users | violations so far 0 (provisional) | faults 37: wire 20, store 6, ...

- On a terminal: one line on stderr, rewritten in place about once a second (``\\r`` and ANSI
  "erase line", ECMA-48 EL; cut to the terminal's width so it never wraps). Any other output of the
  process (Locust's log and stats tables, the harness's own lines) first erases it, then it is drawn
  again at the next tick (``LiveLine.wrap``).
- Elsewhere (CI logs): a plain line every ``PLAIN_EVERY_S`` seconds and at each change of phase, no
  control characters.
- "Violations so far" comes from the checkers that can judge part of a run (``SAFETY_CHECKS``), run
  on the history collected so far, in the background, at most every ``CHECK_EVERY_S`` seconds and
  at most ``CHECK_SHARE`` of the time (``ProvisionalCheck``). It is provisional: the report, on the
  whole run, is the verdict, and the last line says so when the two differ.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .checkers import CHECKERS
from .checkers.model import GRACE_S, Run
from .faults.plan import parse_rule
from .faults.profile import KNOWN_SEAMS, Profile
from .proxy.faults import PROXY_FAULTS, parse_fault

PHASES = ("starting stack", "load", "faults quiet", "stopping", "clean-up wait", "checking", "report")
TTY_EVERY_S = 1.0  # seconds between two drawings of the line on a terminal
PLAIN_EVERY_S = 10.0  # seconds between two plain lines (not a terminal)
CHECK_EVERY_S = 10.0  # seconds between two provisional checks, at the least
CHECK_SHARE = 0.1  # a provisional check waits 1/CHECK_SHARE times its own duration before the next one
CHECK_MAX_RECORDS = 50_000  # past this many history records, the run is judged only at its end
# Records younger than this are not judged yet: a fault that explains them may still be on its way
# to the fault log (the checkers give a fault GRACE_S either side).
SETTLE_S = 2 * GRACE_S
# Checkers whose findings on a part of the history stay findings on the whole: safety properties.
# Liveness, delivery, recovery, clean-up and the others need the run's end to judge.
SAFETY_CHECKS = ("membership", "notifications", "client_errors")
ERASE = "\r\x1b[2K"  # carriage return, then ECMA-48 EL 2: erase the whole line


@dataclass
class Snapshot:
    """What the line shows. ``elapsed``/``total`` in seconds (``total`` None when open-ended);
    ``faults``: seam -> faults injected so far; ``violations``: provisional count (None: not judged,
    ``note`` says why); ``verdict``: the report's verdict, once there is one (then ``violations`` is
    the report's count and ``unconfirmed`` how many provisional ones the whole run did not confirm)."""

    phase: str
    elapsed: float
    total: float | None = None
    users: int | None = None
    faults: dict[str, int] = field(default_factory=dict)
    violations: int | None = None
    note: str = "not judged yet"
    verdict: str | None = None
    unconfirmed: int = 0


def format_line(snapshot: Snapshot) -> str:
    """The line, without a line end, e.g. ``relay-harness: load 12/40 s | 20 users | violations so far
    0 (provisional) | faults 37: wire 30, store 7``. Seams are listed in KNOWN_SEAMS order."""
    clock = f"{snapshot.elapsed:.0f}/{snapshot.total:.0f} s" if snapshot.total else f"{snapshot.elapsed:.0f} s"
    parts = [f"{snapshot.phase} {clock}"]
    if snapshot.users is not None:
        parts.append(f"{snapshot.users} users")
    if snapshot.verdict is not None:
        judged = f"verdict {snapshot.verdict}, {snapshot.violations or 0} violations"
        if snapshot.unconfirmed:
            judged += (f" ({snapshot.unconfirmed} provisional violation(s) not confirmed by the whole run: "
                       "the report is the verdict)")
        parts.append(judged)
    elif snapshot.violations is None:
        parts.append(f"violations: {snapshot.note}")
    else:
        parts.append(f"violations so far {snapshot.violations} (provisional)")
    total = sum(snapshot.faults.values())
    seams = ", ".join(f"{seam} {snapshot.faults[seam]}" for seam in KNOWN_SEAMS if snapshot.faults.get(seam))
    parts.append(f"faults {total}: {seams}" if seams else f"faults {total}")
    return "relay-harness: " + " | ".join(parts)


class Cadence:
    """When to draw: every ``every`` seconds, and at once when the phase changes."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._last_at: float | None = None
        self._last_phase: str | None = None

    def due(self, now: float, phase: str) -> bool:
        """Whether to draw at ``now`` (monotonic seconds); if so, counts it as drawn."""
        if self._last_at is not None and phase == self._last_phase and now - self._last_at < self.every:
            return False
        self._last_at, self._last_phase = now, phase
        return True


def faults_end_s(profile: Profile) -> float | None:
    """Seconds after the fault windows' origin (the stack's start) when the profile's last fault is
    over; None when it has none or one without an end (then the faults never go quiet)."""
    ends = []
    for raw in profile.faults:
        if raw.get("seam", "wire") == "wire":
            spec = parse_fault(raw)
            start, end, kind, params = spec.start, spec.end, spec.type, spec.params
            one_shot = kind in PROXY_FAULTS
        else:
            rule = parse_rule(raw)
            start, end, params, one_shot = rule.start, rule.end, rule.params, rule.seam == "process"
        if end is None and one_shot and start is not None:
            end = start + float(params.get("seconds", 0) or 0)
        if end is None:
            return None
        ends.append(end)
    return max(ends, default=None)


class JsonlTail:
    """The complete lines appended to a JSON-lines file since the last ``read``; a line being
    written is left for the next read, a line that is not JSON is skipped (as ``read_history``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._rest = b""

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as source:
                source.seek(self._offset)
                data = source.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        complete, _, self._rest = (self._rest + data).rpartition(b"\n")
        records = []
        for line in complete.split(b"\n"):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records


class FaultCount:
    """Faults injected so far, per seam, from the run's ``faults.jsonl``."""

    def __init__(self, path: Path) -> None:
        self._tail = JsonlTail(path)
        self.by_seam: Counter[str] = Counter()

    def update(self) -> dict[str, int]:
        self.by_seam.update(str(f.get("seam", "wire")) for f in self._tail.read())
        return dict(self.by_seam)


class ProvisionalCheck:
    """The safety checkers (``SAFETY_CHECKS``) on the history so far, older than ``SETTLE_S``, with
    every fault logged so far. ``run_pass`` is meant for a background thread (it reads files and
    runs pure checkers; it shares nothing with the load but these attributes).

    ``info``: run.json's keys the checkers read (``rules``, ``stack_restarts``), taken at each pass.
    Past ``max_records`` history records it stops (``note`` says so); the report judges the run.
    """

    def __init__(self, run_dir: Path, info: Callable[[], dict[str, Any]], max_records: int = CHECK_MAX_RECORDS,
                 clock: Callable[[], float] = time.time) -> None:
        self._history = JsonlTail(run_dir / "history.jsonl")
        self._faults = JsonlTail(run_dir / "faults.jsonl")
        self._info = info
        self._clock = clock
        self.max_records = max_records
        self.records: list[dict[str, Any]] = []
        self.fault_records: list[dict[str, Any]] = []
        self.violations: int | None = None
        self.by_check: dict[str, int] = {}
        self.note = "not judged yet"
        self.running = False
        self.next_at = 0.0  # monotonic seconds
        self.stopped = False

    def due(self, now: float) -> bool:
        return not self.running and not self.stopped and now >= self.next_at

    def run_pass(self) -> None:
        """One pass; never raises (a failure is shown in ``note`` and ends the provisional checks)."""
        started = time.monotonic()
        self.running = True
        try:
            self.records += self._history.read()
            self.fault_records += self._faults.read()
            if len(self.records) > self.max_records:
                self.violations, self.stopped, self.records = None, True, []
                self.note = f"judged at the end (history over {self.max_records:,} records)"
                return
            settled = (self._clock() - SETTLE_S) * 1000
            run = Run(history=[r for r in self.records if r["t"] <= settled], faults=list(self.fault_records),
                      info=self._info())
            results = [check(run) for name, _, _, check in CHECKERS if name in SAFETY_CHECKS]
            self.by_check = {result.name: len(result.violations) for result in results}
            self.violations = sum(self.by_check.values())
        except Exception as exc:  # a checker's surprise on part of a run: the report still judges it
            self.violations, self.stopped = None, True
            self.note = f"judged at the end (the provisional check failed: {type(exc).__name__})"
        finally:
            took = time.monotonic() - started
            self.next_at = time.monotonic() + max(CHECK_EVERY_S, took / CHECK_SHARE)
            self.running = False


class _Interrupting:
    """A text stream whose writes first erase the live line (so other output never lands on it)."""

    def __init__(self, inner: TextIO, line: LiveLine) -> None:
        self._inner = inner
        self._line = line

    def write(self, text: str) -> int:
        self._line.erase()
        return self._inner.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class LiveLine:
    """Draws snapshots on ``stream``: in place on a terminal, as plain lines elsewhere."""

    def __init__(self, stream: TextIO, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.cadence = Cadence(TTY_EVERY_S if self.tty else PLAIN_EVERY_S)
        self.drawn = False  # a terminal line is on screen, not ended
        self._lock = threading.RLock()

    def wrap(self, stream: TextIO) -> TextIO:
        """``stream`` made to erase the line before each write (on a terminal; else ``stream``)."""
        return _Interrupting(stream, self) if self.tty else stream  # type: ignore[return-value]

    def show(self, snapshot: Snapshot, now: float) -> bool:
        """Draw ``snapshot`` if the cadence says so at ``now`` (monotonic seconds); True if drawn."""
        if not self.cadence.due(now, snapshot.phase):
            return False
        self._write(format_line(snapshot), end=not self.tty)
        return True

    def finish(self, snapshot: Snapshot) -> None:
        """The last line, ended with a newline, whatever the cadence."""
        self._write(format_line(snapshot), end=True)

    def erase(self) -> None:
        with self._lock:
            if self.drawn:
                self.drawn = False
                self.stream.write(ERASE)

    def _write(self, line: str, end: bool) -> None:
        with self._lock:
            if self.tty:
                width = shutil.get_terminal_size().columns - 1
                line = ERASE + (line if len(line) <= width else line[:max(width - 3, 0)] + "...")
            self.stream.write(line + ("\n" if end else ""))
            self.stream.flush()
            self.drawn = self.tty and not end

"""What checkers read (a run: history, fault logs, store scan, resource samples) and what they return (findings).

Checkers are pure functions ``check(run) -> CheckResult``; this module builds the indexes they
share, once, so each checker reads like the invariant it states.

Which fault can explain what (a fault explains only what it could have caused):
- a wire fault is tied to one client socket: the proxy names a connection by its request target,
  which carries ``client=<name>`` and ``conn=<socket counter>`` (falling back, for logs without
  ``conn``, to the client's socket that was open when the fault took effect);
- a message fault (drop, duplicate, corrupt, truncate, reorder, delay) names the payload ids and
  JSON types of the message it hit (``target.pids``, ``target.types``): it explains only those;
- a socket-ending fault (reset, close, timeout, blackhole, limit_data, mass_disconnect) explains
  what that socket would have carried after it;
- faults of the other seams (invocation, store, management, process) act inside the stack, where
  no client socket is known: they explain what happened within ``GRACE_S`` of them, for the client
  they name (``target.client``) or, when they name none, for anyone;
- except a process ``kill``, whose effects are confined to its span: from the kill until the
  restarted stack was ready (run.json ``stack_restarts``; until the end of the run if it never
  was). It ends every socket and may lose whatever was in flight over that span, and explains
  nothing before or after it.

The local stack's own lag is treated like a stack-side fault that names no client: an invocation
that waited ``LAG_MS`` or more for a free function instance (``invocations.jsonl`` ``queued_ms``;
Lambda never makes a synchronous invocation wait, it starts another instance) marks the stack as
*behind* from that event's arrival to its invocation's end (``Run.lags``, overlapping spans merged).
What only such a span explains is not judged, and the verdict says the run is inconclusive
(``checkers.verdict``): the harness, not the relay, was too slow there.
"""

from __future__ import annotations

import functools
import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..history import Record, read_history

# Seconds a delivery may take, and how long after a fault its effects may still show.
GRACE_S = 5.0
RULE_SETS = ("protocol", "reference")
SOCKET_ENDING = frozenset({"reset", "close", "timeout", "blackhole", "limit_data", "mass_disconnect", "kill"})
MESSAGE_LOSING = frozenset({"drop", "corrupt", "truncate"})
STATUSES = ("pass", "fail", "not exercised", "error", "skipped")
# Stack-side faults that only slow things down: they can reorder or delay, never fail or lose.
SLOWING = frozenset({"latency", "cold_start", "stream_stall"})
# Stack-side faults whose effects end with their span, which is exact: no grace on either side.
EXACT_SPAN = frozenset({"kill"})
# Wire faults that hold a socket's frames back (they delay, never lose).
HOLDING = frozenset({"delay", "reorder", "latency", "bandwidth", "slicer", "pause"})
# How long after the last other member got a message its fan-out may still be under way (ms).
SETTLE_MS = 1000.0
# An invocation that waited this long for a free instance (ms) shows the local stack behind its load.
LAG_MS = 1000.0
LAG = "stack_lag"


def number(value: Any) -> float | None:
    """A protocol number as sent: relays send ``time`` or ``memberNum`` as numbers or as numeric
    strings (the original Simple Relay's ``pinnedMessage.time`` is a string). None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def slot(value: Any) -> int | None:
    """A ``memberNum`` as sent (a number or a numeric string) as an int; None if not a whole number."""
    parsed = number(value)
    return int(parsed) if parsed is not None and parsed == int(parsed) else None


@dataclass
class Finding:
    invariant: str
    message: str
    excerpt: list[Record] = field(default_factory=list)
    explained_by: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"invariant": self.invariant, "message": self.message, "excerpt": self.excerpt[:12],
                "excerpt_count": len(self.excerpt), "explained_by": self.explained_by[:5],
                "explained_by_count": len(self.explained_by)}


@dataclass
class CheckResult:
    """One checker's outcome. ``checked`` counts what it really looked at (operations, sessions, ...);
    a check that looked at nothing is ``not exercised``, never a pass."""

    name: str
    title: str
    weight: int
    violations: list[Finding] = field(default_factory=list)
    explained: list[Finding] = field(default_factory=list)  # what an injected fault accounts for
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    checked: int = 0
    error: str | None = None  # the checker itself raised: "ExceptionType: message"

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        if self.violations:
            return "fail"
        if self.skipped is not None:
            return "skipped"
        return "pass" if self.checked else "not exercised"

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "weight": self.weight, "status": self.status,
                "skipped": self.skipped, "error": self.error, "checked": self.checked, "notes": self.notes,
                "violations": [f.as_dict() for f in self.violations],
                "explained": [f.as_dict() for f in self.explained[:50]], "explained_count": len(self.explained)}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return read_history(path)


def _socket_of(fault: dict[str, Any]) -> tuple[str | None, int | None]:
    """(client, socket counter) named by a wire fault's connection key, or (None, None)."""
    target = fault.get("target") or {}
    key = str(target.get("conn", ""))
    if not key:
        return None, None
    query = parse_qs(urlsplit(key.rpartition("#")[0] or key).query)
    client = (query.get("client") or [None])[0]
    conn = (query.get("conn") or [None])[0]
    return client, int(conn) if conn and conn.isdigit() else None


@dataclass
class Run:
    history: list[Record]
    faults: list[dict[str, Any]] = field(default_factory=list)
    invocations: list[dict[str, Any]] = field(default_factory=list)
    stream_failures: list[dict[str, Any]] = field(default_factory=list)
    store: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    resources: list[dict[str, Any]] = field(default_factory=list)  # resources.jsonl: the target's processes

    @classmethod
    def load(cls, run_dir: Path) -> Run:
        store_path = run_dir / "store.json"
        info_path = run_dir / "run.json"
        return cls(history=_read_jsonl(run_dir / "history.jsonl"), faults=_read_jsonl(run_dir / "faults.jsonl"),
                   invocations=_read_jsonl(run_dir / "invocations.jsonl"),
                   stream_failures=_read_jsonl(run_dir / "stream-failures.jsonl"),
                   store=json.loads(store_path.read_text()) if store_path.exists() else None,
                   info=json.loads(info_path.read_text()) if info_path.exists() else {},
                   resources=_read_jsonl(run_dir / "resources.jsonl"))

    @property
    def expiries_s(self) -> dict[str, float] | None:
        """The relay's expiry settings in force on the embedded stack (parameter -> seconds), as the run
        set them (run.json ``stack_options``, harness/stack/short_expiry.py); None when not known: no
        short expiries, a template with no parameter named like one, or a relay run elsewhere."""
        return (self.info.get("stack_options") or {}).get("expiries_s") or None

    @property
    def expiries_unknown(self) -> bool:
        """The user set the embedded stack's parameters, and none of them is known as an expiry: the
        relay's expiries in force may differ from what the protocol says, and this harness cannot tell."""
        options = self.info.get("stack_options") or {}
        return bool(options.get("parameters")) and not options.get("expiries_s")

    def __post_init__(self) -> None:
        self.rules: str = self.info.get("rules") if self.info.get("rules") in RULE_SETS else "protocol"
        self.by_client: dict[str, list[Record]] = defaultdict(list)
        for record in self.history:
            self.by_client[record["client"]].append(record)
        for records in self.by_client.values():
            records.sort(key=lambda r: r["mono"])
        self.end_t = max((r["t"] for r in self.history), default=0)
        self.faults = [self._kill_spanned(f) if f.get("fault") == "kill" else f for f in self.faults]
        self._intervals = {client: self._open_intervals(client) for client in self.by_client}
        # Wire faults by the client socket they hit; faults of the other seams and proxy-wide ones apart.
        self.faults_by_socket: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        self.stack_faults: list[dict[str, Any]] = []
        self.proxy_wide: list[dict[str, Any]] = []
        for fault in self.faults:
            if fault.get("seam", "wire") != "wire":
                self.stack_faults.append(fault)
                continue
            client, conn = _socket_of(fault)
            if client is None:
                self.proxy_wide.append(fault)
                continue
            if conn is None:
                conn = self.socket_at(client, fault["t"])
            if conn is not None:
                self.faults_by_socket[(client, conn)].append(fault)
        self.last_fault_t = max((f["t"] + 1000 * fault_span(f) for f in self.faults), default=0)
        self.lags = lag_spans(self.invocations)
        self.stack_faults += self.lags
        self.stack_index = FaultIndex(self.stack_faults)
        self.proxy_wide_index = FaultIndex(self.proxy_wide)

    def _kill_spanned(self, kill: dict[str, Any]) -> dict[str, Any]:
        """The kill with ``params.seconds`` from the kill until the restarted stack was ready (run.json
        ``stack_restarts``, matched by ``killed_t``), or until the end of the run if it never was; as
        logged (its downtime) when run.json does not tell."""
        restart = next((r for r in self.info.get("stack_restarts") or [] if r.get("killed_t") == kill["t"]), None)
        if restart is None:
            return kill
        ready = restart.get("ready_t")
        until = ready if ready is not None else max(self.end_t, self.info.get("ended_t") or 0, kill["t"])
        return {**kill, "params": {**(kill.get("params") or {}), "seconds": (until - kill["t"]) / 1000}}

    # ---- questions checkers ask ------------------------------------------------------------
    @functools.cached_property
    def last_receipts(self) -> dict[str, float]:
        """Payload id -> when the last member to get it got it (wall ms), first copies only; worked
        out once for the checkers that ask (``loss_faults``' ``delivered_t``)."""
        first: dict[tuple[str, str], float] = {}
        for record in self.received():
            if record.get("pid"):
                first.setdefault((record["client"], record["pid"]), record["t"])
        last: dict[str, float] = {}
        for (_, pid), t in first.items():
            last[pid] = max(last.get(pid, t), t)
        return last

    def received(self, kind: str | None = None) -> list[Record]:
        """Received frames (of JSON ``type`` ``kind``), in history order; worked out once per kind."""
        cache = self.__dict__.setdefault("_received", {})
        if kind not in cache:
            frames = cache[None] if None in cache else [r for r in self.history if r["op"] == "recv"]
            cache[kind] = frames if kind is None else [r for r in frames if r["msg"].get("type") == kind]
        return list(cache[kind])

    def _open_intervals(self, client: str) -> list[tuple[int, float, float]]:
        intervals = []
        opened: dict[int, float] = {}
        for record in self.by_client.get(client, []):
            if record["op"] in ("connect", "rejoin") and record["phase"] == "ok":
                opened[record["conn"]] = record["t"]
            elif record["op"] == "close" and record["phase"] in ("invoke", "info") and record["conn"] in opened:
                intervals.append((record["conn"], opened.pop(record["conn"]), record["t"]))
        intervals += [(conn, t, float("inf")) for conn, t in opened.items()]
        return intervals

    def open_intervals(self, client: str) -> list[tuple[int, float, float]]:
        """(conn, opened t, closed t) for each socket the client had open."""
        return self._intervals.get(client, [])

    def socket_at(self, client: str, t: float) -> int | None:
        """The client's socket that was open at ``t`` (the latest opened, if several)."""
        spans = [(opened, conn) for conn, opened, closed in self.open_intervals(client) if opened <= t <= closed]
        return max(spans)[1] if spans else None

    def connected_throughout(self, client: str, start_t: float, end_t: float) -> bool:
        return any(opened <= start_t and closed >= end_t for _, opened, closed in self.open_intervals(client))

    def socket_faults(self, client: str, conn: int | None) -> list[dict[str, Any]]:
        return self.faults_by_socket.get((client, conn), []) if conn is not None else []

    def stack_faults_near(self, start_t: float, end_t: float, *clients: str, slowing: bool = False
                          ) -> list[dict[str, Any]]:
        """Faults of the invocation, store, management and process seams that could affect [start, end]
        for these clients (those that name no client affect everyone): the ones that make something
        fail, and with ``slowing`` also those that only delay (which can reorder, never lose)."""
        grace = GRACE_S * 1000
        return [f for f in self.stack_index.overlapping(start_t, end_t, grace, grace)
                if (f.get("target") or {}).get("client") in (None, *clients)
                and (slowing or f["fault"] not in SLOWING)]

    def faults_around(self, client: str, conn: int | None, start_t: float, end_t: float) -> list[dict[str, Any]]:
        """Every injected fault that touched this client socket, or everyone, from ``GRACE_S`` before
        ``start_t`` to ``end_t``: the socket's own wire faults, proxy-wide ones and stack-side ones."""
        grace = GRACE_S * 1000
        own = [f for f in self.socket_faults(client, conn) if start_t - grace <= f["t"] <= end_t]
        wide = [f for f in self.proxy_wide_index.within(start_t - grace, end_t)
                if f["t"] <= end_t and f["t"] + 1000 * fault_span(f) >= start_t - grace]
        return own + wide + self.stack_faults_near(start_t, end_t, client)

    def proxy_wide_near(self, start_t: float, end_t: float, kinds: frozenset[str] | set[str]) -> list[dict]:
        grace = GRACE_S * 1000
        return [f for f in self.proxy_wide_index.within(start_t - grace, end_t + grace)
                if f["fault"] in kinds and f["t"] <= end_t + grace
                and f["t"] + 1000 * fault_span(f) >= start_t - grace]

    def loss_faults(self, pid: str, sender: str, send_conn: int | None, receiver: str, recv_conn: int | None,
                    start_t: float, end_t: float, delivered_t: float | None = None) -> list[dict[str, Any]]:
        """Injected faults that could have kept message ``pid`` from ``receiver``: a fault that hit that
        message on either socket, a fault that ended either socket around it, or a stack-side fault.

        ``delivered_t``: when the last other member got that message (wall ms), if any did. The relay
        had sent it to everyone by about then, so the receiver's socket ending more than
        ``SETTLE_MS`` later explains nothing, unless a fault held that socket's frames back."""
        until = end_t
        if delivered_t is not None and not self._held_back(receiver, recv_conn, start_t, end_t):
            until = min(end_t, delivered_t + SETTLE_MS)
        hits = [f for f in self.socket_faults(receiver, recv_conn)
                if _hit(f, "downstream", pid, "MESSAGE", until)]
        hits += [f for f in self.socket_faults(sender, send_conn)
                 if _hit(f, "upstream", pid, "SEND_MESSAGE", start_t + 1000)]
        return hits + self._held_until_closed(sender, send_conn, start_t) + self.stack_faults_near(
            start_t, end_t, sender, receiver)

    def _held_back(self, client: str, conn: int | None, start_t: float, end_t: float) -> bool:
        """Whether a fault may have held that socket's frames back during [start_t, end_t]: one of its
        own that delays (``HOLDING``), or a proxy-wide pause."""
        grace = GRACE_S * 1000
        own = any(f["fault"] in HOLDING and f["t"] <= end_t and f["t"] + 1000 * fault_span(f) >= start_t - grace
                  for f in self.socket_faults(client, conn))
        return own or bool(self.proxy_wide_near(start_t, end_t, {"pause"}))

    def _held_until_closed(self, sender: str, send_conn: int | None, sent_t: float) -> list[dict[str, Any]]:
        """Faults that held the message in the proxy (a proxy-wide pause, the socket's latency) until
        after its sender closed that socket: it went down with the socket, never reaching the relay."""
        closed = next((c for conn, _, c in self.open_intervals(sender) if conn == send_conn), float("inf"))
        hits = []
        for fault in self.proxy_wide + self.socket_faults(sender, send_conn):
            params = fault.get("params") or {}
            if fault["fault"] == "pause" and fault["t"] <= sent_t:
                held_until = fault["t"] + 1000 * fault_span(fault)
            elif fault["fault"] == "latency" and (fault.get("target") or {}).get("direction") in ("upstream", None):
                held_until = sent_t + float(params.get("ms", 0)) + float(params.get("jitter_ms", 0))
            else:
                continue
            if sent_t <= held_until and closed <= held_until + 100:
                hits.append(fault)
        return hits

    def message_faults(self, client: str, conn: int | None, kinds: set[str], *, pid: str | None = None,
                       kind: str | None = None, direction: str = "downstream") -> list[dict[str, Any]]:
        """Message faults of ``kinds`` on that socket that hit the message with ``pid`` or of JSON ``kind``."""
        return [f for f in self.socket_faults(client, conn) if f["fault"] in kinds
                and (f.get("target") or {}).get("direction") == direction
                and _names(f.get("target") or {}, pid, kind)]


class FaultIndex:
    """Faults by when they act, for "which of these faults could act on [lo, hi]" (wall ms) without
    reading every fault: each one is filed under the whole seconds its span ``[t, t + fault_span]``
    covers (one that lasts longer than ``LONG_MS`` is a candidate for every question). A question
    gets every fault whose span meets [lo, hi], and possibly a few more: callers still apply their
    exact condition. Faults come back in the order given (the fault log's), so what explains a
    finding is listed as if every fault had been read."""

    BUCKET_MS = 1000.0
    LONG_MS = 600_000.0

    def __init__(self, faults: list[dict[str, Any]]) -> None:
        self.faults = faults
        self._buckets: dict[int, list[int]] = defaultdict(list)
        self._long: list[int] = []
        self._ends = [fault["t"] + 1000 * fault_span(fault) for fault in faults]  # as ``overlaps`` works it out
        for position, fault in enumerate(faults):
            start, end = float(fault["t"]), float(self._ends[position])
            if not (math.isfinite(start) and math.isfinite(end)) or end - start > self.LONG_MS:
                self._long.append(position)
                continue
            for bucket in range(int(start // self.BUCKET_MS), int(end // self.BUCKET_MS) + 1):
                self._buckets[bucket].append(position)

    def positions(self, lo: float, hi: float) -> list[int]:
        """Positions (in the list given) of the faults whose span may meet [lo, hi], ascending."""
        lo, hi = min(lo, hi), max(lo, hi)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return list(range(len(self.faults)))
        first, last = int(lo // self.BUCKET_MS), int(hi // self.BUCKET_MS)
        if last - first > len(self._buckets):
            return list(range(len(self.faults)))
        found: set[int] = set(self._long)
        for bucket in range(first, last + 1):
            found.update(self._buckets.get(bucket, ()))
        return sorted(found)

    def overlapping(self, start_t: float, end_t: float, before_ms: float, after_ms: float) -> list[dict[str, Any]]:
        """The faults that ``overlaps`` says could act on [start_t, end_t], in the order given."""
        found = []
        for position in self.positions(start_t - before_ms, end_t + after_ms):
            fault, ends = self.faults[position], self._ends[position]
            before, after = (0.0, 0.0) if fault["fault"] in EXACT_SPAN else (before_ms, after_ms)
            if fault["t"] - before <= end_t and ends + after >= start_t:
                found.append(fault)
        return found

    def within(self, lo: float, hi: float) -> list[dict[str, Any]]:
        """The faults whose span may meet [lo, hi], in the order given."""
        return self.at(self.positions(lo, hi))

    def at(self, positions: Iterable[int]) -> list[dict[str, Any]]:
        """The faults at these positions, in that order."""
        return [self.faults[position] for position in positions]


def _hit(fault: dict[str, Any], direction: str, pid: str, kind: str, until: float) -> bool:
    """A fault that lost that message in ``direction``, or ended its socket no later than ``until``."""
    target = fault.get("target") or {}
    if fault["fault"] in SOCKET_ENDING:
        return fault["t"] <= until
    return fault["fault"] in MESSAGE_LOSING and target.get("direction") == direction and _names(target, pid, kind)


def _names(target: dict[str, Any], pid: str | None, kind: str | None) -> bool:
    """Whether a message fault's target is the message with ``pid`` (or, without a pid, of JSON type
    ``kind``). Fault logs written before targets described messages match by kind alone."""
    if "pids" not in target and "types" not in target:
        return True
    if pid is not None:
        return pid in (target.get("pids") or [])
    return kind is not None and (kind in (target.get("types") or []) or kind in (target.get("actions") or []))


def lag_spans(invocations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """When the local stack was behind its load, as stack-side pseudo-faults (``fault`` ``stack_lag``,
    seam ``stack``, no target): each invocation that waited ``LAG_MS`` or more for a free instance
    spans from its event's arrival (``t - duration_ms - queued_ms``) to its end (``t``, wall ms);
    overlapping spans merge. ``params``: ``seconds`` (the span), ``max_queued_ms`` and
    ``invocations`` (how many waited that long in it)."""
    waits = sorted((r["t"] - float(r.get("duration_ms") or 0) - float(r["queued_ms"]), float(r["t"]),
                    float(r["queued_ms"])) for r in invocations if float(r.get("queued_ms") or 0) >= LAG_MS)
    spans: list[list[float]] = []
    for start, end, queued in waits:
        if spans and start <= spans[-1][1]:
            last = spans[-1]
            last[1], last[2], last[3] = max(last[1], end), max(last[2], queued), last[3] + 1
        else:
            spans.append([start, end, queued, 1])
    return [{"t": start, "seam": "stack", "fault": LAG, "target": {},
             "params": {"seconds": round((end - start) / 1000, 3), "max_queued_ms": round(queued),
                        "invocations": count}} for start, end, queued, count in spans]


def only_lag(finding: Finding) -> bool:
    """Whether what explains ``finding`` is the local stack's lag alone (no injected fault)."""
    return bool(finding.explained_by) and all(f.get("fault") == LAG for f in finding.explained_by)


def fault_span(fault: dict[str, Any]) -> float:
    """Seconds a fault goes on after it took effect: its span (``seconds`` / ``for``), plus a delay
    it adds (``ms``; for ``clock_skew`` that is the clock's offset, not a duration) and a reorder's
    longest hold (``max_wait_ms``)."""
    params = fault.get("params") or {}
    delay = 0.0 if fault.get("fault") == "clock_skew" else float(params.get("ms", 0)) / 1000
    return float(params.get("seconds", 0) or params.get("for", 0)) + delay + float(
        params.get("max_wait_ms", 0)) / 1000


def overlaps(fault: dict[str, Any], start_t: float, end_t: float, before_ms: float, after_ms: float) -> bool:
    """Whether ``fault`` could act on [start_t, end_t] (wall ms): its span, from ``before_ms`` before
    it starts to ``after_ms`` after it ends; a kill's span exactly (``EXACT_SPAN``)."""
    if fault["fault"] in EXACT_SPAN:
        before_ms = after_ms = 0.0
    return fault["t"] - before_ms <= end_t and fault["t"] + 1000 * fault_span(fault) + after_ms >= start_t


def excerpt(records: list[Record], limit: int = 100) -> list[Record]:
    """The smallest useful slice of history: each record once, in time order, capped at ``limit``
    (reports show the first 12 and say how many there were)."""
    unique = {(r.get("client"), r.get("mono"), r.get("op"), r.get("phase"), r.get("pid")): r for r in records}
    return sorted(unique.values(), key=lambda r: (r["t"], r["mono"]))[:limit]

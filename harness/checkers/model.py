"""What checkers read (a run: history, fault logs, store scan) and what they return (findings).

Checkers are pure functions ``check(run) -> CheckResult``; this module builds the indexes they
share, once, so each checker reads like the invariant it states.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..history import Record, read_history

_CLIENT_IN_TARGET = re.compile(r"[?&]client=([^&#]+)")
# Seconds a delivery may take, and how long after a fault its effects may still show.
GRACE_S = 5.0


@dataclass
class Finding:
    invariant: str
    message: str
    excerpt: list[Record] = field(default_factory=list)
    explained_by: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"invariant": self.invariant, "message": self.message, "excerpt": self.excerpt[:12],
                "explained_by": self.explained_by[:5]}


@dataclass
class CheckResult:
    name: str
    title: str
    weight: int
    violations: list[Finding] = field(default_factory=list)
    explained: list[Finding] = field(default_factory=list)  # losses an injected fault accounts for
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    checked: int = 0  # how many things were checked (operations, sessions, ...)

    @property
    def passed(self) -> bool:
        return self.skipped is None and not self.violations

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "weight": self.weight,
                "status": "skipped" if self.skipped else ("pass" if self.passed else "fail"),
                "skipped": self.skipped, "checked": self.checked, "notes": self.notes,
                "violations": [f.as_dict() for f in self.violations],
                "explained": [f.as_dict() for f in self.explained[:50]], "explained_count": len(self.explained)}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return read_history(path)


@dataclass
class Run:
    history: list[Record]
    faults: list[dict[str, Any]] = field(default_factory=list)
    invocations: list[dict[str, Any]] = field(default_factory=list)
    stream_failures: list[dict[str, Any]] = field(default_factory=list)
    store: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: Path) -> Run:
        store_path = run_dir / "store.json"
        info_path = run_dir / "run.json"
        return cls(history=_read_jsonl(run_dir / "history.jsonl"), faults=_read_jsonl(run_dir / "faults.jsonl"),
                   invocations=_read_jsonl(run_dir / "invocations.jsonl"),
                   stream_failures=_read_jsonl(run_dir / "stream-failures.jsonl"),
                   store=json.loads(store_path.read_text()) if store_path.exists() else None,
                   info=json.loads(info_path.read_text()) if info_path.exists() else {})

    def __post_init__(self) -> None:
        self.by_client: dict[str, list[Record]] = defaultdict(list)
        for record in self.history:
            self.by_client[record["client"]].append(record)
        for records in self.by_client.values():
            records.sort(key=lambda r: r["mono"])
        self.end_t = max((r["t"] for r in self.history), default=0)
        self.faults_by_client: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.proxy_wide: list[dict[str, Any]] = []
        for fault in self.faults:
            target = fault.get("target") or {}
            found = _CLIENT_IN_TARGET.search(str(target.get("conn", "")))
            if found:
                self.faults_by_client[found.group(1)].append(fault)
            else:
                self.proxy_wide.append(fault)
        self.last_fault_t = max((f["t"] + 1000 * _fault_span(f) for f in self.faults), default=0)

    # ---- questions checkers ask ------------------------------------------------------------
    def received(self, kind: str | None = None) -> list[Record]:
        return [r for r in self.history if r["op"] == "recv" and (kind is None or r["msg"].get("type") == kind)]

    def faults_near(self, client: str, start_t: float, end_t: float) -> list[dict[str, Any]]:
        """Faults on this client's connections, or on every connection, that could affect [start, end]."""
        grace = GRACE_S * 1000
        candidates = self.faults_by_client.get(client, []) + self.proxy_wide
        return [f for f in candidates
                if f["t"] <= end_t + grace and f["t"] + 1000 * _fault_span(f) >= start_t - grace]

    def open_intervals(self, client: str) -> list[tuple[int, float, float]]:
        """(conn, opened t, closed t) for each socket the client had open."""
        intervals = []
        opened: dict[int, float] = {}
        for record in self.by_client.get(client, []):
            if record["op"] in ("connect", "rejoin") and record["phase"] == "ok":
                opened[record["conn"]] = record["t"]
            elif record["op"] == "close" and record["phase"] in ("invoke", "info") and record["conn"] in opened:
                intervals.append((record["conn"], opened.pop(record["conn"]), record["t"]))
        intervals += [(conn, t, float("inf")) for conn, t in opened.items()]
        return intervals

    def connected_throughout(self, client: str, start_t: float, end_t: float) -> bool:
        return any(opened <= start_t and closed >= end_t for _, opened, closed in self.open_intervals(client))


def _fault_span(fault: dict[str, Any]) -> float:
    params = fault.get("params") or {}
    return float(params.get("seconds", 0)) + float(params.get("ms", 0)) / 1000 + float(
        params.get("max_wait_ms", 0)) / 1000


def excerpt(records: list[Record], limit: int = 12) -> list[Record]:
    """The smallest useful slice of history: the records themselves, in time order, capped."""
    return sorted(records, key=lambda r: (r["t"], r["mono"]))[:limit]

"""The history (``history.jsonl``): every observable client event, Jepsen style.

Each operation has an ``invoke`` record and one completion: ``ok``, ``fail``, or ``info`` when the
outcome cannot be known (the socket died after sending). Received frames are ``recv``/``ok``.
Fields are listed in docs/architecture.md (shared format 1).
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

Record = dict[str, Any]
# Fields whose values recur from record to record (kept once when read).
SHARED_FIELDS = ("client", "op", "phase", "member", "session", "pid")


class History:
    """Collects records from any number of clients of this process; thread- and greenlet-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Record] = []
        self.count = 0

    def record(self, client: str, conn: int, op: str, phase: str, **fields: Any) -> Record:
        entry: Record = {"t": int(time.time() * 1000), "mono": round(time.monotonic(), 6), "client": client,
                         "conn": conn, "op": op, "phase": phase}
        entry.update({k: v for k, v in fields.items() if v is not None})
        with self._lock:
            self._pending.append(entry)
            self.count += 1
        return entry

    def drain(self) -> list[Record]:
        """Records since the last drain, in the order they were made."""
        with self._lock:
            pending, self._pending = self._pending, []
        return pending


class HistoryFile:
    """Appends records as JSON lines; the master of a distributed run writes every worker's here.

    Records that arrive after ``close()`` are not written but counted in ``dropped``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()
        self.count = 0
        self.dropped = 0

    def write(self, records: Iterable[Record]) -> None:
        with self._lock:
            if self._file.closed:
                self.dropped += sum(1 for _ in records)
                return
            for record in records:
                self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
                self.count += 1
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_history(path: Path, on_error: Callable[[int, str], None] | None = None) -> list[Record]:
    """Every record of a history file; a torn last line (an interrupted run) is skipped.

    Also reads the run folder's other JSON-lines logs (faults, invocations, resources). Lines are
    parsed with orjson, and with the standard library's parser when orjson refuses one (``NaN``,
    lone surrogates), so what is read is what ``json.loads`` reads, but for one thing: an integer
    past 64 bits is read as a float (no file the harness writes has one). The
    strings most records repeat (``SHARED_FIELDS``, and a message's ``type`` and ``payload``,
    which every receiver of a fan-out gets) are kept once: about a third less memory."""
    collecting = gc.isenabled()
    gc.disable()  # records hold no cycles, and a million new dicts would set off ever longer full collections
    try:
        return _read_records(path, on_error)
    finally:
        if collecting:
            gc.enable()


def _read_records(path: Path, on_error: Callable[[int, str], None] | None) -> list[Record]:
    records = []
    shared: dict[str, str] = {}
    share = shared.setdefault
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                try:
                    record = json.loads(line)
                except ValueError:
                    if on_error:
                        on_error(number, line)
                    continue
            if type(record) is dict:
                for key in SHARED_FIELDS:
                    value = record.get(key)
                    if type(value) is str:
                        record[key] = share(value, value)
                message = record.get("msg")
                if type(message) is dict:
                    for key in ("type", "payload"):
                        value = message.get(key)
                        if type(value) is str:
                            message[key] = share(value, value)
            records.append(record)
    return records


class ShippingLedger:
    """The master's account of each worker's history: how many records the worker says it sent
    (a running total in every batch), how many arrived, and whether its last batch came."""

    def __init__(self) -> None:
        self._sent: dict[int, int] = {}
        self._arrived: dict[int, int] = {}
        self._final: set[int] = set()

    def expect(self, workers: Iterable[int]) -> None:
        """Workers whose last batch must arrive (every worker the master knew)."""
        for worker in workers:
            self._sent.setdefault(worker, 0)
            self._arrived.setdefault(worker, 0)

    def arrived(self, worker: int, count: int, *, sent: int, final: bool) -> None:
        self.expect([worker])
        self._arrived[worker] += count
        self._sent[worker] = max(self._sent[worker], sent)
        if final:
            self._final.add(worker)

    def complete(self) -> bool:
        return not self.missing()

    def missing(self) -> list[str]:
        """One line per worker whose history is not all here."""
        lines = []
        for worker in sorted(self._sent):
            sent, arrived = self._sent[worker], self._arrived[worker]
            if worker not in self._final:
                lines.append(f"worker {worker}'s last batch never arrived ({arrived} of its records did)")
            elif arrived < sent:
                lines.append(f"worker {worker}: {sent - arrived} of its {sent} records never arrived")
        return lines

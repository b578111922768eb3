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
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

Record = dict[str, Any]
# Fields whose values recur from record to record (kept once when read).
SHARED_FIELDS = ("client", "op", "phase", "member", "session", "pid")
# json's own encoder, made once (json.dumps with separators builds one per call, which cost more
# than the encoding itself).
_json_line = json.JSONEncoder(separators=(",", ":")).encode


def encode_line(record: Record) -> bytes:
    """One history line, without its newline: json.dumps(record, separators=(",", ":")) as UTF-8.

    orjson writes it (4-5x faster: three records per message); the line is json's own whenever
    orjson would write it differently: NaN and Infinity (orjson writes null: any line with a null
    is re-encoded), non-ASCII text (json escapes it), and what orjson refuses (integers beyond 64
    bits, lone surrogates, keys that are not str). Floats with an exponent are the one difference
    left, in form only: ``1e16`` for json's ``1e+16``, the same number when read back.
    """
    try:
        line = orjson.dumps(record)
    except TypeError:  # orjson.JSONEncodeError
        return _json_line(record).encode()
    if b"null" in line or not line.isascii():
        return _json_line(record).encode()
    return line


class History:
    """Collects records from any number of clients of this process; thread- and greenlet-safe.

    Recording takes no lock (a deque's append is atomic); draining takes one, so two drains never
    share out one stretch of records.
    """

    def __init__(self) -> None:
        self._drain_lock = threading.Lock()
        self._pending: deque[Record] = deque()

    def record(self, client: str, conn: int, op: str, phase: str, **fields: Any) -> Record:
        """One record; fields that are None are left out."""
        # mono in whole microseconds: as round(mono, 6) but without its decimal rounding, 3x the cost.
        entry: Record = {"t": int(time.time() * 1000), "mono": int(time.monotonic() * 1e6 + 0.5) / 1e6,
                         "client": client, "conn": conn, "op": op, "phase": phase}
        for key, value in fields.items():
            if value is not None:
                entry[key] = value
        self._pending.append(entry)
        return entry

    def drain(self) -> list[Record]:
        """Records since the last drain, in the order they were made."""
        with self._drain_lock:
            pending = self._pending
            return [pending.popleft() for _ in range(len(pending))]


class HistoryFile:
    """Appends records as JSON lines; the master of a distributed run writes every worker's here.

    Records that arrive after ``close()`` are not written but counted in ``dropped``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115
        self._lock = threading.Lock()
        self.count = 0
        self.dropped = 0

    def write(self, records: Iterable[Record]) -> None:
        with self._lock:
            if self._file.closed:
                self.dropped += sum(1 for _ in records)
                return
            lines = [encode_line(record) for record in records]
            if lines:
                self._file.write(b"\n".join(lines) + b"\n")
                self.count += len(lines)
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

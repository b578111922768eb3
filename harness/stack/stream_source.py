"""The DynamoDB stream event source: Lambda's event source mapping, rule for rule.

Honours ``BatchSize``, ``MaximumRetryAttempts``, ``MaximumRecordAgeInSeconds``,
``BisectBatchOnFunctionError`` (splitting does not count as a retry, as on Lambda),
``ReportBatchItemFailures`` (retry from the lowest failed sequence number) and the on-failure
destination: batches given up on are described, as Lambda would send them, in
``stream-failures.jsonl`` in the log folder. Records are delivered in order per shard.

With a checkpoint file (``StreamCheckpoints``), a source keeps its position there, as Lambda's
event source mapping keeps its checkpoint outside the function: a stack killed and started again
on the same store resumes after the last records it had handled, so records written before the
kill that it had not handled, and records written while it was down, are delivered after the
restart (a batch cut short by the kill is delivered again: at least once, as on Lambda).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .events import stream_event
from .logs import StackLog
from .runtime import Function, Invocation
from .streams import StreamReader


@dataclass(frozen=True)
class StreamMapping:
    function: Function
    stream_arn: str
    batch_size: int = 100
    max_retry_attempts: int = -1
    max_record_age: int = -1
    bisect_on_error: bool = False
    report_item_failures: bool = False
    on_failure: str | None = None
    starting_position: str = "LATEST"


class StreamCheckpoints:
    """Each stream's position in one JSON file: ``{stream ARN: {shard id: last sequence number
    handled}}``; a shard that is not named is read from its oldest record (TRIM_HORIZON).
    Thread-safe (the sources of one stack share it); each save replaces the file atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._positions: dict[str, dict[str, str]] = json.loads(path.read_text()) if path.exists() else {}
        if not isinstance(self._positions, dict):  # OSError, ValueError: the caller says which file is bad
            raise ValueError("not a JSON object of stream ARN -> {shard id: sequence number}")

    def position(self, stream_arn: str) -> dict[str, str] | None:
        """Where a previous run of this stream's source stopped, or None when it never ran."""
        with self._lock:
            saved = self._positions.get(stream_arn)
            return dict(saved) if saved is not None else None

    def save(self, stream_arn: str, position: dict[str, str]) -> None:
        with self._lock:
            self._positions[stream_arn] = dict(position)
            write_json_atomic(self.path, self._positions)


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as JSON in ``path``, atomically: a reader polling for the file never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as out:
        json.dump(data, out, indent=2)
    os.replace(out.name, path)


def _created(record: dict[str, Any]) -> float:
    stamp = record["dynamodb"].get("ApproximateCreationDateTime")
    if isinstance(stamp, datetime):
        return stamp.timestamp()
    return float(stamp) if stamp is not None else time.time()


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class StreamEventSource(threading.Thread):
    def __init__(self, mapping: StreamMapping, reader: StreamReader, log: StackLog,
                 failures_path: Path | None = None, poll_interval: float = 0.1,
                 stalled: Callable[[], float] | None = None, checkpoints: StreamCheckpoints | None = None) -> None:
        """``stalled()`` returns how many seconds the source must stop polling from now (the process
        seam's ``stream_stall``; 0 when it may poll); it is asked before every poll. ``checkpoints``:
        resume from, and keep, this source's position there (see the module's docstring)."""
        super().__init__(name=f"stream-{mapping.function.spec.logical_id}", daemon=True)
        self.mapping = mapping
        self.reader = reader
        self.log = log
        self.failures_path = failures_path
        self.poll_interval = poll_interval
        self.stalled = stalled or (lambda: 0.0)
        self.checkpoints = checkpoints
        self.stopping = threading.Event()
        # Set when something wrote to the store: poll now instead of at the next interval.
        self.wake = threading.Event()

    def start(self) -> None:
        # LATEST is fixed when the stack starts, not when the thread gets round to it, so a record
        # written right after start-up is never skipped.
        resumed = self.checkpoints.position(self.mapping.stream_arn) if self.checkpoints else None
        if resumed is not None:
            self.reader.last_seen = resumed
        elif self.mapping.starting_position == "LATEST":
            self.reader.skip_to_end()
        self._checkpoint()
        super().start()

    def _checkpoint(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.save(self.mapping.stream_arn, self.reader.last_seen)

    def run(self) -> None:
        while not self.stopping.is_set():
            pause = self.stalled()
            if pause > 0:  # records pile up in the stream meanwhile and are caught up with afterwards
                self.stopping.wait(pause)
                continue
            try:
                records = self.reader.poll()
            except Exception as exc:  # the store being down is a fault to survive, not a crash
                self.log.line("stream", f"reading {self.mapping.stream_arn} failed: {exc}")
                records = []
            if not records:
                self.wake.wait(self.poll_interval)
                self.wake.clear()
                continue
            size = self.mapping.batch_size
            for start in range(0, len(records), size):
                if self.stopping.is_set():
                    return
                self.deliver(records[start:start + size])
            if not self.stopping.is_set():  # every record polled was handled (or given up on)
                self._checkpoint()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def deliver(self, batch: list[dict[str, Any]]) -> None:
        """Process one batch to completion: success, or every record handed to the on-failure path."""
        pending: list[tuple[list[dict[str, Any]], int]] = [(batch, 0)]
        mapping = self.mapping
        while pending and not self.stopping.is_set():
            records, retries = pending.pop(0)
            if mapping.max_record_age >= 0:
                cutoff = time.time() - mapping.max_record_age
                expired = [r for r in records if _created(r) < cutoff]
                if expired:
                    self._give_up(expired, "RecordAgeExceeded", retries, None)
                    records = [r for r in records if _created(r) >= cutoff]
            if not records:
                continue
            invocation = mapping.function.invoke(stream_event(records, mapping.stream_arn))
            failed_from = self._failed_from(records, invocation)
            if failed_from is None:
                continue
            if invocation.failed and mapping.bisect_on_error and len(records) > 1:
                half = len(records) // 2
                pending[:0] = [(records[:half], retries), (records[half:], retries)]
                continue
            remaining = records[failed_from:]
            if 0 <= mapping.max_retry_attempts <= retries:
                self._give_up(remaining, "RetryAttemptsExhausted", retries, invocation)
                continue
            self.stopping.wait(min(2.0, 0.05 * 2**retries))
            pending.insert(0, (remaining, retries + 1))

    def _failed_from(self, records: list[dict[str, Any]], invocation: Invocation) -> int | None:
        """Index of the first record to retry, or None when the whole batch succeeded."""
        if invocation.failed:
            return 0
        if not self.mapping.report_item_failures:
            return None
        payload = invocation.payload if isinstance(invocation.payload, dict) else {}
        failures = payload.get("batchItemFailures") or []
        if not failures:
            return None
        sequence = [r["dynamodb"]["SequenceNumber"] for r in records]
        indices = []
        for failure in failures:
            identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            if identifier not in sequence:
                return 0  # an unknown or empty identifier fails the whole batch, as on Lambda
            indices.append(sequence.index(identifier))
        return min(indices)

    def _give_up(self, records: list[dict[str, Any]], condition: str, retries: int,
                 invocation: Invocation | None) -> None:
        first, last = records[0], records[-1]
        description = {
            "version": "1.0", "timestamp": _iso(time.time()),
            "requestContext": {"requestId": invocation.request_id if invocation else None,
                               "functionArn": self.mapping.function.spec.name, "condition": condition,
                               "approximateInvokeCount": retries + 1},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST",
                                "functionError": "Unhandled" if invocation and invocation.failed else None},
            "DDBStreamBatchInfo": {
                "shardId": first.get("shardId", "shard"), "streamArn": self.mapping.stream_arn,
                "startSequenceNumber": first["dynamodb"]["SequenceNumber"],
                "endSequenceNumber": last["dynamodb"]["SequenceNumber"],
                "approximateArrivalOfFirstRecord": _iso(_created(first)),
                "approximateArrivalOfLastRecord": _iso(_created(last)), "batchSize": len(records)},
            "destination": self.mapping.on_failure,
        }
        self.log.line("stream", f"gave up on {len(records)} record(s) ({condition}) of "
                                f"{self.mapping.function.spec.name}; described in stream-failures.jsonl")
        if self.failures_path is not None:
            with open(self.failures_path, "a", encoding="utf-8") as out:
                out.write(json.dumps(description) + "\n")

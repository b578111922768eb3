"""The stack's logs: one text log as CloudWatch would show it, and one JSON line per invocation.

``stack.log`` holds gateway events and every line a handler logs or prints, prefixed with the
function name and request id; ``invocations.jsonl`` holds one record per invocation (function,
request id, duration, error) for the report's function-health checker; an invocation an injected
fault cut short is left out of it (the fault log has it).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from .runtime import Invocation

current_invocation: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "current_invocation", default=None)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class StackLog:
    def __init__(self, directory: Path | None = None, echo: TextIO | None = None) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._text: TextIO | None = None
        self._records: TextIO | None = None
        self.echo = echo
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self._text = open(directory / "stack.log", "a", encoding="utf-8")  # noqa: SIM115
            self._records = open(directory / "invocations.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def _write(self, line: str) -> None:
        with self._lock:
            for stream in (self._text, self.echo):
                if stream is not None:
                    stream.write(line + "\n")
                    stream.flush()

    def line(self, component: str, message: str) -> None:
        self._write(f"{_stamp()} [{component}] {message}")

    def function_line(self, function: str, request_id: str, message: str) -> None:
        self._write(f"{_stamp()} [{function}] {request_id} {message}")

    def invocation(self, invocation: Invocation) -> None:
        error = invocation.error or {}
        if error:
            summary = f"{error.get('errorType')}: {error.get('errorMessage', '')}".strip()
            self.function_line(invocation.function, invocation.request_id, f"ERROR {summary}")
            # Python's runtime reports stackTrace (lines ending in newlines), Node's reports trace (bare lines).
            trace = "".join(error.get("stackTrace") or []) or "\n".join(error.get("trace") or [])
            for trace_line in trace.splitlines():
                self.function_line(invocation.function, invocation.request_id, trace_line)
        self.function_line(invocation.function, invocation.request_id, f"END RequestId: {invocation.request_id}")
        self.function_line(invocation.function, invocation.request_id,
                           f"REPORT RequestId: {invocation.request_id} Duration: {invocation.duration_ms:.2f} ms")
        record: dict[str, Any] = {"t": int(time.time() * 1000), "function": invocation.function,
                                  "request_id": invocation.request_id,
                                  "duration_ms": round(invocation.duration_ms, 3),
                                  "outcome": "ok" if not error else (
                                      "timeout" if error.get("errorType") == "Sandbox.Timedout" else "error")}
        if error:
            record["error"] = f"{error.get('errorType')}: {error.get('errorMessage', '')}"
        if invocation.queued_ms >= 1:
            record["queued_ms"] = round(invocation.queued_ms)
        with self._lock:
            if self._records is not None and not invocation.cut:
                self._records.write(json.dumps(record) + "\n")
                self._records.flush()

    def close(self) -> None:
        with self._lock:
            for stream in (self._text, self._records):
                if stream is not None:
                    stream.close()
            self._text = self._records = None


class _InvocationHandler(logging.Handler):
    def __init__(self, log: StackLog) -> None:
        super().__init__(logging.INFO)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        invocation = current_invocation.get()
        if invocation is None:
            return
        self.log.function_line(invocation[0], invocation[1], f"{record.levelname} {self.format(record)}")


class _RoutedStream:
    """stdout/stderr that sends what handlers print to the stack log, with function and request id."""

    def __init__(self, original: TextIO, log: StackLog) -> None:
        self.original = original
        self.log = log

    def write(self, text: str) -> int:
        invocation = current_invocation.get()
        if invocation is None:
            return self.original.write(text)
        for piece in text.splitlines():
            if piece.strip():
                self.log.function_line(invocation[0], invocation[1], piece)
        return len(text)

    def flush(self) -> None:
        self.original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


def route_function_output(log: StackLog) -> None:
    """Send handlers' logging and prints to ``log``, as Lambda sends them to CloudWatch."""
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h, _InvocationHandler)]
    root.addHandler(_InvocationHandler(log))
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    route_prints(log)


def route_prints(log: StackLog) -> None:
    """Cheap when already in place; called per invocation because a host (pytest, Locust) may have
    swapped ``sys.stdout`` since the stack started."""
    if not isinstance(sys.stdout, _RoutedStream):
        sys.stdout = _RoutedStream(sys.stdout, log)  # type: ignore[assignment]
    if not isinstance(sys.stderr, _RoutedStream):
        sys.stderr = _RoutedStream(sys.stderr, log)  # type: ignore[assignment]

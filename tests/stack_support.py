"""Helpers for tests that talk to a running local stack through real sockets."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websocket


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll with a deadline; returns the first truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def log_lines(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if kind is None or line.get("kind") == kind]


class Client:
    """A websocket-client socket that keeps every relay message it has read, for lookups by type."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.ws = websocket.create_connection(url, timeout=timeout)
        self.messages: list[dict[str, Any]] = []
        self.frames: list[Any] = []

    def send(self, body: dict[str, Any] | str) -> None:
        self.ws.send(body if isinstance(body, str) else json.dumps(body))

    def recv_frame(self) -> Any:
        frame = json.loads(self.ws.recv())
        self.frames.append(frame)
        if isinstance(frame, list):
            self.messages.extend(frame)
        return frame

    def wait_for(self, type_: str, count: int = 1) -> list[dict[str, Any]]:
        """Read frames until ``count`` messages of ``type_`` have arrived (the socket's timeout bounds it)."""
        while len(self.of(type_)) < count:
            self.recv_frame()
        return self.of(type_)

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if isinstance(m, dict) and m.get("type") == type_]

    def close(self) -> None:
        self.ws.close()

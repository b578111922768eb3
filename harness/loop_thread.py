"""An asyncio event loop in its own daemon thread, for servers used from synchronous code (tests,
Locust, the CLI): the local WebSocket API and the chaos proxy."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str, loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
                 ) -> None:
        self.name = name
        self.loop = loop_factory()
        self._thread: threading.Thread | None = None

    def start(self, setup: Callable[[], Awaitable[T]]) -> T:
        """Run ``setup`` on the loop (e.g. start listening), keep the loop running, return its result;
        an exception from ``setup`` is raised here, in the caller's thread."""
        ready = threading.Event()
        outcome: list[Any] = []

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                outcome.append(self.loop.run_until_complete(setup()))
            except BaseException as exc:
                outcome.append(exc)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        ready.wait()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def call(self, coroutine: Awaitable[T], timeout: float = 30) -> T:
        """Run a coroutine on the loop from another thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self, shutdown: Awaitable[Any] | None = None) -> None:
        """Run ``shutdown`` on the loop (if given), then stop the loop and its thread."""
        if self._thread is None:
            return
        if shutdown is not None:
            self.call(shutdown)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

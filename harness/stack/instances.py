"""A function as Lambda runs it: a pool of instances, each running one invocation at a time.

Each concurrency slot is one *instance*, an execution environment in its own process (a ``node``
process for ``nodejs*`` functions, a Python worker for ``python3.x`` ones), started at the slot's
first invocation (a cold start) and reused while it stays healthy, so module state is per
instance, as on Lambda. An instance whose invocation timed out, or that crashed or failed to
initialise, is killed, and the slot gets a new one at its next invocation (Lambda discards the
execution environment too). At most ``concurrency`` invocations run at once; more wait for a slot
(Lambda would throttle them instead). The runtimes (``node_runtime``, ``python_runtime``) only say
how to start an instance and talk to it (``Instance``).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from .events import to_json
from .logs import StackLog
from .runtime import FunctionSpec, Invocation, time_limit, timed_out


class HostExited(Exception):
    """The instance's process ended while an invocation was in flight (or could not start)."""


def wait_for_reply(replies: Any, matches: Callable[[Any], bool], deadline: float, exited: Callable[[], str]) -> Any:
    """The first message on ``replies`` (a queue its reader fills; None once the process ended) that
    ``matches``: ``TimeoutError`` at ``deadline`` (monotonic), ``HostExited(exited())`` on None."""
    while True:
        try:
            reply = replies.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError from None
        if reply is None:
            raise HostExited(exited())
        if matches(reply):
            return reply


class Instance(Protocol):
    request_id: str | None  # the invocation it runs now, for output it prints outside any invocation

    def call(self, request_id: str, event: Any, context: dict[str, Any], limit: float) -> dict[str, Any]:
        """The result message of one invocation: ``{"payload": ...}`` or ``{"error": {...}}``, and
        ``"fatal": True`` when the instance must not be reused; ``TimeoutError`` after ``limit``
        seconds, ``HostExited`` if the process ended first."""

    def alive(self) -> bool: ...

    def kill(self) -> None: ...


class InstanceFunction:
    """The ``Function`` interface of ``runtime.py`` over up to ``concurrency`` instances made by
    ``spawn`` (called without the pool's lock held, at a slot's first invocation)."""

    def __init__(self, spec: FunctionSpec, log: StackLog, spawn: Callable[[], Instance], concurrency: int = 16,
                 region: str = "us-east-1", account: str = "000000000000") -> None:
        self.spec = spec
        self.log = log
        self.spawn = spawn
        self.region = region
        self.account = account
        self.slots = threading.BoundedSemaphore(concurrency)
        self._idle: list[Instance] = []
        self._live: set[Instance] = set()
        self._lock = threading.Lock()
        self._closed = False

    def _take(self) -> Instance:
        with self._lock:
            if self._closed:
                raise HostExited("the stack is stopping")
            while self._idle:
                instance = self._idle.pop()
                if instance.alive():
                    return instance
                self._live.discard(instance)
        instance = self.spawn()
        with self._lock:
            self._live.add(instance)
            closed = self._closed
        if closed:  # the stack stopped while it started
            self._give_back(instance, healthy=False)
            raise HostExited("the stack is stopping")
        return instance

    def _give_back(self, instance: Instance, healthy: bool) -> None:
        instance.request_id = None
        with self._lock:
            if healthy and not self._closed:
                self._idle.append(instance)
                return
            self._live.discard(instance)
        instance.kill()

    def context(self, request_id: str, limit: float) -> dict[str, Any]:
        """The Lambda context's fields, as the Node.js runtime names them (the hosts build their
        context objects from these)."""
        return {"awsRequestId": request_id, "functionName": self.spec.name, "memoryLimitInMB": self.spec.memory_mb,
                "invokedFunctionArn": f"arn:aws:lambda:{self.region}:{self.account}:function:{self.spec.name}",
                "logGroupName": f"/aws/lambda/{self.spec.name}",
                "logStreamName": f"local/[$LATEST]{request_id[:8]}",
                "deadlineMs": int(time.time() * 1000 + limit * 1000)}

    def invoke(self, event: dict[str, Any], queued_ms: float = 0.0) -> Invocation:
        request_id = str(uuid.uuid4())
        invocation = Invocation(request_id, self.spec.name)
        self.log.function_line(self.spec.name, request_id, f"START RequestId: {request_id} Version: $LATEST")
        limit, cut = time_limit(self.spec)
        started = time.monotonic()
        try:
            payload = json.loads(to_json(event))
            with self.slots:
                invocation.queued_ms = queued_ms + (time.monotonic() - started) * 1000
                started = time.monotonic()
                instance = self._take()
                healthy = False
                try:
                    reply = instance.call(request_id, payload, self.context(request_id, limit), limit)
                    healthy = not reply.get("fatal")
                    if "error" in reply:
                        invocation.error = reply["error"]
                    else:
                        invocation.payload = reply.get("payload")
                except TimeoutError:
                    invocation.cut = cut
                    invocation.error = timed_out(limit)
                except HostExited as exc:
                    invocation.error = {"errorType": "Runtime.ExitError",
                                        "errorMessage": f"RequestId: {request_id} Error: {exc}"}
                finally:
                    self._give_back(instance, healthy)
        except (OSError, ValueError, HostExited) as exc:
            invocation.error = {"errorType": "Runtime.ExitError",
                                "errorMessage": f"{self.spec.runtime or 'the runtime'} could not run: {exc}"}
        invocation.duration_ms = (time.monotonic() - started) * 1000
        self.log.invocation(invocation)
        return invocation

    def close(self) -> None:
        with self._lock:
            self._closed = True
            instances, self._idle, self._live = list(self._live), [], set()
        for instance in instances:
            instance.kill()

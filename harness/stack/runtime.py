"""Running Lambda functions: in this process by import (default), or over the Lambda Invoke API.

In-process, each function gets a pool of ``concurrency`` slots: one invocation per slot at a
time, as Lambda runs one invocation per warm instance. Where this differs from Lambda, plainly:
- module state is shared by all slots of a function (one import), where Lambda keeps it per
  instance; a relay that caches per-instance state sees one cache here;
- environment variables are process-wide, so functions whose variables disagree cannot share
  the process (the stack refuses them with a one-line error; serve one over the Invoke API);
- a handler that overruns its timeout is reported failed at the deadline, as on Lambda, but its
  thread runs on to the end (Lambda would freeze it): side effects after the deadline happen.
Lambda runs one invocation per process; here a function's threads share one process with other
functions, so work a handler hands to a ``concurrent.futures`` pool keeps the handler's invocation
context (its function and request id in the logs, the fault seams' keys).
Every event is sent through JSON first, so handlers only ever see what Lambda would give them.
"""

from __future__ import annotations

import contextvars
import importlib
import json
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .events import to_json
from .logs import StackLog, current_invocation, route_prints

# Seconds after which the invocation is reported timed out although its timeout is longer (the
# invocation seam's ``timeout`` fault sets it).
invocation_cut: contextvars.ContextVar[float | None] = contextvars.ContextVar("invocation_cut", default=None)
_plain_submit = ThreadPoolExecutor.submit


def _submit_in_context(self: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    if current_invocation.get() is None:
        return _plain_submit(self, fn, *args, **kwargs)
    return _plain_submit(self, contextvars.copy_context().run, fn, *args, **kwargs)


def timed_out(limit: float) -> dict[str, str]:
    """The error Lambda reports for an invocation that overran its ``limit`` (seconds): ``Sandbox.Timedout``
    with "Task timed out after N.NN seconds" (as the Lambda runtime's log and the Invoke API's
    function error give it)."""
    return {"errorType": "Sandbox.Timedout", "errorMessage": f"Task timed out after {limit:.2f} seconds"}


def time_limit(spec: FunctionSpec) -> tuple[float, bool]:
    """Seconds an invocation of ``spec`` may run now, and whether an injected fault (``invocation_cut``)
    set it shorter than the function's own timeout."""
    cut = invocation_cut.get()
    return (spec.timeout, False) if cut is None or cut >= spec.timeout else (cut, True)


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    name: str
    handler: str
    code_dir: Path
    environment: dict[str, str]
    timeout: float = 3.0
    memory_mb: int = 128
    layer_dirs: tuple[Path, ...] = ()  # each layer's python/ folder, after code_dir on the import path
    runtime: str = ""  # the template's Runtime (python3.12, nodejs20.x, ...); "" when it names none


@dataclass
class Invocation:
    request_id: str
    function: str
    payload: Any = None
    error: dict[str, Any] | None = None
    duration_ms: float = 0.0
    cut: bool = False  # reported timed out by an injected fault, not by the handler's own timeout

    @property
    def failed(self) -> bool:
        return self.error is not None


class Function(Protocol):
    spec: FunctionSpec

    def invoke(self, event: dict[str, Any]) -> Invocation: ...


class LambdaContext:
    def __init__(self, spec: FunctionSpec, request_id: str, region: str, account: str) -> None:
        self.function_name = spec.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account}:function:{spec.name}"
        self.memory_limit_in_mb = spec.memory_mb
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{spec.name}"
        self.log_stream_name = f"local/[$LATEST]{request_id[:8]}"
        self._deadline = time.monotonic() + spec.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class InProcessFunction:
    def __init__(self, spec: FunctionSpec, log: StackLog, concurrency: int = 16, region: str = "us-east-1",
                 account: str = "000000000000") -> None:
        self.spec = spec
        self.log = log
        self.region = region
        self.account = account
        self.slots = threading.BoundedSemaphore(concurrency)
        self.executor = ThreadPoolExecutor(max_workers=concurrency * 2, thread_name_prefix=spec.logical_id)
        self._handler: Callable[[dict[str, Any], Any], Any] | None = None
        self._import_lock = threading.Lock()
        ThreadPoolExecutor.submit = _submit_in_context  # type: ignore[method-assign]

    def _load(self) -> Callable[[dict[str, Any], Any], Any]:
        with self._import_lock:
            if self._handler is None:
                module_name, _, attribute = self.spec.handler.rpartition(".")
                for folder in map(str, (*reversed(self.spec.layer_dirs), self.spec.code_dir)):
                    if folder not in sys.path:
                        sys.path.insert(0, folder)
                module = importlib.import_module(module_name)
                self._handler = getattr(module, attribute)
            return self._handler

    def _run(self, handler: Callable[..., Any], event: dict[str, Any], context: LambdaContext) -> Any:
        current_invocation.set((self.spec.name, context.aws_request_id))
        route_prints(self.log)
        try:
            return json.loads(to_json(handler(event, context)))
        finally:
            self.slots.release()

    def invoke(self, event: dict[str, Any]) -> Invocation:
        request_id = str(uuid.uuid4())
        invocation = Invocation(request_id, self.spec.name)
        self.log.function_line(self.spec.name, request_id, f"START RequestId: {request_id} Version: $LATEST")
        started = time.monotonic()
        try:
            handler = self._load()
            payload = json.loads(to_json(event))
            self.slots.acquire()
            context = LambdaContext(self.spec, request_id, self.region, self.account)
            future = self.executor.submit(contextvars.copy_context().run, self._run, handler, payload, context)
            # Wait first, then look: a handler may itself raise TimeoutError, which must not pass for
            # the runtime's timeout (concurrent.futures.TimeoutError is the same class).
            limit, cut = time_limit(self.spec)
            done, _ = wait([future], timeout=limit)
            if not done:
                invocation.cut = cut
                invocation.error = timed_out(limit)
            else:
                invocation.payload = future.result()
        except Exception as exc:
            invocation.error = {"errorType": type(exc).__name__, "errorMessage": str(exc),
                                "stackTrace": traceback.format_exception(exc)}
        invocation.duration_ms = (time.monotonic() - started) * 1000
        self.log.invocation(invocation)
        return invocation

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class RemoteFunction:
    """A function served by anything that speaks the Lambda Invoke API (``sam local start-lambda``,
    the runtime interface emulator, a handler in another language).

    Its timeout is enforced here, as Lambda does: an invocation with no answer by the deadline
    (the template's ``Timeout``, or an injected cut) is reported ``Sandbox.Timedout`` at the
    deadline; the request itself is left to finish (or fail) in its thread, which gives up
    ``_GRACE`` seconds later. ``concurrency`` invocations at a time, as in-process."""

    _GRACE = 5.0  # seconds a request may outlive its deadline before its thread stops waiting

    def __init__(self, spec: FunctionSpec, endpoint: str, log: StackLog, concurrency: int = 16) -> None:
        self.spec = spec
        self.endpoint = endpoint
        self.log = log
        self.executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"{spec.logical_id}-remote")

    def _call(self, request: urllib.request.Request, timeout: float) -> tuple[bytes, str | None, str | None]:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return (response.read(), response.headers.get("x-amzn-RequestId"),
                    response.headers.get("X-Amz-Function-Error"))

    def invoke(self, event: dict[str, Any]) -> Invocation:
        url = f"{self.endpoint.rstrip('/')}/2015-03-31/functions/{self.spec.name}/invocations"
        request = urllib.request.Request(url, data=to_json(event).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        invocation = Invocation(str(uuid.uuid4()), self.spec.name)
        started = time.monotonic()
        limit, cut = time_limit(self.spec)
        try:
            future = self.executor.submit(self._call, request, limit + self._GRACE)
            done, _ = wait([future], timeout=limit)
            if not done:
                invocation.cut = cut
                invocation.error = timed_out(limit)
            else:
                body, request_id, function_error = future.result()
                invocation.request_id = request_id or invocation.request_id
                decoded = json.loads(body) if body else None
                if function_error:
                    invocation.error = decoded if isinstance(decoded, dict) else {"errorType": function_error}
                else:
                    invocation.payload = decoded
        except (urllib.error.URLError, OSError, ValueError) as exc:
            invocation.error = {"errorType": "InvokeFailed", "errorMessage": f"{url}: {exc}"}
        invocation.duration_ms = (time.monotonic() - started) * 1000
        self.log.invocation(invocation)
        return invocation

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

"""What every way of running a Lambda function shares, and functions served over the Invoke API.

A function is anything with a ``spec`` and ``invoke(event) -> Invocation``: the template's
``python3.x`` functions run in worker processes (``python_runtime``), ``nodejs*`` ones in node
processes (``node_runtime``), both one process per concurrency slot (``instances``); a function
served elsewhere is reached over the Lambda Invoke API (``RemoteFunction``, below). Every event
is sent through JSON first, so handlers only ever see what Lambda would give them.
"""

from __future__ import annotations

import contextvars
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .events import to_json
from .logs import StackLog

# Seconds after which the invocation is reported timed out although its timeout is longer (the
# invocation seam's ``timeout`` fault sets it).
invocation_cut: contextvars.ContextVar[float | None] = contextvars.ContextVar("invocation_cut", default=None)
# Host variables a function's process needs besides its environment (Lambda's is clean).
_PASSED_THROUGH = ("PATH", "HOME", "LANG", "TMPDIR")


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
    duration_ms: float = 0.0  # from the moment it had an instance (Lambda's Duration), in ms
    queued_ms: float = 0.0  # waiting for a free instance before that (the local stack's own lag), in ms
    cut: bool = False  # reported timed out by an injected fault, not by the handler's own timeout

    @property
    def failed(self) -> bool:
        return self.error is not None


def passed_through() -> dict[str, str]:
    """The few variables of this process a function's process keeps (``PATH``, ``HOME``, ...)."""
    return {key: os.environ[key] for key in _PASSED_THROUGH if key in os.environ}


def lambda_variables(spec: FunctionSpec, region: str) -> dict[str, str]:
    """The variables Lambda itself sets in a function's environment (reserved: they win over the
    template's). https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime"""
    return {"AWS_LAMBDA_FUNCTION_NAME": spec.name, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime or 'python3.12'}", "LAMBDA_TASK_ROOT": str(spec.code_dir),
            "AWS_REGION": region, "TZ": ":UTC"}


class Function(Protocol):
    """``invoke(event, queued_ms=...)``: ``queued_ms`` is how long the caller already held the event
    waiting for a free instance (the gateway's queue); the function adds its own wait and reports the
    sum as ``Invocation.queued_ms``. Lambda never queues a synchronous invocation (it starts another
    instance or throttles), so any wait is the local stack falling behind, not the relay."""

    spec: FunctionSpec

    def invoke(self, event: dict[str, Any], queued_ms: float = 0.0) -> Invocation: ...


class RemoteFunction:
    """A function served by anything that speaks the Lambda Invoke API (``sam local start-lambda``,
    the runtime interface emulator, a handler in another language).

    Its timeout is enforced here, as Lambda does: an invocation with no answer by the deadline
    (the template's ``Timeout``, or an injected cut) is reported ``Sandbox.Timedout`` at the
    deadline; the request itself is left to finish (or fail) in its thread, which gives up
    ``_GRACE`` seconds later. ``concurrency`` invocations at a time, as for the local runtimes."""

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

    def invoke(self, event: dict[str, Any], queued_ms: float = 0.0) -> Invocation:
        url = f"{self.endpoint.rstrip('/')}/2015-03-31/functions/{self.spec.name}/invocations"
        request = urllib.request.Request(url, data=to_json(event).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        invocation = Invocation(str(uuid.uuid4()), self.spec.name, queued_ms=queued_ms)
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

"""Inside one instance of a ``python3.x`` function: the worker process ``python_runtime`` starts.

``serve(connection, config)`` runs in a process forked from a server that has imported boto3 and
this module already (so a cold start costs a fork, the handler's import and its clients, not the
interpreter's start). It makes the process look like a Lambda execution environment: the
function's environment only (``config["environment"]``), its code and layers first on the import
path, handler output sent to the stack's log with the request id. Then it runs one invocation at
a time, as Lambda's Python runtime does: the handler's result is JSON-encoded as that runtime
encodes it (``Decimal`` as a number; anything else JSON has no type for is
``Runtime.MarshalError``), an exception is ``{errorType, errorMessage, stackTrace}``, a module or
handler that cannot be loaded is ``Runtime.ImportModuleError`` / ``Runtime.HandlerNotFound``.

The seams behind the gateway work here through the stack's plan, asked over the connection
(``RemotePlan``): the store and management seams (``call_faults``) and the process seam's
``clock_skew`` are installed in this process, and their decisions, counts and fault-log lines are
the stack's, so they are the same as if the handler ran in the stack's own process. This process
also tells the stack when a handler wrote to DynamoDB (its stream pollers look at once), and hands
``@connections`` requests for the stack's own management API straight to it (``ConnectionsShortcut``).

Messages (pickled tuples over a ``multiprocessing`` connection), stack -> worker:
``("invoke", request_id, event, context, key, frozen_at)``, ``("reply", rpc_id, value)``;
worker -> stack: ``("result", request_id, {"payload": ...} | {"error": {...}, "fatal": bool})``,
``("log", request_id | None, text)``, ``("rpc", rpc_id, method, args)``,
``("record", rule, target, key)``, ``("wrote",)``.
"""

from __future__ import annotations

import contextvars
import decimal
import importlib
import itertools
import json
import os
import queue
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.httpsession import URLLib3Session

from ..faults.plan import Rule, delay_s
from . import clock
from .call_faults import CallFaults, aws_response
from .invocation_keys import frozen_at, invocation_calls, invocation_key
from .logs import current_invocation, route_function_output

_WRITE_OPERATIONS = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem",
                     "ExecuteStatement", "ExecuteTransaction", "BatchExecuteStatement"}
_plain_submit = ThreadPoolExecutor.submit


class _Channel:
    """The connection to the stack: sends from any thread, answers to this process's questions
    matched by id, invocations queued for the main thread. The stack gone means this process ends."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.invocations: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._send_lock = threading.Lock()
        self._pending: dict[int, list[Any]] = {}
        self._ids = itertools.count()
        threading.Thread(target=self._read, name="stack-channel", daemon=True).start()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self.connection.send(message)

    def ask(self, method: str, *args: Any) -> Any:
        waiter: list[Any] = [threading.Event(), None]
        rpc_id = next(self._ids)
        self._pending[rpc_id] = waiter
        self.send(("rpc", rpc_id, method, args))
        waiter[0].wait()
        return waiter[1]

    def _read(self) -> None:
        try:
            while True:
                message = self.connection.recv()
                if message[0] == "reply":
                    waiter = self._pending.pop(message[1])
                    waiter[1] = message[2]
                    waiter[0].set()
                else:
                    self.invocations.put(message)
        except (EOFError, OSError):
            os._exit(0)  # the stack stopped or died: an instance outlives nothing


class RemotePlan:
    """The part of ``FaultPlan`` the seams in this process use, answered by the stack's plan."""

    def __init__(self, channel: _Channel, seed: int) -> None:
        self.channel = channel
        self.seed = seed

    def pick(self, seam: str, facts: dict[str, Any], key: tuple[Any, ...],
             types: tuple[str, ...] | None = None) -> Rule | None:
        return self.channel.ask("pick", seam, facts, key, types)

    def ongoing(self, kind: str) -> Rule | None:
        return self.channel.ask("ongoing", kind)

    def record(self, rule: Rule, target: dict[str, Any], key: tuple[Any, ...]) -> None:
        self.channel.send(("record", rule, target, key))

    def delay_s(self, rule: Rule, key: tuple[Any, ...]) -> float:
        return delay_s(rule, self.seed, key)


class ChannelLog:
    """What ``logs.route_function_output`` needs of a ``StackLog``: lines go to the stack's log."""

    def __init__(self, channel: _Channel) -> None:
        self.channel = channel

    def function_line(self, function: str, request_id: str, message: str) -> None:
        self.channel.send(("log", request_id, message))

    def line(self, component: str, message: str) -> None:
        self.channel.send(("log", None, message))


class _ChannelStream:
    """stdout/stderr of an instance: what is written outside any invocation (the init phase: module
    imports) also goes to the stack's log, as Lambda sends it to the function's log stream."""

    def __init__(self, channel: _Channel) -> None:
        self.channel = channel

    def write(self, text: str) -> int:
        if text.strip():
            self.channel.send(("log", None, text))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class ConnectionsShortcut:
    """``@connections`` requests to the stack's own management API (its HTTP or HTTPS authority),
    answered by the stack over the connection instead of over a socket. It is botocore's transport
    (``URLLib3Session.send``, which botocore calls only when no ``before-send`` handler, such as the
    management seam's, answered first), so botocore still builds, signs, retries and parses every
    call. Requests to any other endpoint are sent as usual."""

    def __init__(self, channel: _Channel, authorities: list[str]) -> None:
        self.channel = channel
        self.authorities = set(authorities)

    def install(self) -> None:
        plain_send = URLLib3Session.send

        def send(session: URLLib3Session, request: Any) -> Any:
            if urlsplit(request.url).netloc in self.authorities:
                return self(request)
            return plain_send(session, request)

        URLLib3Session.send = send  # type: ignore[method-assign]

    def __call__(self, request: Any) -> Any:
        parts = urlsplit(request.url)
        body = request.body or b""
        if hasattr(body, "read"):
            body = body.read()
        elif isinstance(body, str):
            body = body.encode()
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        status, headers, data = self.channel.ask("connections", request.method, path, bytes(body))
        return aws_response(request.url, status, headers, data)


def _submit_in_context(self: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Work a handler hands to a ``concurrent.futures`` pool keeps its invocation's context (request
    id in the logs, the seams' keys), as it would on Lambda, where the process is the invocation's."""
    if current_invocation.get() is None:
        return _plain_submit(self, fn, *args, **kwargs)
    return _plain_submit(self, contextvars.copy_context().run, fn, *args, **kwargs)


class LambdaContext:
    """The handler's ``context``, as Lambda's Python runtime gives it."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.function_name = fields["functionName"]
        self.function_version = "$LATEST"
        self.invoked_function_arn = fields["invokedFunctionArn"]
        self.memory_limit_in_mb = fields["memoryLimitInMB"]
        self.aws_request_id = fields["awsRequestId"]
        self.log_group_name = fields["logGroupName"]
        self.log_stream_name = fields["logStreamName"]
        self._deadline_ms = fields["deadlineMs"]

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self._deadline_ms - clock.real_time() * 1000))


def _decimal_as_number(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _error(exc: BaseException, error_type: str | None = None, message: str | None = None) -> dict[str, Any]:
    return {"errorType": error_type or type(exc).__name__, "errorMessage": message or str(exc),
            "stackTrace": traceback.format_exception(exc)}


def _load(handler: str) -> Callable[..., Any]:
    """The handler ``module.attribute``; ``_LoadError`` with Lambda's error for what went wrong."""
    module_name, _, attribute = handler.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise _LoadError(_error(exc, "Runtime.ImportModuleError",
                                f"Unable to import module '{module_name}': {exc}")) from None
    found = getattr(module, attribute, None)
    if not callable(found):
        raise _LoadError({"errorType": "Runtime.HandlerNotFound",
                          "errorMessage": f"Handler '{attribute}' missing on module '{module_name}'"})
    return found


class _LoadError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["errorMessage"])
        self.error = error


def _import_path(config: dict[str, Any]) -> list[str]:
    """The function's code and layers first, then the interpreter's own libraries (boto3 comes with
    Lambda's Python runtime too), and the harness; nothing else of the stack's import path."""
    keep = [p for p in sys.path if p.startswith((sys.prefix, sys.base_prefix, sys.exec_prefix))]
    harness_root = str(Path(__file__).resolve().parents[2])
    return [config["code_dir"], *config["layer_dirs"], *keep, harness_root]


def serve(connection: Any, config: dict[str, Any]) -> None:
    """The worker's life: become the function's execution environment, then run invocations until
    the stack closes the connection. ``config``: ``environment``, ``code_dir``, ``layer_dirs``,
    ``handler``, ``function``, ``seed`` (None without a fault plan), ``hook_calls``,
    ``clock_skew``, ``tables``, ``management`` (the stack's management API authorities)."""
    os.environ.clear()
    os.environ.update(config["environment"])
    time.tzset()
    sys.path[:] = _import_path(config)
    os.chdir(config["code_dir"])
    channel = _Channel(connection)
    sys.stdout = sys.stderr = _ChannelStream(channel)  # type: ignore[assignment]
    route_function_output(ChannelLog(channel))  # type: ignore[arg-type]
    ThreadPoolExecutor.submit = _submit_in_context  # type: ignore[method-assign]
    boto3.setup_default_session()
    events = boto3.DEFAULT_SESSION.events
    plan = RemotePlan(channel, config["seed"]) if config["seed"] is not None else None
    if plan is not None and config["hook_calls"]:
        CallFaults(plan, config["tables"]).install(events)  # type: ignore[arg-type]
    if plan is not None and config["clock_skew"]:
        clock.install()
        clock.clock_plan.set(plan)  # type: ignore[arg-type]
    ConnectionsShortcut(channel, config["management"]).install()
    events.register("after-call.dynamodb",
                    lambda model, **_: channel.send(("wrote",)) if model.name in _WRITE_OPERATIONS else None)
    handler: Callable[..., Any] | None = None
    while True:
        _, request_id, event, fields, key, frozen = channel.invocations.get()
        current_invocation.set((config["function"], request_id))
        invocation_key.set(key)
        invocation_calls.set(Counter())
        frozen_at.set(frozen)
        reply: dict[str, Any]
        try:
            if handler is None:
                handler = _load(config["handler"])
            result = handler(event, LambdaContext(fields))
            try:
                reply = {"payload": json.loads(json.dumps(result, default=_decimal_as_number))}
            except (TypeError, ValueError) as exc:
                reply = {"error": {"errorType": "Runtime.MarshalError",
                                   "errorMessage": f"Unable to marshal response: {exc}"}}
        except _LoadError as exc:
            reply = {"error": exc.error, "fatal": True}
        except Exception as exc:
            reply = {"error": _error(exc)}
        current_invocation.set(None)
        channel.send(("result", request_id, reply))

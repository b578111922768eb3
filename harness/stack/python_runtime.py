"""Running ``python3.x`` functions: one worker process per concurrency slot (``instances``).

Each instance is a process forked from a fork server that has imported boto3 and the worker's
code once (``fork_server``), so a cold start is a fork plus the handler's own import and clients,
and runs ``python_worker.serve``: the function's environment only (the template's
variables, the stack's endpoints, Lambda's own variables), its code and layers on the import path,
one invocation at a time, module state per instance. Functions may set different values for the
same variable. Handler output reaches ``stack.log`` with the request id.

The seams reach into the worker: the store and management seams and ``clock_skew`` run there,
asking this process's plan (``FaultPlan.pick``/``ongoing``/``record``) over the connection, so
decisions, counts and the fault log are the stack's; an invocation that overruns its timeout (or an
injected cut) is reported ``Sandbox.Timedout`` at the deadline and its process is killed, as Lambda
stops a timed-out execution environment, so nothing of it runs on. A handler's DynamoDB writes wake
the stream event sources (``on_write``), and its ``@connections`` calls to this stack are answered
by ``connections`` without a socket (botocore still builds, signs and parses them).

Where this differs from Lambda: the process is not frozen between invocations (threads a handler
started run on); ``/tmp`` is the machine's; memory is not limited to ``MemorySize``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from ..faults.plan import FaultPlan
from .fork_server import ForkServer, ForkServerError
from .instances import HostExited, InstanceFunction, wait_for_reply
from .invocation_keys import frozen_at, invocation_key
from .logs import StackLog
from .management_api import Connections, answer
from .runtime import FunctionSpec, lambda_variables, passed_through


class _Worker:
    """One instance's process, seen from the stack."""

    def __init__(self, function: PythonFunction) -> None:
        self.function = function
        self.log = function.log
        self.request_id: str | None = None
        self.replies: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._send_lock = threading.Lock()
        self._ended = threading.Event()
        try:
            self.pid, self.connection = function.fork_server.spawn(function.worker_config())
        except ForkServerError as exc:
            raise HostExited(str(exc)) from None
        threading.Thread(target=self._read, name=f"{function.spec.name}-instance", daemon=True).start()

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self.connection.send(message)

    def _read(self) -> None:
        function = self.function
        try:
            while True:
                message = self.connection.recv()
                kind = message[0]
                if kind == "result":
                    self.replies.put(message)
                elif kind == "log":
                    request_id = message[1] or self.request_id
                    for piece in message[2].splitlines():
                        if not piece.strip():
                            continue
                        if request_id:
                            self.log.function_line(function.spec.name, request_id, piece)
                        else:
                            self.log.line(function.spec.name, piece)
                elif kind == "rpc":
                    self._send(("reply", message[1], function.answer(message[2], message[3])))
                elif kind == "record" and function.plan is not None:
                    function.plan.record(*message[1:])
                elif kind == "wrote" and function.on_write is not None:
                    function.on_write()
        except (EOFError, OSError):
            pass
        self._ended.set()
        self.replies.put(None)

    def call(self, request_id: str, event: Any, context: dict[str, Any], limit: float) -> dict[str, Any]:
        self.request_id = request_id
        deadline = time.monotonic() + limit
        try:
            self._send(("invoke", request_id, event, context, invocation_key.get(), frozen_at.get()))
        except OSError as exc:
            raise HostExited(self._exit_message()) from exc
        return wait_for_reply(self.replies, lambda reply: reply[1] == request_id, deadline, self._exit_message)[2]

    def _exit_message(self) -> str:
        return "Runtime exited without providing a reason"  # Lambda's words when the process just ends

    def alive(self) -> bool:
        return not self._ended.is_set()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.connection.close()


class PythonFunction(InstanceFunction):
    """A ``python3.x`` function (``instances.InstanceFunction``) whose instances are worker processes.

    ``fork_server``: where its instances are forked from (one per stack).
    ``environment``: what the stack gives every function (endpoints, region, credentials); it wins
    over the template's variables, and Lambda's own are added. ``plan``/``tables``: the seams'
    rules and the template's tables (logical id -> name), when the stack has faults;
    ``hook_calls``/``clock_skew``: which seams the workers install. ``connections``/``management``:
    the gateway's sockets and the management API's authorities (``host:port``) whose
    ``@connections`` calls are answered directly. ``on_write``: called when a handler wrote to
    DynamoDB.
    """

    def __init__(self, spec: FunctionSpec, log: StackLog, environment: dict[str, str], fork_server: ForkServer,
                 concurrency: int = 16, region: str = "us-east-1", account: str = "000000000000", *,
                 plan: FaultPlan | None = None,
                 tables: dict[str, str] | None = None, hook_calls: bool = False, clock_skew: bool = False,
                 connections: Connections | None = None, management: tuple[str, ...] = (),
                 on_write: Callable[[], None] | None = None) -> None:
        super().__init__(spec, log, lambda: _Worker(self), concurrency, region, account)
        self.fork_server = fork_server
        self.environment = {**passed_through(), **spec.environment, **environment,
                            **lambda_variables(spec, region)}
        self.plan = plan
        self.tables = tables or {}
        self.hook_calls = hook_calls
        self.clock_skew = clock_skew
        self.connections = connections
        self.management = management
        self.on_write = on_write

    def worker_config(self) -> dict[str, Any]:
        spec = self.spec
        return {"environment": self.environment, "code_dir": str(spec.code_dir.resolve()),
                "layer_dirs": [str(d) for d in spec.layer_dirs], "handler": spec.handler,
                "function": spec.name, "seed": self.plan.seed if self.plan is not None else None,
                "hook_calls": self.hook_calls, "clock_skew": self.clock_skew, "tables": self.tables,
                "management": list(self.management) if self.connections is not None else []}

    def answer(self, method: str, args: tuple[Any, ...]) -> Any:
        """A worker's question: the plan's decision, or the management API's answer."""
        if method == "connections":
            assert self.connections is not None
            return answer(self.connections, *args)
        assert self.plan is not None
        if method == "pick":
            seam, facts, key, types = args
            return self.plan.pick(seam, facts, tuple(key), types)
        if method == "ongoing":
            return self.plan.ongoing(*args)
        raise ValueError(f"unknown question from a worker: {method}")

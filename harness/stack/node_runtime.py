"""Running ``nodejs*`` functions: one ``node`` process (``node_host/host.js``) per concurrency slot.

Lambda runs one invocation at a time per instance and keeps module state per instance; here each
slot is such an instance: a long-lived ``node`` process, started at its first invocation (a cold
start) and reused while it stays healthy. A process whose invocation timed out, or that crashed or
failed to initialise, is killed and the slot gets a new one at its next invocation (Lambda discards
the instance too). The contract with the host (stdin requests, results and console lines on a
separate pipe) is described in ``node_host/host.js``; the error shapes are the Lambda Node.js
runtime's (``errorType``, ``errorMessage``, ``trace``; ``Sandbox.Timedout`` on overrun).

Where this differs from Lambda: the process is not frozen between invocations (timers run on);
``callbackWaitsForEmptyEventLoop`` is not honoured (the result is returned when the handler
settles); a plain function that neither returns a promise nor calls its callback and takes fewer
than three parameters returns its return value; the installed ``node`` runs whatever Node.js
version the Runtime names.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

from .instances import HostExited, InstanceFunction, wait_for_reply
from .logs import StackLog
from .runtime import FunctionSpec, lambda_variables, passed_through

HOST_SCRIPT = Path(__file__).resolve().parent / "node_host" / "host.js"


class _HostProcess:
    """One slot's node process: requests in on stdin, messages out on a pipe, output into the log."""

    def __init__(self, node: str, config: dict[str, Any], environment: dict[str, str], cwd: Path,
                 function: str, log: StackLog) -> None:
        self.function = function
        self.log = log
        self.request_id: str | None = None
        self.replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=3)
        read_fd, write_fd = os.pipe()
        try:
            self.process = subprocess.Popen(
                [node, str(HOST_SCRIPT), json.dumps({**config, "fd": write_fd})], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(write_fd,), env=environment, cwd=cwd,
                start_new_session=True)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        messages = os.fdopen(read_fd, "rb")
        assert self.process.stdout is not None and self.process.stderr is not None
        for target, stream in ((self._read_messages, messages), (self._read_output, self.process.stdout),
                               (self._read_output, self.process.stderr)):
            threading.Thread(target=target, args=(stream,), name=f"node-{function}", daemon=True).start()

    def _line(self, request_id: str | None, text: str) -> None:
        for piece in text.splitlines():
            if not piece.strip():
                continue
            if request_id:
                self.log.function_line(self.function, request_id, piece)
            else:
                self.log.line(self.function, piece)

    def _read_messages(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in stream:
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                if message.get("type") == "log":
                    self._line(message.get("id"), f"{message.get('level')} {message.get('text', '')}")
                elif message.get("type") == "result":
                    self.replies.put(message)
        self.replies.put(None)

    def _read_output(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in stream:
                text = raw.decode("utf-8", "replace").rstrip("\n")
                if stream is self.process.stderr:
                    self.stderr_tail.append(text)
                self._line(self.request_id, text)

    def call(self, request_id: str, event: Any, context: dict[str, Any], limit: float) -> dict[str, Any]:
        """The host's result message for this invocation; ``TimeoutError`` after ``limit`` seconds,
        ``HostExited`` if the process ended first."""
        self.request_id = request_id
        assert self.process.stdin is not None
        deadline = time.monotonic() + limit
        try:
            self.process.stdin.write((json.dumps({"id": request_id, "event": event, "context": context}) + "\n")
                                     .encode())
            self.process.stdin.flush()
        except OSError as exc:
            raise HostExited(self._exit_message()) from exc
        return wait_for_reply(self.replies, lambda reply: reply.get("id") == request_id, deadline, self._exit_message)

    def _exit_message(self) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=2)
        status = self.process.returncode
        tail = f": {self.stderr_tail[-1]}" if self.stderr_tail else ""
        return f"Runtime exited with error: exit status {status}{tail}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()


class NodeFunction(InstanceFunction):
    """A ``nodejs*`` function: up to ``concurrency`` node processes (``instances.InstanceFunction``).

    ``environment`` is what the stack gives every function (endpoints, region, credentials); it wins
    over the template's variables, as Lambda's reserved variables do, and Lambda's own
    (``AWS_LAMBDA_FUNCTION_NAME``, ...) are added.
    """

    def __init__(self, spec: FunctionSpec, log: StackLog, node: str, environment: dict[str, str],
                 concurrency: int = 16, region: str = "us-east-1", account: str = "000000000000") -> None:
        super().__init__(spec, log, self._spawn, concurrency, region, account)
        self.node = node
        self.environment = {**passed_through(), **spec.environment, **environment,
                            **lambda_variables(spec, region), "LAMBDA_TASK_ROOT": str(spec.code_dir)}

    def _spawn(self) -> _HostProcess:
        config = {"root": str(self.spec.code_dir.resolve()), "handler": self.spec.handler}
        return _HostProcess(self.node, config, self.environment, self.spec.code_dir, self.spec.name, self.log)

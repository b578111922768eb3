"""Fast cold starts for Python functions: a process that has imported boto3 once and forks instances.

``ForkServer().start()`` runs ``python -m harness.stack.fork_server``, a single-threaded process
(so forking it is safe, unlike forking the stack's own, threaded process) that imports boto3,
botocore and ``python_worker`` and then waits on a Unix socket. ``spawn(config)`` hands it one end
of a new socket pair (``socket.send_fds``) with the worker's configuration; it forks, the child
runs ``python_worker.serve`` on that end, and the server answers the child's pid. The stack talks
to the instance over the other end (a ``multiprocessing.connection.Connection``: pickled
messages). Instances are the server's children; it reaps them. It exits when the stack closes the
control socket or dies, and each instance exits when its connection closes.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

_MAX_CONFIG = 1 << 20  # bytes of one spawn request


class ForkServerError(Exception):
    """The fork server could not start, or could not start an instance; the message says why."""


class ForkServer:
    """The stack's side: start the server once, then ``spawn`` instances (thread-safe)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._lock = threading.Lock()

    def start(self) -> ForkServer:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen([sys.executable, "-m", "harness.stack.fork_server", str(theirs.fileno())],
                                            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        except OSError as exc:
            ours.close()
            raise ForkServerError(f"the Python fork server could not start: {exc}") from None
        finally:
            theirs.close()
        self._control = ours
        return self

    def spawn(self, config: dict[str, Any]) -> tuple[int, Connection]:
        """A new instance running ``python_worker.serve(connection, config)``: its pid and our end."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with self._lock:
                if self._control is None:
                    raise ForkServerError("the fork server is stopped")
                try:
                    socket.send_fds(self._control, [pickle.dumps(config)], [theirs.fileno()])
                    answer = self._control.recv(64)
                except OSError as exc:
                    raise ForkServerError(f"the Python fork server is gone ({exc})") from None
            if not answer:
                raise ForkServerError("the Python fork server is gone (it exited)")
            pid = json.loads(answer)["pid"]
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return pid, Connection(ours.detach())

    def stop(self) -> None:
        with self._lock:
            control, self._control = self._control, None
        if control is not None:
            control.close()
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
            self.process = None


def _serve_forks(control: socket.socket) -> None:
    from . import python_worker  # imported once, here, before any fork

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # instances are reaped as they end
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the stack decides when this ends (a terminal's Ctrl-C too)
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(control, _MAX_CONFIG, 1)
        except OSError:
            return
        if not data:
            return  # the stack closed its end, or died
        pid = os.fork()
        if pid == 0:
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                python_worker.serve(Connection(fds[0]), pickle.loads(data))
            except BaseException:
                code = 1
            os._exit(code)
        for fd in fds:
            os.close(fd)
        with contextlib.suppress(OSError):
            control.send(json.dumps({"pid": pid}).encode())


if __name__ == "__main__":
    _serve_forks(socket.socket(fileno=int(sys.argv[1])))

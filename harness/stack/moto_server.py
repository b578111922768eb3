"""The local DynamoDB's process: moto's server, with DynamoDB's semantics where moto differs.

moto checks a write's condition and applies the write without any lock, so two concurrent
conditional writes can both pass and one silently overwrites the other (measured: 12 racing
joiners, one lost). DynamoDB serialises writes to an item and isolates transactions from
reads; one lock around every DynamoDB and DynamoDB Streams request gives the same outcomes.
The other fixes (transactions, stream records, TTL) are in ``moto_fidelity``.
Run as ``python -m harness.stack.moto_server -H HOST -p PORT [--ttl-delay S] [--stack-log-dir DIR]``;
with a log folder, each request moto could not handle (answered 400 ValidationException) is a
``[dynamodb]`` line in its ``stack.log``. Served by gevent's WSGI server (``serve``: why, and
what it keeps as werkzeug's server had it).
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

_SERIALISED_TARGETS = ("DynamoDB_", "DynamoDBStreams_")
_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem", "ExecuteStatement",
           "BatchExecuteStatement", "ExecuteTransaction")


class DynamoDBSemantics:
    """WSGI middleware: one DynamoDB request at a time, and stream records as DynamoDB writes them."""

    def __init__(self, app: Callable[..., Iterable[bytes]], lock: threading.Lock) -> None:
        from . import moto_fidelity

        self.app = app
        self.lock = lock
        self.fidelity = moto_fidelity

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith(_SERIALISED_TARGETS):
            return self.app(environ, start_response)
        # The server's greenlets switch only on socket I/O; the request is read before the lock is
        # taken, so no greenlet waits on the socket while holding it (the next one would block the thread).
        environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read())
        with self.lock:
            if target.rsplit(".", 1)[-1] not in _WRITES:
                # The body is produced inside the lock: WSGI apps may compute it lazily.
                return drained(self.app(environ, start_response))
            before = self.fidelity.stream_lengths()
            body = drained(self.app(environ, start_response))
            self.fidelity.coalesce_stream_records(before)
            return body


def drained(body: Iterable[bytes]) -> list[bytes]:
    """A WSGI app's response body read whole, and closed as a server closes it (PEP 3333)."""
    try:
        return list(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def werkzeug_errors(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """An exception out of ``app`` answered as werkzeug's development server answered it (moto's
    Flask apps run in debug mode, so their exceptions reach the server): HTTP 500 with werkzeug's
    ``InternalServerError`` page, and ``Error on request:`` with the traceback on stderr."""
    from werkzeug.exceptions import InternalServerError

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            return drained(app(environ, start_response))
        except Exception:
            print(f"Error on request:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            error = sys.exc_info()
            return InternalServerError()(environ, lambda status, headers: start_response(status, headers, error))

    return guarded


def _exit_with_parent() -> None:
    """A stack that dies without stopping us (SIGKILL, a crashed test) must not leave us running."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.stack.moto_server")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("--ttl-delay", type=float, default=None,
                        help="delete items this many seconds after their TTL (default: never, as moto)")
    parser.add_argument("--stack-log-dir", default=None,
                        help="the stack's log folder: requests moto could not handle are reported in its stack.log")
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))

    from moto.server import DomainDispatcherApplication, create_backend_app

    from . import moto_fidelity
    from .logs import StackLog

    if args.stack_log_dir is not None:
        stack_log = StackLog(Path(args.stack_log_dir))
        moto_fidelity.install(lambda message: stack_log.line("dynamodb", message))
    else:
        moto_fidelity.install()
    lock = threading.Lock()
    if args.ttl_delay is not None:
        moto_fidelity.TtlSweeper(lock, args.ttl_delay).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _exit_with_parent()
    app = DynamoDBSemantics(DomainDispatcherApplication(create_backend_app), lock)
    serve(args.host, args.port, werkzeug_errors(app))


def serve(host: str, port: int, app: Callable[..., Iterable[bytes]]) -> None:
    """Serve ``app`` on ``host:port`` until the process ends, with gevent's WSGI server.

    It replaces werkzeug's development server, which spent ~28 % of this process's CPU under
    load: a thread and a new connection per request (it answered ``Connection: close``), headers
    parsed by the ``email`` package, a coloured access line per request. gevent's server keeps
    HTTP/1.1 connections open (botocore's pools reuse them, as with DynamoDB) and has no access log
    (``log=None``); errors and tracebacks still reach stderr. No monkey-patching: the lock, the TTL
    sweeper and the parent watch stay real threads; requests run one after another in the main
    thread's greenlets, as the lock ran them before."""
    from gevent.pywsgi import WSGIHandler, WSGIServer

    class NoDelayHandler(WSGIHandler):
        """gevent writes a response's headers and body in two sends; with Nagle's algorithm on, the
        body waits for the client's delayed ACK (~40 ms a request on Linux), so it is off."""

        def handle(self) -> None:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().handle()

    WSGIServer((host, port), app, log=None, handler_class=NoDelayHandler).serve_forever()


if __name__ == "__main__":
    main()

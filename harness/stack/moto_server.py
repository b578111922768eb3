"""The local DynamoDB's process: moto's server, with DynamoDB's semantics where moto differs.

moto checks a write's condition and applies the write without any lock, so two concurrent
conditional writes can both pass and one silently overwrites the other (measured: 12 racing
joiners, one lost). DynamoDB serialises writes to an item and isolates transactions from
reads; one lock around every DynamoDB and DynamoDB Streams request gives the same outcomes.
The other fixes (transactions, stream records, TTL) are in ``moto_fidelity``.
Run as ``python -m harness.stack.moto_server -H HOST -p PORT [--ttl-delay S] [--stack-log-dir DIR]``;
with a log folder, each request moto could not handle (answered 400 ValidationException) is a
``[dynamodb]`` line in its ``stack.log``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
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
        with self.lock:
            if target.rsplit(".", 1)[-1] not in _WRITES:
                # The body is produced inside the lock: WSGI apps may compute it lazily.
                return list(self.app(environ, start_response))
            before = self.fidelity.stream_lengths()
            body = list(self.app(environ, start_response))
            self.fidelity.coalesce_stream_records(before)
            return body


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
    from werkzeug.serving import WSGIRequestHandler, run_simple

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
    run_simple(args.host, args.port, app, threaded=True, request_handler=_quiet_handler(WSGIRequestHandler))


def _quiet_handler(base: type) -> type:
    """werkzeug's request handler without its access line per request (5.6 % of the process's CPU
    under load: a formatted, coloured ``logging`` record each); errors and their tracebacks are still logged."""

    class QuietRequestHandler(base):  # type: ignore[misc, valid-type]
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

    return QuietRequestHandler


if __name__ == "__main__":
    main()

"""moto's server, with DynamoDB requests serialised as DynamoDB itself would order them.

moto checks a write's condition and applies the write without any lock, so two concurrent
conditional writes can both pass and one silently overwrites the other (measured: 12 racing
joiners, one lost). DynamoDB serialises writes to an item and isolates transactions from
reads; one lock around every DynamoDB and DynamoDB Streams request gives the same outcomes.
Run as ``python -m harness.stack.moto_server -H HOST -p PORT``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

_SERIALISED_TARGETS = ("DynamoDB_", "DynamoDBStreams_")


class SerialisedDynamoDB:
    """WSGI middleware: one DynamoDB request at a time, other services untouched."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith(_SERIALISED_TARGETS):
            return self.app(environ, start_response)
        with self.lock:
            # The body is produced inside the lock: WSGI apps may compute it lazily.
            return list(self.app(environ, start_response))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.stack.moto_server")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))

    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import run_simple

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run_simple(args.host, args.port, SerialisedDynamoDB(DomainDispatcherApplication(create_backend_app)),
               threaded=True)


if __name__ == "__main__":
    main()

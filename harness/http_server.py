"""The small loopback HTTP servers (management API, HTTP API, proxy control): one base for binding
with a one-line error, serving from a daemon thread, and stopping."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

from .stack.ports import PortInUse

S = TypeVar("S", bound="LoopbackHTTPServer")


class LoopbackHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str, port: int, what: str,
                 fix: str = "pick another port") -> None:
        self.what = what
        try:
            super().__init__((host, port), handler)
        except OSError as exc:
            raise PortInUse(f"{what}: cannot listen on {host}:{port} ({exc.strerror}); {fix}") from None

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self: S) -> S:
        threading.Thread(target=self.serve_forever, name=self.what, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

"""The small loopback HTTP servers (management API, HTTP API, proxy control): one base for binding
with a one-line error, serving from a daemon thread, and stopping; optionally over TLS."""

from __future__ import annotations

import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

from .stack.ports import PortInUse

S = TypeVar("S", bound="LoopbackHTTPServer")
_HANDSHAKE_TIMEOUT_S = 10.0


class LoopbackHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str, port: int, what: str,
                 fix: str = "pick another port", tls: ssl.SSLContext | None = None) -> None:
        """``tls``: a server-side context; then every connection is TLS (HTTPS), its handshake done in
        the connection's own thread, and a client that fails it is dropped without a traceback."""
        self.what = what
        self.tls = tls
        try:
            super().__init__((host, port), handler)
        except OSError as exc:
            raise PortInUse(f"{what}: cannot listen on {host}:{port} ({exc.strerror}); {fix}") from None

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.authority}"

    @property
    def authority(self) -> str:
        """``host:port`` as a URL spells it (an IPv6 host in brackets)."""
        host, port = self.server_address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def process_request_thread(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        if self.tls is not None:
            request.settimeout(_HANDSHAKE_TIMEOUT_S)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                self.shutdown_request(request)  # a client that does not trust us, or went away
                return
            request.settimeout(None)
        super().process_request_thread(request, client_address)  # type: ignore[misc]

    def start(self: S) -> S:
        threading.Thread(target=self.serve_forever, name=self.what, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

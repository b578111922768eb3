"""Loopback ports: finding a free one, and a one-line error for a busy one."""

from __future__ import annotations

import socket


class PortInUse(Exception):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def ensure_free(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            raise PortInUse(f"{what}: {host}:{port} is already in use; pick another port or stop what "
                            f"holds it (for example: ss -ltnp 'sport = :{port}')") from None

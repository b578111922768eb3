"""The proxy's control API: loopback HTTP + JSON, shaped like Toxiproxy's, and a Python client.

    GET    /proxies                         the proxy, with its faults ("toxics")
    GET    /proxies/{name}/toxics           its faults
    POST   /proxies/{name}/toxics           add one (a fault spec; Toxiproxy's field names work)
    GET    /proxies/{name}/toxics/{fault}   one fault
    DELETE /proxies/{name}/toxics/{fault}   remove it
    POST   /reset                           remove every fault, end pauses and refusals
    GET    /connections                     open connections
    POST   /proxies/{name}/disconnect       drop every connection now ({"code": 1001})
    POST   /proxies/{name}/pause            hold all traffic ({"seconds": 2})
    POST   /proxies/{name}/refuse           refuse new connections ({"seconds": 2})
    GET    /faults?since=N                  fault log entries from the N-th on
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .. import __version__
from ..http_server import LoopbackHTTPServer
from .faults import FaultSpecError, parse_fault
from .server import ChaosProxy


class _Handler(BaseHTTPRequestHandler):
    server: ControlServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        try:
            return json.loads(self.rfile.read(length))
        except ValueError as exc:
            raise FaultSpecError(f"the request body is not JSON: {exc}") from None

    def _route(self) -> tuple[list[str], dict[str, list[str]]]:
        parts = urlsplit(self.path)
        return [p for p in parts.path.split("/") if p], parse_qs(parts.query)

    def _proxy_view(self) -> dict[str, Any]:
        proxy = self.server.proxy
        return {"name": proxy.name, "listen": f"{proxy.host}:{proxy.port}", "upstream": proxy.upstream_url,
                "enabled": True, "seed": proxy.seed, "toxics": [f.describe() for f in proxy.faults]}

    def _named(self, segments: list[str]) -> bool:
        if len(segments) >= 2 and segments[1] != self.server.proxy.name:
            self._reply(404, {"error": f"no proxy named {segments[1]!r}; this one is {self.server.proxy.name!r}"})
            return False
        return True

    def do_GET(self) -> None:
        segments, query = self._route()
        proxy = self.server.proxy
        if segments == ["version"]:
            self._reply(200, {"version": __version__})
        elif segments == ["proxies"]:
            self._reply(200, {proxy.name: self._proxy_view()})
        elif segments == ["connections"]:
            self._reply(200, [c.describe() for c in list(proxy.connections.values())])
        elif segments == ["faults"]:
            since = int((query.get("since") or ["0"])[0])
            self._reply(200, proxy.fault_log.entries[since:])
        elif segments[:1] == ["proxies"] and self._named(segments):
            if len(segments) == 2:
                self._reply(200, self._proxy_view())
            elif len(segments) == 3 and segments[2] == "toxics":
                self._reply(200, [f.describe() for f in proxy.faults])
            elif len(segments) == 4 and segments[2] == "toxics":
                found = [f.describe() for f in proxy.faults if f.name == segments[3]]
                self._reply(200, found[0]) if found else self._reply(404, {"error": f"no fault {segments[3]!r}"})
            else:
                self._reply(404, {"error": f"no route GET {self.path}"})
        else:
            self._reply(404, {"error": f"no route GET {self.path}"})

    def do_POST(self) -> None:
        segments, _ = self._route()
        proxy = self.server.proxy
        try:
            body = self._body()
            if segments == ["reset"]:
                proxy.call(proxy.reset())
                self._reply(204)
            elif len(segments) == 3 and segments[0] == "proxies" and self._named(segments):
                action = segments[2]
                if action == "toxics":
                    spec = parse_fault(body, f"fault-{len(proxy.faults) + 1}")
                    try:
                        proxy.call(proxy.add_fault(spec))
                    except ValueError as exc:
                        self._reply(409, {"error": str(exc)})
                        return
                    self._reply(200, spec.describe())
                elif action == "disconnect":
                    closed = proxy.call(proxy.disconnect_all(int(body.get("code", 1001))))
                    self._reply(200, {"closed": closed})
                elif action in ("pause", "refuse"):
                    seconds = body.get("seconds")
                    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= 3600:
                        raise FaultSpecError(f"{action}: 'seconds' must be a number from 0 to 3600")
                    proxy.call(proxy.pause(seconds) if action == "pause" else proxy.refuse(seconds))
                    self._reply(204)
                else:
                    self._reply(404, {"error": f"no route POST {self.path}"})
            else:
                self._reply(404, {"error": f"no route POST {self.path}"})
        except FaultSpecError as exc:
            self._reply(400, {"error": str(exc)})

    def do_DELETE(self) -> None:
        segments, _ = self._route()
        proxy = self.server.proxy
        if len(segments) == 4 and segments[0] == "proxies" and segments[2] == "toxics" and self._named(segments):
            removed = proxy.call(proxy.remove_fault(segments[3]))
            self._reply(204) if removed else self._reply(404, {"error": f"no fault {segments[3]!r}"})
        else:
            self._reply(404, {"error": f"no route DELETE {self.path}"})


class ControlServer(LoopbackHTTPServer):
    def __init__(self, proxy: ChaosProxy, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(_Handler, host, port, "control API", "pick another --control port")
        self.proxy = proxy


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class ProxyControl:
    """The control API from Python, for a proxy running in another process."""

    def __init__(self, endpoint: str, proxy: str = "relay") -> None:
        self.endpoint = endpoint.rstrip("/")
        self.proxy = proxy

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.endpoint + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
            raise ControlError(exc.code, detail) from None
        return json.loads(text) if text else None

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", f"/proxies/{self.proxy}/toxics")

    def add(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/proxies/{self.proxy}/toxics", spec)

    def remove(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{self.proxy}/toxics/{name}")

    def reset(self) -> None:
        self._call("POST", "/reset", {})

    def connections(self) -> list[dict[str, Any]]:
        return self._call("GET", "/connections")

    def disconnect_all(self, code: int = 1001) -> int:
        return self._call("POST", f"/proxies/{self.proxy}/disconnect", {"code": code})["closed"]

    def pause(self, seconds: float) -> None:
        self._call("POST", f"/proxies/{self.proxy}/pause", {"seconds": seconds})

    def refuse(self, seconds: float) -> None:
        self._call("POST", f"/proxies/{self.proxy}/refuse", {"seconds": seconds})

    def fault_log(self, since: int = 0) -> list[dict[str, Any]]:
        return self._call("GET", f"/faults?since={since}")

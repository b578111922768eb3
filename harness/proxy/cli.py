"""``relay-harness proxy``: the chaos proxy in front of any ws:// upstream."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..cli import UsageError
from ..faults.log import FaultLog
from ..faults.profile import ProfileError, load_profile
from ..lifecycle import wait_until_stopped
from ..stack.ports import PortInUse
from .control import ControlServer
from .faults import FaultSpec, FaultSpecError, parse_cli_fault, parse_fault
from .server import ChaosProxy
from .tls import UpstreamTls, upstream_tls


def _address(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UsageError(f"{what} {value!r} must look like HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def add_parser(sub: Any) -> None:
    proxy = sub.add_parser("proxy", help="chaos proxy for WebSocket traffic: frame faults, seeded, logged")
    proxy.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to accept clients on (port 0: any free)")
    proxy.add_argument("--upstream", required=True, help="ws:// or wss://HOST[:PORT][/stage] to forward to")
    proxy.add_argument("--upstream-ca", metavar="FILE",
                       help="with a wss:// upstream: trust the CAs in this PEM file (default: $SSL_CERT_FILE, "
                            "$REQUESTS_CA_BUNDLE, else the system trust store; verification is always on)")
    proxy.add_argument("--seed", type=int, default=0, help="every fault decision derives from it (default 0)")
    proxy.add_argument("--fault", action="append", default=[], metavar="SPEC",
                       help="a fault, as JSON or type=drop,direction=downstream,probability=0.1,match.type=MESSAGE "
                            "(repeatable)")
    proxy.add_argument("--profile", help="a chaos profile (NAME or FILE.toml); its wire faults are applied")
    proxy.add_argument("--control", default="127.0.0.1:0", help="HOST:PORT of the control API")
    proxy.add_argument("--fault-log", type=Path, help="append the fault log (JSON lines) here")
    proxy.add_argument("--ready-file", type=Path, help="write the endpoints here as JSON once listening")
    proxy.set_defaults(run=run_proxy)


def fault_specs(profile: str | None, faults: list[str]) -> list[FaultSpec]:
    """The wire faults of a chaos profile (NAME or FILE.toml) and of ``--fault`` specs, validated;
    raises UsageError with a one-line message."""
    specs = []
    try:
        if profile:
            specs += [parse_fault(raw) for raw in load_profile(profile).for_seam("wire")]
        specs += [parse_cli_fault(text, index + 1) for index, text in enumerate(faults)]
    except (FaultSpecError, ProfileError) as exc:
        raise UsageError(str(exc)) from None
    names = [s.name for s in specs]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise UsageError(f"two faults are named {sorted(duplicated)[0]!r}; names must be unique")
    return specs


def _upstream(url: str, ca_file: str | None) -> tuple[str, UpstreamTls | None]:
    """A ws:// or wss:// URL whose host resolves (it need not be listening yet), and for wss:// the
    certificates to trust."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise UsageError(f"--upstream {url!r} must be ws://HOST:PORT[/stage] or wss://HOST[:PORT][/stage]")
    try:
        socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError):
        raise UsageError(f"--upstream host {parts.hostname!r} does not resolve: pass a reachable ws:// or wss:// "
                         "URL") from None
    if parts.scheme == "ws":
        if ca_file:
            raise UsageError("--upstream-ca is for a wss:// --upstream; leave it out for ws://")
        return url, None
    try:
        return url, upstream_tls(parts.hostname, ca_file)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def run_proxy(args: argparse.Namespace) -> int:
    host, port = _address(args.listen, "--listen")
    control_host, control_port = _address(args.control, "--control")
    upstream, tls = _upstream(args.upstream, args.upstream_ca)
    faults = fault_specs(args.profile, args.fault)
    try:
        proxy = ChaosProxy(upstream, host, port, seed=args.seed, faults=faults,
                           fault_log=FaultLog(args.fault_log, keep=True), tls=tls)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        proxy.start()
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.listen} ({exc.strerror}); pick another --listen port") from None
    try:
        control = ControlServer(proxy, control_host, control_port).start()
    except PortInUse as exc:
        proxy.stop()
        raise UsageError(str(exc)) from None
    endpoints = {"proxy": proxy.endpoint, "control": control.endpoint, "upstream": args.upstream, "seed": args.seed,
                 "faults": [f.name for f in faults]}
    if proxy.tls is not None:
        endpoints["upstream_trust"] = proxy.tls.trust
    print(json.dumps(endpoints), flush=True)
    if args.ready_file:
        args.ready_file.write_text(json.dumps(endpoints))
    try:
        wait_until_stopped()
    finally:
        control.stop()
        proxy.stop()
        proxy.fault_log.close()
    print(f"relay-harness proxy: stopped; {len(proxy.fault_log.entries)} faults injected (seed {args.seed})",
          file=sys.stderr)
    return 0

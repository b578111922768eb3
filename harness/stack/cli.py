"""``relay-harness up`` (the whole local stack) and ``relay-harness dynamodb`` (only the store)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ..cli import UsageError
from ..faults.profile import ProfileError, load_plan
from ..lifecycle import wait_until_stopped
from .dynamodb import DynamoDBUnavailable, LocalDynamoDB
from .local_stack import DEFAULT_TEMPLATE, LocalStack, StackError, StackOptions
from .ports import PortInUse
from .stream_source import write_json_atomic
from .template import Template, TemplateError
from .websocket_api import Quotas


def _pairs(values: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key or not item:
            raise UsageError(f"{what} {value!r} must look like NAME=VALUE")
        pairs[key] = item
    return pairs


def _at_least(low: float, kind: type = float, *, above: bool = False) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` that is >= low (> low with ``above``)."""
    def parse(text: str) -> Any:
        value = kind(text)  # ValueError: argparse says "invalid ... value"
        if value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"{text} must be {'more than' if above else 'at least'} {low:g}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its "invalid int value" message
    return parse


_PORT = _at_least(0, int)
_SECONDS = _at_least(0)
_POSITIVE_SECONDS = _at_least(0, above=True)
POSITIVE_INT = _at_least(1, int)


def check_template(path: Path) -> None:
    """A template that exists and is YAML; raises UsageError with a one-line message (the
    template's SAM content is checked when the stack loads it)."""
    if not path.is_file():
        raise UsageError(f"template {path} not found: pass --template PATH/TO/template.yaml")
    try:
        yaml.compose(path.read_text(encoding="utf-8"))  # syntax only: SAM's !Ref tags need no constructor
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"template {path} is not YAML: {exc.problem}{where}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"template {path} is not YAML: {' '.join(str(exc).split())}") from None


def check_parameters(path: Path, values: list[str]) -> dict[str, str]:
    """``--parameter NAME=VALUE`` values as a dict; UsageError (one line) for a malformed one or a NAME
    the template at ``path`` does not declare (CloudFormation refuses those too), listing the
    declared ones. The template is assumed to pass ``check_template``."""
    given = _pairs(values, "--parameter")
    try:
        declared = Template.load(path).body.get("Parameters") or {}
    except TemplateError as exc:
        raise UsageError(str(exc)) from None
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise UsageError(f"--parameter {', '.join(unknown)}: template {path} declares no such parameter "
                         f"(its parameters: {', '.join(declared) or 'none'})")
    return given


def check_functions(values: list[str]) -> dict[str, str]:
    """``--function NAME=URL`` values as a dict; UsageError (one line) for a malformed one or a URL
    that is not http(s)://HOST[:PORT] (the Lambda Invoke API's endpoint). Whether the template
    defines NAME is checked as the stack loads it (a function may depend on its conditions)."""
    functions = _pairs(values, "--function")
    for name, url in functions.items():
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--function {name}={url}: give the Invoke API's URL, e.g. {name}=http://127.0.0.1:3001")
    return functions


def add_parser(sub: Any) -> None:
    up = sub.add_parser("up", help="run a relay's SAM template locally: WebSocket API, HTTP API, functions, "
                                   "DynamoDB, streams, schedules")
    up.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE,
                    help="SAM template (default: the reference relay)")
    up.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    up.add_argument("--port", type=_PORT, default=0, help="WebSocket API port (default: a free one)")
    up.add_argument("--http-port", type=_PORT, default=0, help="HTTP API port (default: a free one)")
    up.add_argument("--management-port", type=_PORT, default=0, help="@connections API port (default: a free one)")
    up.add_argument("--management-https-port", type=_PORT, default=0,
                    help="@connections over HTTPS, the port of the events' domainName (default: a free one)")
    up.add_argument("--dynamodb-port", type=_PORT, default=0, help="local DynamoDB port (default: a free one)")
    up.add_argument("--dynamodb-endpoint", help="use this DynamoDB (e.g. one `relay-harness dynamodb` runs, so "
                                                "the data outlives this process) instead of starting one")
    up.add_argument("--stack-name", default="local", help="as `sam deploy --stack-name`; names the tables")
    up.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE",
                    help="template parameter override (repeatable)")
    up.add_argument("--function", action="append", default=[], metavar="NAME=URL",
                    help="serve function NAME from a Lambda Invoke API endpoint, e.g. `sam local start-lambda`")
    up.add_argument("--log-dir", type=Path, help="write stack.log, invocations.jsonl, stream-failures.jsonl here")
    up.add_argument("--ready-file", type=Path, help="write the endpoints here as JSON once everything accepts traffic")
    up.add_argument("--ttl-delay", type=_SECONDS, default=5.0, help="seconds after an item's TTL before it is deleted")
    up.add_argument("--schedule-interval", type=_POSITIVE_SECONDS,
                    help="run every schedule this often (seconds) instead of its rate()")
    up.add_argument("--idle-timeout", type=_POSITIVE_SECONDS, default=600.0, help="seconds (API Gateway: 600)")
    up.add_argument("--max-connection-duration", type=_POSITIVE_SECONDS, default=7200.0,
                    help="seconds (API Gateway: 7200)")
    up.add_argument("--max-message-bytes", type=POSITIVE_INT, default=128 * 1024, help="bytes (API Gateway: 131072)")
    up.add_argument("--max-frame-bytes", type=POSITIVE_INT, default=32 * 1024,
                    help="bytes per WebSocket frame, both ways (API Gateway: 32768)")
    up.add_argument("--concurrency", type=POSITIVE_INT, default=16,
                    help="concurrent invocations per function (more WebSocket messages wait in the gateway)")
    up.add_argument("--quiet", action="store_true", help="do not echo the stack log to stderr")
    up.add_argument("--profile", help="chaos profile (NAME or FILE.toml) whose invocation, store and management "
                                      "faults to inject")
    up.add_argument("--seed", type=int, default=0, help="every fault decision derives from it (default 0)")
    up.add_argument("--fault-log", type=Path, help="append injected faults here (JSON lines; the proxy may share it)")
    up.add_argument("--faults-started-at", type=_SECONDS, metavar="EPOCH",
                    help="count the profile's fault windows from this wall-clock time (Unix seconds; a stack's "
                         "ready file gives it as faults_started_at) instead of from now: a stack restarted after a "
                         "kill keeps the windows of the run it belongs to")
    up.add_argument("--stream-checkpoints", type=Path, metavar="FILE",
                    help="keep each stream event source's position in FILE and resume from it when it exists, as "
                         "Lambda's event source mapping does: a stack restarted on the same store (with "
                         "--dynamodb-endpoint) delivers every stream record the previous one did not handle")
    up.set_defaults(run=run_up)

    ddb = sub.add_parser("dynamodb", help="run only the local DynamoDB, so a restarted stack keeps its data")
    ddb.add_argument("--host", default="127.0.0.1")
    ddb.add_argument("--port", type=_PORT, default=8000)
    ddb.add_argument("--ttl-delay", type=_SECONDS, default=5.0, help="seconds after an item's TTL before it is deleted")
    ddb.add_argument("--ready-file", type=Path, help="write the endpoint here as JSON once it accepts requests")
    ddb.set_defaults(run=run_dynamodb)


def run_up(args: argparse.Namespace) -> int:
    check_template(args.template)
    try:
        faults = load_plan(args.profile, args.seed, args.fault_log) if args.profile else None
    except ProfileError as exc:
        raise UsageError(str(exc)) from None
    for kill in [r for r in faults.rules if r.seam == "process" and r.type == "kill"] if faults else []:
        print(f"relay-harness up: process kill {kill.name!r} (at {kill.start:g} s) is carried out by the run's "
              "supervisor (a Locust run's embedded target), not by `up` itself: this stack goes on without it",
              file=sys.stderr, flush=True)
    options = StackOptions(
        template=args.template, host=args.host, websocket_port=args.port, http_port=args.http_port,
        management_port=args.management_port, management_https_port=args.management_https_port,
        dynamodb_port=args.dynamodb_port,
        dynamodb_endpoint=args.dynamodb_endpoint, stack_name=args.stack_name,
        parameters=check_parameters(args.template, args.parameter), remote_functions=check_functions(args.function),
        log_dir=args.log_dir, echo=None if args.quiet else sys.stderr, ttl_delay=args.ttl_delay,
        schedule_interval=args.schedule_interval, concurrency=args.concurrency,
        quotas=Quotas(args.max_message_bytes, args.idle_timeout, args.max_connection_duration,
                      args.max_frame_bytes), faults=faults,
        faults_started_at=args.faults_started_at, stream_checkpoints=args.stream_checkpoints)
    stack = LocalStack(options)
    try:
        stack.start()
    except (StackError, TemplateError, PortInUse, DynamoDBUnavailable) as exc:
        raise UsageError(str(exc)) from None
    try:
        if args.ready_file:
            stack.write_ready_file(args.ready_file)
        print(json.dumps(stack.endpoints), flush=True)
        wait_until_stopped()
    finally:
        stack.stop()
    return 0


def run_dynamodb(args: argparse.Namespace) -> int:
    try:
        ddb = LocalDynamoDB(args.host, args.port, ttl_delay=args.ttl_delay).start()
    except (PortInUse, DynamoDBUnavailable) as exc:
        raise UsageError(str(exc)) from None
    endpoint = {"dynamodb": ddb.endpoint}
    if args.ready_file:
        write_json_atomic(args.ready_file, endpoint)
    print(json.dumps(endpoint), flush=True)
    try:
        wait_until_stopped()
    finally:
        ddb.stop()
    return 0

"""The whole local stack from one SAM template: DynamoDB, functions, both APIs, event sources."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import boto3

from ..faults.plan import FaultPlan
from . import clock
from . import dynamodb as local_ddb
from .call_faults import CallFaults
from .deployment import Deployment, deployment_context, load_deployment
from .http_api import HttpApiServer, HttpRoute
from .invocation_faults import EventIdentities, FaultyFunction
from .logs import StackLog, route_function_output
from .management_api import ManagementApiServer
from .runtime import Function, FunctionSpec, InProcessFunction, RemoteFunction
from .schedules import Scheduler, ScheduleSpec
from .stream_source import StreamCheckpoints, StreamEventSource, StreamMapping, write_json_atomic
from .streams import StreamReader
from .template import Template, TemplateError, table_specs
from .websocket_api import Quotas, WebSocketGateway

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "reference_relay" / "template.yaml"
_REGION = "us-east-1"
_WRITE_OPERATIONS = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem",
                     "ExecuteStatement", "ExecuteTransaction", "BatchExecuteStatement"}


class StackError(Exception):
    """The stack cannot start as asked; the message says why and what to change."""


@dataclass
class StackOptions:
    template: Path = DEFAULT_TEMPLATE
    host: str = "127.0.0.1"
    websocket_port: int = 0
    http_port: int = 0
    management_port: int = 0
    dynamodb_port: int = 0
    dynamodb_endpoint: str | None = None
    stack_name: str = "local"
    parameters: dict[str, str] = field(default_factory=dict)
    remote_functions: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    echo: TextIO | None = None
    ttl_delay: float | None = 5.0
    schedule_interval: float | None = None
    quotas: Quotas = field(default_factory=Quotas)
    concurrency: int = 16
    faults: FaultPlan | None = None  # the invocation, store and management seams' rules
    # A restart after a kill: the fault windows' origin (wall-clock seconds) of the stack it replaces,
    # and the file where the stream event sources keep their positions (see StreamCheckpoints).
    faults_started_at: float | None = None
    stream_checkpoints: Path | None = None


def _shared_environment(specs: list[FunctionSpec], base: dict[str, str]) -> dict[str, str]:
    """In-process functions share one environment: refuse functions whose variables disagree."""
    merged = dict(base)
    owners: dict[str, str] = {}
    for spec in specs:
        for key, value in spec.environment.items():
            if key in merged and merged[key] != value and key not in base:
                raise StackError(
                    f"{spec.logical_id} sets {key}={value!r} but {owners[key]} sets {merged[key]!r}; functions "
                    f"run in one process share their environment: serve one with --function NAME=URL")
            merged.setdefault(key, value)
            owners.setdefault(key, spec.logical_id)
    return merged


class LocalStack:
    def __init__(self, options: StackOptions | None = None) -> None:
        self.options = options or StackOptions()
        self.log = StackLog(self.options.log_dir, echo=self.options.echo)
        self.dynamodb: local_ddb.LocalDynamoDB | None = None
        self.dynamodb_endpoint = ""
        self.management: ManagementApiServer | None = None
        self.gateway: WebSocketGateway | None = None
        self.http: HttpApiServer | None = None
        self.sources: list[StreamEventSource] = []
        self.scheduler: Scheduler | None = None
        self.functions: dict[str, Function] = {}
        self.deployment: Deployment | None = None
        self._saved_environment: dict[str, str | None] = {}
        self.tables: dict[str, str] = {}  # logical id -> table name
        self.call_faults: CallFaults | None = None
        self._clock_skewed = False
        self.faults_started_at: float | None = None  # wall-clock seconds the fault windows count from

    # ---- start / stop ---------------------------------------------------------------------
    def start(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        options = self.options
        template = Template.load(options.template)
        self._start_dynamodb()
        client = local_ddb.client(self.dynamodb_endpoint)
        stream_arns = self._ensure_tables(template, client)
        context = deployment_context(template, stack_name=options.stack_name, region=_REGION,
                                     parameters=options.parameters, stream_arns=stream_arns)
        self.deployment = deployment = load_deployment(template, context)
        unknown = set(options.remote_functions) - set(deployment.functions)
        if unknown:
            raise StackError(f"--function names {', '.join(sorted(unknown))}, which the template does not define "
                             f"(functions: {', '.join(sorted(deployment.functions))})")

        self.management = ManagementApiServer(_NoConnections(), options.host, options.management_port).start()
        self._make_functions(deployment)
        self._install_clock_skew()
        routes = {key: self.functions[name] for key, name in deployment.websocket_routes.items()}
        self.gateway = WebSocketGateway(routes, deployment.selection_expression, stage=deployment.stage,
                                        log=self.log, quotas=options.quotas,
                                        concurrency=options.concurrency).start(options.host, options.websocket_port)
        self.management.connections = self.gateway
        http_routes = [HttpRoute(method, path, self.functions[name]) for method, path, name in deployment.http_routes]
        self.http = HttpApiServer(http_routes, deployment.stage, self.log, options.host, options.http_port).start()
        self._install_call_faults()
        self._start_event_sources(deployment)
        self.log.line("stack", f"up: {json.dumps(self.endpoints)}")

    def _start_dynamodb(self) -> None:
        options = self.options
        if options.dynamodb_endpoint:
            self.dynamodb_endpoint = options.dynamodb_endpoint
            return
        log_path = str(options.log_dir / "dynamodb.log") if options.log_dir else None
        self.dynamodb = local_ddb.LocalDynamoDB(options.host, options.dynamodb_port or None, log_path,
                                                ttl_delay=options.ttl_delay).start()
        self.dynamodb_endpoint = self.dynamodb.endpoint

    def _ensure_tables(self, template: Template, client: Any) -> dict[str, str]:
        """Create the template's tables that do not exist yet; an existing one keeps its data."""
        bare = deployment_context(template, stack_name=self.options.stack_name, parameters=self.options.parameters)
        specs = table_specs(template, bare)
        try:
            existing = set(client.list_tables()["TableNames"])
        except Exception as exc:
            raise StackError(f"DynamoDB at {self.dynamodb_endpoint} does not answer ({exc}); start it or fix "
                             "--dynamodb-endpoint") from None
        local_ddb.create_tables(client, [s for s in specs if s.name not in existing])
        self.tables = {spec.logical_id: spec.name for spec in specs}
        arns = {}
        for spec in specs:
            arn = client.describe_table(TableName=spec.name)["Table"].get("LatestStreamArn")
            if arn:
                arns[spec.name] = arn
        return arns

    def _make_functions(self, deployment: Deployment) -> None:
        assert self.management is not None
        base = {
            "AWS_ENDPOINT_URL": self.dynamodb_endpoint,
            "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI": f"{self.management.endpoint}/{deployment.stage}",
            "AWS_REGION": _REGION, "AWS_DEFAULT_REGION": _REGION,
            "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
        }
        local_specs = [s for name, s in deployment.functions.items() if name not in self.options.remote_functions]
        environment = _shared_environment(local_specs, base)
        for key in (*environment, "AWS_PROFILE", "AWS_SESSION_TOKEN"):
            self._saved_environment.setdefault(key, os.environ.get(key))
        os.environ.update(environment)
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            os.environ.pop(key, None)
        route_function_output(self.log)
        identities = EventIdentities()
        for name, spec in deployment.functions.items():
            function: Function
            if name in self.options.remote_functions:
                function = RemoteFunction(spec, self.options.remote_functions[name], self.log)
            else:
                function = InProcessFunction(spec, self.log, self.options.concurrency, _REGION)
            if self.options.faults is not None:
                function = FaultyFunction(function, self.options.faults, self.log, identities)
            self.functions[name] = function

    def _install_clock_skew(self) -> None:
        """The process seam's ``clock_skew`` patches the clock readings (harness/stack/clock.py) only when
        the plan has such a rule; an Invoke-API function keeps its own clock, which is said once."""
        plan = self.options.faults
        if plan is None or not plan.has("process", "clock_skew"):
            return
        clock.install()
        self._clock_skewed = True
        if self.options.remote_functions:
            print(f"relay-harness: clock_skew cannot skew Invoke-API functions (--function): "
                  f"{', '.join(sorted(self.options.remote_functions))} keep their own clock", file=sys.stderr)

    def _install_call_faults(self) -> None:
        """The store and management seams hook boto3's default session, from which the clients the
        handlers create from now on take their event handlers; time windows count from here, or from
        ``faults_started_at`` (a restarted stack keeps the windows of the run it belongs to)."""
        plan = self.options.faults
        if plan is None:
            return
        hooked = plan.live or plan.has("store") or plan.has("management") or plan.has("invocation", "timeout")
        if hooked or plan.has("process", "store_outage"):
            if boto3.DEFAULT_SESSION is None:
                boto3.setup_default_session()
            self.call_faults = CallFaults(plan, self.tables)
            self.call_faults.install(boto3.DEFAULT_SESSION.events)
        plan.start()
        origin = self.options.faults_started_at
        self.faults_started_at = time.time() if origin is None else origin
        plan.started -= time.time() - self.faults_started_at  # the monotonic clock's reading at that origin

    def _start_event_sources(self, deployment: Deployment) -> None:
        streams_client = local_ddb.client(self.dynamodb_endpoint, "dynamodbstreams")
        failures = self.options.log_dir / "stream-failures.jsonl" if self.options.log_dir else None
        checkpoints = None
        if self.options.stream_checkpoints:
            try:
                checkpoints = StreamCheckpoints(self.options.stream_checkpoints)
            except (OSError, ValueError) as exc:
                raise StackError(f"stream checkpoints {self.options.stream_checkpoints} cannot be read ({exc}); "
                                 "delete the file to start from the template's StartingPosition") from None
        for source in deployment.streams:
            props = source.properties
            on_failure = ((props.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
            mapping = StreamMapping(
                function=self.functions[source.function], stream_arn=source.stream_arn,
                batch_size=int(props.get("BatchSize", 100)),
                max_retry_attempts=int(props.get("MaximumRetryAttempts", -1)),
                max_record_age=int(props.get("MaximumRecordAgeInSeconds", -1)),
                bisect_on_error=props.get("BisectBatchOnFunctionError") in (True, "true"),
                report_item_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
                on_failure=str(on_failure) if on_failure else None,
                starting_position=str(props.get("StartingPosition", "LATEST")))
            event_source = StreamEventSource(mapping, StreamReader(streams_client, source.stream_arn), self.log,
                                             failures, stalled=self._stream_stalled, checkpoints=checkpoints)
            event_source.start()
            self.sources.append(event_source)
        if self.sources:
            if boto3.DEFAULT_SESSION is None:
                boto3.setup_default_session()
            boto3.DEFAULT_SESSION.events.register("after-call.dynamodb", self._wake_sources)
        if deployment.schedules:
            specs = [ScheduleSpec(s.rule_name, s.expression, self.functions[s.function], s.enabled)
                     for s in deployment.schedules]
            try:
                self.scheduler = Scheduler(specs, local_ddb.client(self.dynamodb_endpoint, "events"), self.log,
                                           self.options.schedule_interval)
            except TemplateError as exc:
                raise StackError(str(exc)) from None
            self.scheduler.create_rules()
            self.scheduler.start()

    def _stream_stalled(self) -> float:
        """Seconds the event sources must stop polling from now: the process seam's ``stream_stall``
        (logged once, when it first takes effect); then the backlog is delivered in order."""
        plan = self.options.faults
        stall = plan.ongoing("stream_stall") if plan is not None else None
        return plan.seconds_left(stall) if stall is not None else 0.0

    def _wake_sources(self, model: Any, **_: Any) -> None:
        """A function of this process wrote to DynamoDB: the stream pollers look now, not at their
        next interval (writers in other processes are seen at the interval, as with Lambda's poller)."""
        if model.name in _WRITE_OPERATIONS:
            for source in self.sources:
                source.wake.set()

    def stop(self) -> None:
        if self._clock_skewed:
            clock.uninstall()
            self._clock_skewed = False
        if self.call_faults is not None:
            self.call_faults.uninstall()
            self.call_faults = None
        if self.sources and boto3.DEFAULT_SESSION is not None:
            boto3.DEFAULT_SESSION.events.unregister("after-call.dynamodb", self._wake_sources)
        if self.scheduler:
            self.scheduler.stop()
        for source in self.sources:
            source.stop()
        for source in self.sources:
            source.join(timeout=10)
        if self.http:
            self.http.stop()
        if self.gateway:
            self.gateway.stop()
        if self.management:
            self.management.stop()
        for function in self.functions.values():
            if isinstance(function, InProcessFunction | FaultyFunction):
                function.close()
        if self.dynamodb:
            self.dynamodb.stop()
        self.log.close()
        for key, value in self._saved_environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_environment = {}
        self.scheduler, self.sources, self.http, self.gateway, self.management, self.dynamodb = (
            None, [], None, None, None, None)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what clients need ----------------------------------------------------------------
    @property
    def endpoints(self) -> dict[str, Any]:
        assert self.gateway and self.http and self.management and self.deployment
        stage = self.deployment.stage
        return {
            "websocket": f"{self.gateway.endpoint}/{stage}",
            "http": f"{self.http.endpoint}/{stage}",
            "management": f"{self.management.endpoint}/{stage}",
            "dynamodb": self.dynamodb_endpoint,
            "stage": stage,
            "tables": self.tables,
            "log_dir": str(self.options.log_dir) if self.options.log_dir else None,
            "schedules": [s.rule_name for s in self.deployment.schedules],
            "faults_started_at": self.faults_started_at,
        }

    def write_ready_file(self, path: Path) -> None:
        """Atomically, so a reader polling for the file never sees half of it."""
        write_json_atomic(path, self.endpoints)


class _NoConnections:
    """The management API's connections until the gateway is up: every id is gone."""

    def post(self, conn_id: str, data: bytes) -> bool:
        return False

    def describe(self, conn_id: str) -> dict[str, Any] | None:
        return None

    def close(self, conn_id: str) -> bool:
        return False

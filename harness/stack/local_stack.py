"""The whole local stack from one SAM template: DynamoDB, functions, both APIs, event sources."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from ..faults.plan import FaultPlan
from . import dynamodb as local_ddb
from .deployment import Deployment, deployment_context, load_deployment
from .execute_api import localise_all
from .fork_server import ForkServer, ForkServerError
from .http_api import HttpApiServer, HttpRoute
from .instances import InstanceFunction
from .invocation_faults import EventIdentities, FaultyFunction
from .local_ca import LocalCA, TrustError
from .logs import StackLog
from .management_api import Connections, ManagementApiServer
from .node_runtime import NodeFunction
from .npm_install import NpmError, install_dependencies
from .python_runtime import PythonFunction
from .runtime import Function, FunctionSpec, RemoteFunction
from .schedules import Scheduler, ScheduleSpec
from .stream_source import StreamCheckpoints, StreamEventSource, StreamMapping, write_json_atomic
from .streams import StreamReader
from .template import Template, TemplateError, table_specs
from .websocket_api import Quotas, WebSocketGateway

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "reference_relay" / "template.yaml"
_REGION = "us-east-1"


class StackError(Exception):
    """The stack cannot start as asked; the message says why and what to change."""


@dataclass
class StackOptions:
    template: Path = DEFAULT_TEMPLATE
    host: str = "127.0.0.1"
    websocket_port: int = 0
    http_port: int = 0
    management_port: int = 0
    management_https_port: int = 0  # @connections over HTTPS: https://{event domainName}/{stage}
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


def runtime_family(spec: FunctionSpec) -> str:
    """``python`` (also when the template names no Runtime) or ``node``; any other Runtime is refused
    (the identifiers are Lambda's: https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html)."""
    if not spec.runtime or spec.runtime.startswith("python"):
        return "python"
    if spec.runtime.startswith("nodejs"):
        return "node"
    raise StackError(f"{spec.logical_id}: Runtime {spec.runtime} cannot run on the local stack (it runs python3.x "
                     f"and nodejs* functions); serve it over the Lambda Invoke API with --function "
                     f"{spec.logical_id}=URL")


def _node_for(specs: list[FunctionSpec]) -> str | None:
    """The node executable for the ``nodejs*`` functions among ``specs``, or None if there are none."""
    node_specs = [s for s in specs if runtime_family(s) == "node"]
    if not node_specs:
        return None
    node = shutil.which("node")
    if node is None:
        spec = node_specs[0]
        raise StackError(f"{spec.logical_id}: Runtime {spec.runtime} needs node on PATH, which has none: install "
                         f"Node.js (Debian/Ubuntu: apt-get install nodejs npm) or serve it with --function "
                         f"{spec.logical_id}=URL")
    return node


class LocalStack:
    def __init__(self, options: StackOptions | None = None) -> None:
        self.options = options or StackOptions()
        self.log = StackLog(self.options.log_dir, echo=self.options.echo)
        self.dynamodb: local_ddb.LocalDynamoDB | None = None
        self.dynamodb_endpoint = ""
        self.management: ManagementApiServer | None = None
        self.management_https: ManagementApiServer | None = None
        self.local_ca: LocalCA | None = None
        self._temporary_tls_dir: Path | None = None  # removed on stop (no --log-dir to keep it in)
        self.base_environment: dict[str, str] = {}  # what every function gets from the stack
        self.gateway: WebSocketGateway | None = None
        self.http: HttpApiServer | None = None
        self.sources: list[StreamEventSource] = []
        self.scheduler: Scheduler | None = None
        self.functions: dict[str, Function] = {}
        self._node_functions: list[NodeFunction] = []
        self._node: str | None = None  # the node executable, when the template has nodejs* functions
        self.deployment: Deployment | None = None
        self.tables: dict[str, str] = {}  # logical id -> table name
        self.fork_server: ForkServer | None = None  # where Python functions' instances come from
        self._connections = _GatewayConnections()  # the management API's and the workers' view of the sockets
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
        self._node = self._check_runtimes(template)
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

        self._start_management()
        self._make_functions(deployment)
        self._say_what_seams_miss()
        routes = {key: self.functions[name] for key, name in deployment.websocket_routes.items()}
        assert self.management_https is not None
        self.gateway = WebSocketGateway(routes, deployment.selection_expression, stage=deployment.stage,
                                        log=self.log, quotas=options.quotas,
                                        callback_domain=self.management_https.authority,
                                        concurrency=options.concurrency).start(options.host, options.websocket_port)
        self._connections.target = self.gateway
        http_routes = [HttpRoute(method, path, self.functions[name]) for method, path, name in deployment.http_routes]
        self.http = HttpApiServer(http_routes, deployment.stage, self.log, options.host, options.http_port).start()
        self._start_fault_windows()
        self._start_event_sources(deployment)
        self.log.line("stack", f"up: {json.dumps(self.endpoints)}")

    def _start_management(self) -> None:
        """``@connections`` twice: plain HTTP (``AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI``) and HTTPS
        with a certificate of the stack's own CA (the events' ``domainName``, the template's
        execute-api URLs); the CA's files go to ``--log-dir``/tls, else to a folder removed on stop."""
        options = self.options
        self.management = ManagementApiServer(self._connections, options.host, options.management_port).start()
        if options.log_dir:
            folder = options.log_dir / "tls"
        else:
            folder = self._temporary_tls_dir = Path(tempfile.mkdtemp(prefix="relay-stack-tls-"))
        try:
            self.local_ca = LocalCA(folder, ("localhost", "127.0.0.1", "::1", options.host), os.environ)
        except TrustError as exc:
            raise StackError(str(exc)) from None
        self.management_https = ManagementApiServer(self._connections, options.host, options.management_https_port,
                                                    tls=self.local_ca.server_context()).start()

    def _start_dynamodb(self) -> None:
        options = self.options
        if options.dynamodb_endpoint:
            self.dynamodb_endpoint = options.dynamodb_endpoint
            return
        log_path = str(options.log_dir / "dynamodb.log") if options.log_dir else None
        self.dynamodb = local_ddb.LocalDynamoDB(options.host, options.dynamodb_port or None, log_path,
                                                ttl_delay=options.ttl_delay,
                                                stack_log_dir=str(options.log_dir) if options.log_dir else None).start()
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

    def _template_environment(self, spec: FunctionSpec) -> dict[str, str]:
        """The template's variables of one function, its execute-api URLs pointed here (``execute_api``)."""
        assert self.deployment is not None and self.management_https is not None
        return localise_all(spec.environment, self.deployment.websocket_apis, _REGION,
                            self.management_https.authority)

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """Every variable function ``logical_id`` runs with, wherever it runs: the template's
        (``_template_environment``) and the stack's (``base_environment``, which win)."""
        assert self.deployment is not None
        return {**self._template_environment(self.deployment.functions[logical_id]), **self.base_environment}

    def _make_functions(self, deployment: Deployment) -> None:
        assert self.management is not None and self.local_ca is not None
        self.base_environment = base = {
            "AWS_ENDPOINT_URL": self.dynamodb_endpoint,
            "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI": f"{self.management.endpoint}/{deployment.stage}",
            "AWS_REGION": _REGION, "AWS_DEFAULT_REGION": _REGION,
            "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
            # Trust in the HTTPS @connections listener (local_ca): the roots trusted so far plus the stack's CA.
            "AWS_CA_BUNDLE": str(self.local_ca.bundle_file), "NODE_EXTRA_CA_CERTS": str(self.local_ca.node_file),
        }
        specs = {name: replace(spec, environment=self._template_environment(spec))
                 for name, spec in deployment.functions.items()}
        local_specs = [s for name, s in specs.items() if name not in self.options.remote_functions]
        node = self._node
        self._install_npm_dependencies([s for s in local_specs if runtime_family(s) == "node"])
        plan = self.options.faults
        seams = {} if plan is None else {
            "plan": plan, "tables": self.tables, "clock_skew": plan.has("process", "clock_skew"),
            "hook_calls": _hooks_calls(plan)}
        management = tuple(server.authority for server in (self.management, self.management_https) if server)
        identities = EventIdentities()
        for name, spec in specs.items():
            function: Function
            if name in self.options.remote_functions:
                function = RemoteFunction(spec, self.options.remote_functions[name], self.log, self.options.concurrency)
            elif runtime_family(spec) == "node":
                assert node is not None
                function = NodeFunction(spec, self.log, node, base, self.options.concurrency, _REGION)
                self._node_functions.append(function)
            else:
                if self.fork_server is None:
                    try:
                        self.fork_server = ForkServer().start()
                    except ForkServerError as exc:
                        raise StackError(str(exc)) from None
                function = PythonFunction(spec, self.log, base, self.fork_server, self.options.concurrency, _REGION,
                                          **seams,
                                          connections=self._connections, management=management,
                                          on_write=self._wake_sources)
            if self.options.faults is not None:
                function = FaultyFunction(function, self.options.faults, self.log, identities)
            self.functions[name] = function

    def _check_runtimes(self, template: Template) -> str | None:
        """Refuse, before anything starts, a Runtime the stack cannot run; the node executable if needed."""
        bare = deployment_context(template, stack_name=self.options.stack_name, parameters=self.options.parameters)
        functions = load_deployment(template, bare).functions
        return _node_for([spec for name, spec in functions.items() if name not in self.options.remote_functions])

    def _install_npm_dependencies(self, specs: list[FunctionSpec]) -> None:
        """Each Node function folder with a package.json and no node_modules, once, as ``sam build`` would."""
        npm = shutil.which("npm")
        for folder in dict.fromkeys(spec.code_dir for spec in specs):
            try:
                if install_dependencies(folder, npm, lambda line: print(f"relay-harness: {line}", file=sys.stderr)):
                    self.log.line("stack", f"installed the npm dependencies of {folder}")
            except NpmError as exc:
                raise StackError(str(exc)) from None

    def _say_what_seams_miss(self) -> None:
        """The seams inside the functions (store, management, ``clock_skew``) reach Python functions
        only (python_worker hooks botocore and the clock); said once for the others."""
        plan = self.options.faults
        if plan is None:
            return
        if plan.has("process", "clock_skew") and self.options.remote_functions:
            print(f"relay-harness: clock_skew cannot skew Invoke-API functions (--function): "
                  f"{', '.join(sorted(self.options.remote_functions))} keep their own clock", file=sys.stderr)
        if plan.has("process", "clock_skew") and self._node_functions:
            print(f"relay-harness: clock_skew cannot skew Node.js functions: "
                  f"{', '.join(f.spec.name for f in self._node_functions)} keep their own clock", file=sys.stderr)
        if _hooks_calls(plan) and self._node_functions:
            print(f"relay-harness: the store and management seams hook boto3; the AWS calls of Node.js functions "
                  f"({', '.join(f.spec.name for f in self._node_functions)}) do not pass them", file=sys.stderr)

    def _start_fault_windows(self) -> None:
        """Time windows count from here, or from ``faults_started_at`` (a restarted stack keeps the
        windows of the run it belongs to)."""
        plan = self.options.faults
        if plan is None:
            return
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

    def _wake_sources(self) -> None:
        """A Python function wrote to DynamoDB: the stream pollers look now, not at their next
        interval (other writers are seen at the interval, as with Lambda's poller)."""
        for source in self.sources:
            source.wake.set()

    def stop(self) -> None:
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
        if self.management_https:
            self.management_https.stop()
        if self._temporary_tls_dir is not None:
            shutil.rmtree(self._temporary_tls_dir, ignore_errors=True)
            self._temporary_tls_dir = None
        for function in self.functions.values():
            if isinstance(function, InstanceFunction | RemoteFunction | FaultyFunction):
                function.close()
        if self.fork_server is not None:
            self.fork_server.stop()
            self.fork_server = None
        if self.dynamodb:
            self.dynamodb.stop()
        self.log.close()
        self.scheduler, self.sources, self.http, self.gateway, self.management, self.dynamodb = (
            None, [], None, None, None, None)
        self.management_https = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what clients need ----------------------------------------------------------------
    @property
    def endpoints(self) -> dict[str, Any]:
        assert self.gateway and self.http and self.management and self.management_https and self.deployment
        assert self.local_ca is not None
        stage = self.deployment.stage
        return {
            "websocket": f"{self.gateway.endpoint}/{stage}",
            "http": f"{self.http.endpoint}/{stage}",
            "management": f"{self.management.endpoint}/{stage}",
            "management_https": f"{self.management_https.endpoint}/{stage}",
            "ca_bundle": str(self.local_ca.bundle_file),
            "local_ca": str(self.local_ca.ca_file),
            "dynamodb": self.dynamodb_endpoint,
            "stage": stage,
            "tables": self.tables,
            "log_dir": str(self.options.log_dir) if self.options.log_dir else None,
            "schedules": [s.rule_name for s in self.deployment.schedules],
            "faults_started_at": self.faults_started_at,
            # What whoever serves a --function needs: its endpoint, and the variables it would get here.
            "remote_functions": {name: {"endpoint": endpoint, "environment": self.function_environment(name)}
                                 for name, endpoint in sorted(self.options.remote_functions.items())},
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


class _GatewayConnections:
    """The gateway's sockets once it is up (``target``), none before."""

    def __init__(self) -> None:
        self.target: Connections = _NoConnections()

    def post(self, conn_id: str, data: bytes) -> bool:
        return self.target.post(conn_id, data)

    def describe(self, conn_id: str) -> dict[str, Any] | None:
        return self.target.describe(conn_id)

    def close(self, conn_id: str) -> bool:
        return self.target.close(conn_id)


def _hooks_calls(plan: FaultPlan) -> bool:
    """Whether the plan needs the functions' AWS calls hooked (python_worker's store and management
    seams): a live plan, store or management rules, invocation timeouts (a call after the cut is
    stopped, as Lambda freezes a timed-out handler) or a store outage."""
    return (plan.live or plan.has("store") or plan.has("management") or plan.has("invocation", "timeout")
            or plan.has("process", "store_outage"))

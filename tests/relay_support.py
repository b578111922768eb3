"""Runs the reference relay's handlers in-process against a real local DynamoDB (moto server)
and a recording management API over HTTPS, the way the Lambda service would invoke them: the
events' ``domainName`` and the template's ``WEBSOCKET_API_ENDPOINT`` both lead there, as in the
local stack."""

from __future__ import annotations

import importlib
import itertools
import json
from pathlib import Path
from typing import Any

from harness.stack import dynamodb as local_ddb
from harness.stack.deployment import deployment_context
from harness.stack.events import http_event, schedule_event, stream_event, websocket_event
from harness.stack.execute_api import localise_all
from harness.stack.local_ca import LocalCA
from harness.stack.management_api import ManagementApiServer, RecordingConnections
from harness.stack.streams import StreamReader
from harness.stack.template import Template, resolve, table_specs

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "reference_relay" / "template.yaml"
STAGE = "production"


def handler(dotted: str) -> Any:
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


class LocalRelay:
    """One freshly reset deployment of the reference relay: tables, rule, handlers."""

    def __init__(self, ddb: local_ddb.LocalDynamoDB, management: ManagementApiServer,
                 connections: RecordingConnections, ca: LocalCA, overrides: dict[str, str] | None = None) -> None:
        self.ddb = ddb
        self.connections = connections
        self.domain = management.authority
        self.template = Template.load(TEMPLATE)
        self.context = deployment_context(self.template, parameters=overrides)
        ddb.reset()
        self.client = local_ddb.client(ddb.endpoint)
        specs = table_specs(self.template, self.context)
        streams = local_ddb.create_tables(self.client, specs)
        self.tables = {spec.logical_id: spec.name for spec in specs}
        self.stream_arn = streams[self.tables["SessionsTable"]]
        self.stream = StreamReader(local_ddb.client(ddb.endpoint, "dynamodbstreams"), self.stream_arn)
        self.events = local_ddb.client(ddb.endpoint, "events")
        self.rule_name = "local-cleanup"
        self.rule_arn = self.events.put_rule(Name=self.rule_name, ScheduleExpression="rate(1 minute)",
                                             State="DISABLED")["RuleArn"]
        variables = self.template.function_properties("WebSocketFunction")["Environment"]["Variables"]
        resolved = {k: str(v) for k, v in resolve(variables, self.context, "Globals").items()}
        self.environment = localise_all(resolved, {"WebSocketApi"}, "us-east-1", self.domain)
        self.environment.update({
            "AWS_ENDPOINT_URL": ddb.endpoint, "AWS_CA_BUNDLE": str(ca.bundle_file),
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
        })
        self._conn_ids = (f"conn{n}=" for n in itertools.count())
        self.stream_invocations: list[dict[str, Any]] = []

    def function(self, logical_id: str) -> Any:
        return handler(resolve(self.template.function_properties(logical_id)["Handler"], self.context, logical_id))

    # ---- the WebSocket API -------------------------------------------------------------------
    def ws(self, route: str, conn_id: str, **kwargs: Any) -> dict[str, Any]:
        event = websocket_event(route, conn_id, domain=self.domain, stage=STAGE, **kwargs)
        return self.function("WebSocketFunction")(event, None)

    def connect(self, **query: str) -> tuple[str, dict[str, Any]]:
        conn_id = next(self._conn_ids)
        response = self.ws("$connect", conn_id, query={k: str(v) for k, v in query.items()})
        if response["statusCode"] == 200:
            self.connections.open(conn_id)
        return conn_id, response

    def joined(self, **query: str) -> str:
        conn_id, response = self.connect(**query)
        assert response["statusCode"] == 200, response
        return conn_id

    def act(self, conn_id: str, body: dict[str, Any] | str) -> dict[str, Any]:
        text = body if isinstance(body, str) else json.dumps(body)
        return self.ws("$default", conn_id, body=text)

    def disconnect(self, conn_id: str) -> dict[str, Any]:
        self.connections.drop(conn_id)
        return self.ws("$disconnect", conn_id)

    # ---- event sources ----------------------------------------------------------------------
    def settle(self, max_rounds: int = 20) -> int:
        """Feed new stream records to the stream function until none are left; returns how many."""
        total = 0
        for _ in range(max_rounds):
            records = self.stream.poll()
            if not records:
                return total
            total += len(records)
            self.invoke_stream(records)
        raise AssertionError(f"the stream did not settle within {max_rounds} rounds")

    def invoke_stream(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        event = stream_event(records, self.stream_arn)
        result = self.function("StreamFunction")(event, None)
        self.stream_invocations.append(result)
        return result

    def http(self, method: str, route: str, raw_path: str, **path_parameters: str) -> dict[str, Any]:
        event = http_event(method, route, raw_path, path_parameters=path_parameters or None, stage=STAGE)
        return self.function("HttpFunction")(event, None)

    def cleanup(self) -> dict[str, Any]:
        return self.function("CleanupFunction")(schedule_event(self.rule_arn), None)

    # ---- looking at the state ---------------------------------------------------------------
    def items(self, logical_id: str) -> list[dict[str, Any]]:
        from boto3.dynamodb.types import TypeDeserializer

        deserialize = TypeDeserializer().deserialize
        items = self.client.scan(TableName=self.tables[logical_id])["Items"]
        return [{k: deserialize(v) for k, v in item.items()} for item in items]

    def session_items(self) -> list[dict[str, Any]]:
        return [i for i in self.items("SessionsTable") if not i["id"].startswith(".")]

    def rule_state(self) -> str:
        return self.events.describe_rule(Name=self.rule_name)["State"]

    def messages(self, conn_id: str, type_: str | None = None) -> list[dict[str, Any]]:
        found = self.connections.messages(conn_id)
        return [m for m in found if type_ is None or m["type"] == type_]

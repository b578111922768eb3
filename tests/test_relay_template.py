"""The SAM template: translates to CloudFormation, lints clean, and says what the issue asks."""

from __future__ import annotations

import copy

import pytest
from cfnlint.api import lint_file
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from tests.relay_support import TEMPLATE


class _NoManagedPolicies:
    def load(self) -> dict[str, str]:
        return {}


@pytest.fixture(scope="module")
def translated():
    body = yaml_parse(TEMPLATE.read_text())
    packaged = copy.deepcopy(body)
    # What `sam package` does before CloudFormation sees the template.
    packaged["Globals"]["Function"]["CodeUri"] = "s3://relay-artifacts/simple-relay.zip"
    packaged["Resources"]["ChaosLayer"]["Properties"]["ContentUri"] = "s3://relay-artifacts/chaos-layer.zip"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        return transform(packaged, {}, _NoManagedPolicies())


def test_cfn_lint_reports_nothing():
    matches = lint_file(TEMPLATE)
    assert [str(m) for m in matches] == []


def test_stream_event_source_is_configured_for_retries(translated):
    [mapping] = [r["Properties"] for r in translated["Resources"].values()
                 if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert mapping["BatchSize"] == 10
    assert mapping["MaximumRetryAttempts"] == 5
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["MaximumRecordAgeInSeconds"] == {"Ref": "StreamRecordMaxAgeSeconds"}
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["StreamFailureQueue", "Arn"]}


def test_tables_are_named_after_the_stack_with_ttl_and_the_sessions_stream(translated):
    tables = {k: r["Properties"] for k, r in translated["Resources"].items() if r["Type"] == "AWS::DynamoDB::Table"}
    assert set(tables) == {"SessionsTable", "ConnectionsTable", "MembersTable"}
    for props in tables.values():
        assert "${AWS::StackName}" in props["TableName"]["Fn::Sub"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["TimeToLiveSpecification"] == {"AttributeName": "expireAfter", "Enabled": True}
    assert tables["SessionsTable"]["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}


def test_routes_schedule_and_outputs(translated):
    resources = translated["Resources"]
    routes = {r["Properties"]["RouteKey"] for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Route"}
    assert routes == {"$connect", "$disconnect", "$default"}
    # SAM turns the HTTP API's events into an OpenAPI body.
    paths = resources["HttpApi"]["Properties"]["Body"]["paths"]
    assert {(p, m) for p, methods in paths.items() for m in methods} == {
        ("/ping", "get"), ("/notifyDisconnect/{memberId}", "get")}
    [rule] = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Events::Rule"]
    assert rule["Name"] == {"Fn::Sub": "${AWS::StackName}-cleanup"}
    assert set(translated["Outputs"]) >= {"WebSocketUrl", "HttpApiUrl"}


def test_functions_only_get_the_permissions_they_use(translated):
    roles = {k: r for k, r in translated["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    actions = {}
    for name, role in roles.items():
        statements = [s for p in role["Properties"].get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        listed = [[s["Action"]] if isinstance(s["Action"], str) else s["Action"] for s in statements]
        actions[name] = {action for group in listed for action in group}
    assert "dynamodb:Scan" not in actions["WebSocketFunctionRole"]
    assert "events:DisableRule" not in actions["StreamFunctionRole"]
    assert actions["HttpFunctionRole"] == {"dynamodb:GetItem", "execute-api:ManageConnections"}
    assert {"events:EnableRule", "events:DisableRule", "dynamodb:Scan"} <= actions["CleanupFunctionRole"]
    for found in actions.values():
        assert not any(a.endswith(":*") or a == "*" for a in found)

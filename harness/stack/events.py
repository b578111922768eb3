"""Lambda event payloads shaped as API Gateway, DynamoDB Streams and EventBridge send them, and the
one rule by which every event becomes the JSON a function receives (``to_json``)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def _lambda_json_default(value: Any) -> Any:
    """How Lambda writes what JSON has no type for: binary (a DynamoDB ``B`` value, each member of a
    ``BS``) as base64 text; a time as whole epoch seconds (a stream record's
    ``ApproximateCreationDateTime``, "rounded down to the closest second", DynamoDB Streams API
    reference, StreamRecord); a number read as ``Decimal`` as a JSON number."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return int(value.timestamp() // 1)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(event: Any) -> str:
    """``event`` as the JSON text Lambda hands a function: every event the stack builds, to any
    runtime (in this process, over the Invoke API, another language), goes through here."""
    return json.dumps(event, default=_lambda_json_default)


def _request_id() -> str:
    return str(uuid.uuid4())


def websocket_event(route_key: str, conn_id: str, *, domain: str, stage: str, api_id: str = "local",
                    query: dict[str, str] | None = None, body: str | None = None,
                    headers: dict[str, str] | None = None, source_ip: str = "127.0.0.1") -> dict[str, Any]:
    event_type = {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}.get(route_key, "MESSAGE")
    now = time.time()
    context: dict[str, Any] = {
        "routeKey": route_key, "eventType": event_type, "connectionId": conn_id, "domainName": domain,
        "stage": stage, "apiId": api_id, "requestId": _request_id(), "extendedRequestId": _request_id(),
        "requestTimeEpoch": int(now * 1000), "connectedAt": int(now * 1000),
        "requestTime": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "messageDirection": "IN", "identity": {"sourceIp": source_ip},
    }
    event: dict[str, Any] = {"requestContext": context, "isBase64Encoded": False}
    if event_type == "MESSAGE":
        context["messageId"] = _request_id()
        event["body"] = body
    if event_type == "CONNECT":
        event["headers"] = headers or {}
        event["queryStringParameters"] = query or None
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} if query else None
    return event


def http_event(method: str, route_path: str, raw_path: str, *, path_parameters: dict[str, str] | None = None,
               stage: str = "$default", domain: str = "127.0.0.1") -> dict[str, Any]:
    return {
        "version": "2.0", "routeKey": f"{method} {route_path}", "rawPath": raw_path, "rawQueryString": "",
        "headers": {"host": domain}, "pathParameters": path_parameters or None, "isBase64Encoded": False,
        "requestContext": {"http": {"method": method, "path": raw_path, "sourceIp": "127.0.0.1"},
                           "domainName": domain, "stage": stage, "requestId": _request_id(),
                           "routeKey": f"{method} {route_path}", "timeEpoch": int(time.time() * 1000)},
    }


def _lambda_record(record: dict[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """A DynamoDB Streams API record as Lambda delivers it (``userIdentity`` keys in lower camel case)."""
    shaped = {**record, "eventSource": "aws:dynamodb", "eventSourceARN": stream_arn, "awsRegion": region,
              "eventVersion": "1.1"}
    identity = record.get("userIdentity")
    if identity:
        shaped["userIdentity"] = {"type": identity.get("Type"), "principalId": identity.get("PrincipalId")}
    return shaped


def stream_event(records: list[dict[str, Any]], stream_arn: str, region: str = "us-east-1") -> dict[str, Any]:
    return {"Records": [_lambda_record(record, stream_arn, region) for record in records]}


def schedule_event(rule_arn: str, region: str = "us-east-1", account: str = "000000000000") -> dict[str, Any]:
    return {"version": "0", "id": _request_id(), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": account, "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "region": region,
            "resources": [rule_arn], "detail": {}}

"""The store and management seams: faults on the AWS calls handlers make, through botocore's events.

``CallFaults.install(events)`` registers two handlers on a botocore event system (the stack uses
boto3's default session, from which every client a handler creates later copies its handlers; the
Lambda wrapper, ``harness/lambda_chaos.py``, does the same at cold start). Nothing in the relay
changes. Per attempt, just before the request goes out (``before-send``), a rule may:

store (DynamoDB), matched on function, table (name or template logical id) and operation:
- ``ProvisionedThroughputExceededException``, ``ThrottlingException`` (400) and
  ``InternalServerError`` (500): answered instead of the store; botocore retries them as usual;
- ``TransactionConflict``: ``TransactWriteItems`` answered ``TransactionCanceledException`` with
  reason ``TransactionConflict`` (other operations are not touched by this type);
- ``latency`` with ``when = "before"`` (the call reaches the store late) or ``"after"`` (the store
  has answered, the caller hears late: between a handler's read and its write);
- ``commit_then_timeout``: the request is applied, then the caller gets a read timeout and botocore
  retries it. DynamoDB answers a retried ``TransactWriteItems`` with the same
  ``ClientRequestToken`` with the first outcome; this seam does the same for the transactions it
  timed out (the local store does not), so a retry of a committed transaction succeeds as on AWS.

management (``@connections``), matched on function and operation (``PostToConnection``,
``DeleteConnection``, ``GetConnection``): ``gone`` (410 GoneException), ``throttle`` (429
LimitExceededException, which botocore retries), ``internal_error`` (500), ``latency``.

process: ``store_outage``: while it lasts, every DynamoDB call of a handler fails to connect
(botocore retries, then the handler fails and its event source retries).

And for the invocation seam's ``timeout``: a call made after the invocation's cut raises
``InvocationFrozen``. Decisions are keyed on the invocation's stable key, the service, operation
and tables, the call's ordinal among the invocation's calls alike, and the attempt. Calls made
outside any invocation (the harness's own) are never touched.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from botocore.httpsession import URLLib3Session

from ..faults.plan import FaultPlan, Rule
from .invocation_keys import InvocationFrozen, frozen_at, invocation_calls, invocation_key
from .logs import current_invocation

_SEAM_OF = {"dynamodb": "store", "apigatewaymanagementapi": "management"}
_DYNAMODB_ERRORS = {"ProvisionedThroughputExceededException": 400, "ThrottlingException": 400,
                    "InternalServerError": 500}
_MANAGEMENT_ERRORS = {"gone": (410, "GoneException"), "throttle": (429, "LimitExceededException"),
                      "internal_error": (500, "InternalServerErrorException")}
_NOT_TRANSACTIONAL = ("ProvisionedThroughputExceededException", "ThrottlingException", "InternalServerError",
                      "latency", "commit_then_timeout")
_TOKEN_TTL_S = 600.0  # DynamoDB remembers a ClientRequestToken for 10 minutes


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Any:
        yield self.data


def aws_response(url: str, status: int, headers: dict[str, str], data: bytes) -> AWSResponse:
    """What a ``before-send`` handler returns instead of sending the request: botocore parses it as
    the service's answer (and retries it as such)."""
    return AWSResponse(url, status, {**headers, "Content-Length": str(len(data))}, _Body(data))


def _response(url: str, status: int, headers: dict[str, str], body: dict[str, Any]) -> AWSResponse:
    return aws_response(url, status, headers, json.dumps(body).encode())


def _tables(body: dict[str, Any]) -> list[str]:
    if "TableName" in body:
        return [body["TableName"]]
    if "TransactItems" in body:
        return sorted({next(iter(item.values())).get("TableName", "") for item in body["TransactItems"]})
    return sorted(body.get("RequestItems") or {})


class _Call:
    """What ``before-call`` learnt about the call the thread is making, for its attempts."""

    def __init__(self, seam: str, operation: str, facts: dict[str, Any], key: tuple[Any, ...],
                 body: dict[str, Any]) -> None:
        self.seam = seam
        self.operation = operation
        self.facts = facts
        self.key = key
        self.body = body
        self.attempt = 0


class CallFaults:
    """The store and management seams (and the invocation seam's freeze) for one stack."""

    def __init__(self, plan: FaultPlan, tables: dict[str, str] | None = None,
                 hook_id: str = "relay-harness-call-faults") -> None:
        """``tables``: logical id -> table name, so rules may match either; ``hook_id`` names the
        botocore registrations (two CallFaults on one session need two names). The requests this
        seam sends on a client's behalf (``latency`` after, ``commit_then_timeout``) verify HTTPS as
        that client does by default: with ``AWS_CA_BUNDLE`` when set (the local stack sets it for
        its HTTPS ``@connections``), else botocore's roots."""
        self.plan = plan
        self.hook_id = hook_id
        self.logical = {name: logical for logical, name in (tables or {}).items()}
        self._thread = threading.local()
        self._committed: dict[str, tuple[float, int, bytes]] = {}  # ClientRequestToken -> (t, status, body)
        self._lock = threading.Lock()
        self._http = URLLib3Session(verify=os.environ.get("AWS_CA_BUNDLE") or True)
        self._events: Any = None

    def install(self, events: Any) -> None:
        self._events = events
        events.register("before-call", self._before_call, unique_id=f"{self.hook_id}-call")
        events.register("before-send", self._before_send, unique_id=f"{self.hook_id}-send")

    def uninstall(self) -> None:
        if self._events is not None:
            self._events.unregister("before-call", unique_id=f"{self.hook_id}-call")
            self._events.unregister("before-send", unique_id=f"{self.hook_id}-send")
            self._events = None
        self._http.close()

    # ---- hooks -----------------------------------------------------------------------------
    def _before_call(self, model: Any, params: dict[str, Any], event_name: str, **_: Any) -> None:
        self._thread.call = None
        service = event_name.split(".")[1]
        seam, invocation, key = _SEAM_OF.get(service), current_invocation.get(), invocation_key.get()
        if seam is None or invocation is None or key is None:
            return
        try:
            body = json.loads(params.get("body") or b"{}")
        except ValueError:
            body = {}
        tables = _tables(body) if seam == "store" else []
        facts = {"function": invocation[0], "operation": model.name, "table": None}
        calls = invocation_calls.get()
        ordinal = 0
        if calls is not None:
            with self._lock:
                ordinal = calls[(service, model.name, *tables)]
                calls[(service, model.name, *tables)] += 1
        call = _Call(seam, model.name, facts, (*key, model.name, *tables, ordinal), body)
        call.facts["tables"] = tables
        self._thread.call = call

    def _before_send(self, request: Any, **_: Any) -> AWSResponse | None:
        deadline = frozen_at.get()
        if deadline is not None and time.monotonic() >= deadline:
            raise InvocationFrozen("the invocation timed out (injected); Lambda would have frozen it here")
        call: _Call | None = getattr(self._thread, "call", None)
        if call is None:
            return None
        call.attempt += 1
        key = (*call.key, call.attempt)
        if call.seam == "store":
            if self.plan.ongoing("store_outage") is not None:
                raise EndpointConnectionError(endpoint_url=request.url)
            token = call.body.get("ClientRequestToken") if call.operation == "TransactWriteItems" else None
            remembered = self._remembered(token)
            if remembered is not None:
                return _response(request.url, remembered[0], {}, json.loads(remembered[1] or b"{}"))
            rule = self._pick_store(call, key)
        else:
            rule = self.plan.pick("management", call.facts, key)
        if rule is None:
            return None
        target = {"function": call.facts["function"], "request_id": (current_invocation.get() or ("", ""))[1],
                  "operation": call.operation, "attempt": call.attempt}
        if call.seam == "store":
            target["tables"] = call.facts["tables"]
        self.plan.record(rule, target, key)
        return self._apply(rule, call, request, key)

    # ---- deciding and acting -----------------------------------------------------------------
    def _pick_store(self, call: _Call, key: tuple[Any, ...]) -> Rule | None:
        types = None if call.operation == "TransactWriteItems" else _NOT_TRANSACTIONAL
        for table in call.facts["tables"] or [None]:
            facts = {**call.facts, "table": table}
            rule = self.plan.pick("store", facts, key, types)
            if rule is None and table in self.logical:
                rule = self.plan.pick("store", {**facts, "table": self.logical[table]}, key, types)
            if rule is not None:
                return rule
        return None

    def _remembered(self, token: str | None) -> tuple[int, bytes] | None:
        if token is None:
            return None
        with self._lock:
            found = self._committed.get(token)
        if found is None or time.monotonic() - found[0] > _TOKEN_TTL_S:
            return None
        return found[1], found[2]

    def _apply(self, rule: Rule, call: _Call, request: Any, key: tuple[Any, ...]) -> AWSResponse | None:
        kind = rule.type
        if kind == "latency" and rule.params.get("when", "before") == "before":
            time.sleep(self.plan.delay_s(rule, key))
            return None
        if kind in ("latency", "commit_then_timeout"):
            response = self._http.send(request)
            if kind == "latency":
                time.sleep(self.plan.delay_s(rule, key))
                return response
            token = call.body.get("ClientRequestToken")
            if call.operation == "TransactWriteItems" and token:
                with self._lock:
                    self._committed[token] = (time.monotonic(), response.status_code, response.content)
            raise ReadTimeoutError(endpoint_url=request.url, error="the request was applied; its answer was lost "
                                                                   "(injected commit_then_timeout)")
        if call.seam == "management":
            status, code = _MANAGEMENT_ERRORS[kind]
            return _response(request.url, status, {"x-amzn-ErrorType": code}, {"message": f"{code} (injected)"})
        if kind == "TransactionConflict":
            items = call.body.get("TransactItems") or [{}]
            reasons = [{"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}] + [
                {"Code": "None"} for _ in items[1:]]
            return _response(request.url, 400, {}, {
                "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                "message": "Transaction cancelled, please refer cancellation reasons for specific reasons "
                           "[TransactionConflict] (injected)", "CancellationReasons": reasons})
        status = _DYNAMODB_ERRORS[kind]
        return _response(request.url, status, {}, {"__type": f"com.amazonaws.dynamodb.v20120810#{kind}",
                                                   "message": f"{kind} (injected)"})

"""What the seams behind the gateway key their decisions on, shared by the local stack and the
Lambda wrapper (``harness/lambda_chaos.py``): stdlib only, so it ships in the wrapper's layer.

- ``EventIdentities``: an event's matchable facts (function, source, route key, ``$default``
  action) and its stable identity: a socket's request target (from its ``$connect`` query) and the
  n-th event of that route on it; a stream batch's first and last sequence numbers and how often
  that batch was tried; an HTTP route and path and its n-th call;
- the invocation a thread works for: its key (``invocation_key``), its per-call counters
  (``invocation_calls``) and the time after which its AWS calls are refused (``frozen_at``, set by
  a ``timeout`` fault; such a call raises ``InvocationFrozen``).
"""

from __future__ import annotations

import contextvars
import json
import threading
from collections import Counter
from typing import Any

# The stable key of the invocation a thread is working for, and the per-invocation call counters.
invocation_key: contextvars.ContextVar[tuple[Any, ...] | None] = contextvars.ContextVar("invocation_key",
                                                                                        default=None)
invocation_calls: contextvars.ContextVar[Counter | None] = contextvars.ContextVar("invocation_calls", default=None)
# Monotonic time after which the invocation's AWS calls are refused (a ``timeout`` fault froze it).
frozen_at: contextvars.ContextVar[float | None] = contextvars.ContextVar("frozen_at", default=None)

# What an injected failure looks like (as Lambda reports a function error), by fault type.
INJECTED_ERRORS = {
    "error_before": {"errorType": "InjectedError", "errorMessage": "failed before the handler ran (injected)"},
    "error_after": {"errorType": "InjectedError", "errorMessage": "the handler ran; failed after it (injected)"},
    "throttle": {"errorType": "TooManyRequestsException", "errorMessage": "Rate Exceeded. (injected)"},
}


class InvocationFrozen(Exception):
    """An AWS call made after a ``timeout`` fault's cut: Lambda would have frozen the handler."""


def _source(event: dict[str, Any]) -> str | None:
    records = event.get("Records")
    if isinstance(records, list) and records and records[0].get("eventSource") == "aws:dynamodb":
        return "stream"
    context = event.get("requestContext") or {}
    if "connectionId" in context:
        return "websocket"
    if "http" in context:
        return "http"
    if event.get("source") == "aws.events":
        return "schedule"
    return None


def _action(event: dict[str, Any]) -> str | None:
    try:
        body = json.loads(event.get("body") or "")
    except (TypeError, ValueError):
        return None
    action = body.get("action") if isinstance(body, dict) else None
    return action if isinstance(action, str) else None


class EventIdentities:
    """Stable identities of events, shared by every wrapped function of a stack."""

    def __init__(self) -> None:
        self._targets: dict[str, str] = {}  # connection id -> request target (its $connect query)
        self._seen: Counter = Counter()
        self._lock = threading.Lock()

    def _next(self, *key: Any) -> int:
        with self._lock:
            self._seen[key] += 1
            return self._seen[key] - 1

    def facts_and_key(self, function: str, event: dict[str, Any]) -> tuple[dict[str, Any], tuple[Any, ...]]:
        source = _source(event)
        context = event.get("requestContext") or {}
        facts: dict[str, Any] = {"function": function, "source": source, "route": None, "action": None}
        if source == "websocket":
            route = context.get("routeKey")
            conn_id = context.get("connectionId")
            if route == "$connect":
                query = event.get("queryStringParameters") or {}
                target = "&".join(f"{k}={v}" for k, v in sorted(query.items()))
                with self._lock:
                    self._targets[conn_id] = target
            with self._lock:
                target = self._targets.get(conn_id, conn_id)
            facts.update(route=route, action=_action(event))
            return facts, (function, route, target, self._next(function, route, target))
        if source == "stream":
            first = event["Records"][0]["dynamodb"].get("SequenceNumber")
            last = event["Records"][-1]["dynamodb"].get("SequenceNumber")
            return facts, (function, "stream", first, last, self._next(function, first, last))
        if source == "http":
            facts["route"] = event.get("routeKey")
            path = event.get("rawPath")
            return facts, (function, facts["route"], path, self._next(function, facts["route"], path))
        return facts, (function, source, self._next(function, source))



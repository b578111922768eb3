"""The invocation seam: faults injected around a function's invocations by the stack's runtime.

``FaultyFunction`` wraps any ``Function`` (in-process or Invoke API) and, per invocation, asks the
plan for a rule matching the function, the event's source (``websocket``, ``http``, ``stream``,
``schedule``), route key and ``$default`` action:

- ``error_before``: the handler is not run, the invocation fails (FIS ``preventExecution``);
- ``error_after``: the handler runs, its side effects are kept, the invocation is reported failed
  (the event source retries the batch; a route answers AWS's internal-error frame);
- ``timeout``: reported timed out after ``after_ms``; from then on the handler's AWS calls are
  refused (Lambda freezes it), so exactly its work up to that point happened: the instance's
  process (Python or Node.js) is killed at the cut; an
  Invoke-API function is reported timed out at the cut, its handler running on where it is served
  (the stack cannot stop it); one that answered before the cut is reported timed out all the same;
- ``latency`` / ``cold_start``: the handler starts ``ms`` (+ seeded jitter) late;
- ``throttle``: ``TooManyRequestsException`` without running the handler (event sources retry it).

Decisions are keyed on the event's stable identity, never its request id (``invocation_keys.py``).
The key is also published (``invocation_key``) for the store and management seams, whose
decisions are keyed on it. An invocation the harness failed or cut short is not written to
``invocations.jsonl`` (that log is the handlers' own health; the fault log has the injection).
"""

from __future__ import annotations

import contextvars
import time
import uuid
from collections import Counter
from typing import Any

from ..faults.plan import FaultPlan
from .invocation_keys import INJECTED_ERRORS, EventIdentities, frozen_at, invocation_calls, invocation_key
from .logs import StackLog
from .runtime import Function, Invocation, invocation_cut, timed_out


class FaultyFunction:
    """A function with the invocation seam in front of it (the same interface as ``Function``)."""

    def __init__(self, inner: Function, plan: FaultPlan, log: StackLog, identities: EventIdentities) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.plan = plan
        self.log = log
        self.identities = identities

    def invoke(self, event: dict[str, Any], queued_ms: float = 0.0) -> Invocation:
        facts, key = self.identities.facts_and_key(self.spec.name, event)
        context = contextvars.copy_context()
        return context.run(self._invoke, event, facts, key, queued_ms)

    def _invoke(self, event: dict[str, Any], facts: dict[str, Any], key: tuple[Any, ...],
                queued_ms: float) -> Invocation:
        invocation_key.set(key)
        invocation_calls.set(Counter())
        rule = self.plan.pick("invocation", facts, key)
        if rule is None:
            return self.inner.invoke(event, queued_ms)
        target = {"function": self.spec.name, "source": facts["source"], "route": facts["route"],
                  "action": facts["action"], "event": list(key[1:])}
        if rule.type in ("error_before", "throttle"):
            invocation = Invocation(str(uuid.uuid4()), self.spec.name, error=dict(INJECTED_ERRORS[rule.type]),
                                    queued_ms=queued_ms)
            self.plan.record(rule, {**target, "request_id": invocation.request_id}, key)
            self.log.function_line(self.spec.name, invocation.request_id, f"INJECTED {rule.type} ({rule.name}): "
                                                                         "the handler did not run")
            return invocation
        if rule.type in ("latency", "cold_start"):
            self.plan.record(rule, target, key)
            time.sleep(self.plan.delay_s(rule, key))
            return self.inner.invoke(event, queued_ms)
        if rule.type == "timeout":
            cut = rule.params["after_ms"] / 1000
            invocation_cut.set(cut)
            frozen_at.set(time.monotonic() + cut)
        invocation = self.inner.invoke(event, queued_ms)
        if invocation.failed and not invocation.cut:
            return invocation  # it failed by itself: nothing was injected
        if rule.type == "timeout" and not invocation.cut:
            invocation.cut = True  # it ended before the cut; report it timed out
            invocation.error = timed_out(rule.params["after_ms"] / 1000)
        elif rule.type == "error_after":
            invocation.error = dict(INJECTED_ERRORS["error_after"])
        self.plan.record(rule, {**target, "request_id": invocation.request_id}, key)
        self.log.function_line(self.spec.name, invocation.request_id, f"INJECTED {rule.type} ({rule.name}): "
                                                                     f"{invocation.error['errorMessage']}")
        return invocation

    def close(self) -> None:
        closer = getattr(self.inner, "close", None)
        if closer is not None:
            closer()

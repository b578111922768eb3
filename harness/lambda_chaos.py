"""The seams behind the gateway inside AWS Lambda: a wrapper for Python handlers.

A function whose Handler is ``harness.lambda_chaos.NAME:MODULE:...:ATTR`` runs the handler
``MODULE....ATTR`` (its dots written as colons: Lambda splits a Handler at its last dot) as the
function NAME of the plan's rules (its logical id in the template). The wrapper ships as a layer
(``chaos_layer/``: this module and the stdlib-only parts of the harness it uses; boto3/botocore are
Lambda's own) and is configured by environment variables, the same for every function:

- ``RELAY_CHAOS_PLAN``: the plan, inline: JSON (``{"seed": 7, "fault": [{...}]}`` or a list of
  rules) or TOML (a chaos profile's text);
- ``RELAY_CHAOS_PARAMETER``: or the name of an SSM parameter holding it, read again once
  ``RELAY_CHAOS_CACHE_SECONDS`` (default 60) have passed, so a plan can change without a deploy;
- ``RELAY_CHAOS_SEED``: the seed (default: the plan's ``seed``, else 0);
- ``RELAY_CHAOS_TABLES``: ``LogicalId=table-name,...``, so store rules may match a logical id.

With neither plan variable set, the attribute is the real handler itself: nothing is wrapped or
hooked. A plan is a list of ``[[fault]]`` rules as in chaos profiles (``harness/faults/plan.py``
validates them and makes the seeded decisions), plus ``seed`` and ``start`` (unix seconds that the
rules' windows count from; default: when this execution environment read the plan). Rules a
function cannot carry out on itself are refused, one log line each: the wire seam's (the proxy's),
the process seam's (they act on the local stack) and the invocation seam's ``throttle`` (Lambda
throttles before any code runs: use reserved concurrency, or FIS). On Lambda:

- ``error_before``: ``InjectedError`` is raised, the handler does not run;
- ``error_after``: the handler runs, its side effects are kept, then ``InjectedError`` is raised;
- ``latency`` / ``cold_start``: the handler starts late (``ms`` + seeded jitter);
- ``timeout``: from ``after_ms`` on, the handler's AWS calls raise ``InvocationFrozen`` (as if
  Lambda had frozen it); when it returns, the wrapper sleeps out the function's remaining time, so
  Lambda itself reports "Task timed out" at the function's Timeout (not at ``after_ms``), and the
  invocation is billed to its Timeout;
- store and management rules: botocore hooks (``harness/stack/call_faults.py``) on boto3's default
  session, installed before the real handler's module is imported, so its clients have them.

Decisions are keyed on the event's stable identity (``harness/stack/invocation_keys.py``), as on
the local stack, but per execution environment: Lambda may run several, each with its own
counters, so a rule's ``count`` and an event's ordinal hold per environment, and a socket is known
by its connection id where another environment saw its ``$connect``. Every injected fault is one
JSON line on stdout (CloudWatch Logs): the fault log's fields (format 2) after the marker field
``"relay_chaos": "fault"``; ``relay-harness lambda-faults`` reads them back into a faults.jsonl.
"""

from __future__ import annotations

import contextvars
import importlib
import json
import math
import os
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from .faults.log import FaultLog
from .faults.plan import FaultPlan, PlanError, Rule, parse_rule
from .stack.call_faults import CallFaults
from .stack.invocation_keys import (
    INJECTED_ERRORS,
    EventIdentities,
    frozen_at,
    invocation_calls,
    invocation_key,
)
from .stack.logs import current_invocation

MARKER = '{"relay_chaos": "fault"'  # how every fault line starts
_PREFIX = "relay-chaos:"  # the wrapper's other lines (what it refused, where its plan came from)
_UNDOABLE = {
    "wire": "wire faults are the proxy's (run `relay-harness proxy` in front of the API)",
    "process": "process faults act on the local stack, not on a function",
}
_NO_THROTTLE = ("throttle cannot be done from inside a function (Lambda throttles before any code runs: "
                "use reserved concurrency, or AWS FIS)")
_DOCUMENT_KEYS = ("fault", "seed", "start", "description")


class InjectedError(Exception):
    """The invocation failed because a rule said so (Lambda reports its errorType: InjectedError)."""


def say(message: str) -> None:
    """One line of the wrapper's own in the function's log."""
    print(f"{_PREFIX} {message}", flush=True)


class StdoutFaultLog(FaultLog):
    """The fault log as JSON lines on stdout (CloudWatch Logs), each starting with ``MARKER``."""

    def __init__(self) -> None:
        super().__init__(None, keep=False)

    def record(self, seam: str, fault: str, target: dict[str, Any], params: dict[str, Any], rule: str,
               seq: Any) -> dict[str, Any]:
        entry = super().record(seam, fault, target, params, rule, seq)
        print(json.dumps({"relay_chaos": "fault", **entry}), flush=True)
        return entry


def parse_plan(text: str, seed: int | None = None) -> tuple[list[Rule], int, float | None, list[str]]:
    """(rules, seed, start, refusals) of a plan's text, JSON or TOML. ``seed`` wins over the plan's.
    Refusals are one line per rule the wrapper cannot carry out. Raises PlanError (one line)."""
    try:
        document: Any = json.loads(text)
    except ValueError:
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PlanError(f"the plan is neither JSON nor TOML ({exc})") from None
    if isinstance(document, list):
        document = {"fault": document}
    if not isinstance(document, dict):
        raise PlanError("the plan must be a list of rules or a table with 'fault' (the rules), 'seed' and 'start'")
    unknown = set(document) - set(_DOCUMENT_KEYS)
    if unknown:
        raise PlanError(f"the plan has no key {sorted(unknown)[0]!r}; its keys are {', '.join(_DOCUMENT_KEYS)}")
    faults = document.get("fault", [])
    if not isinstance(faults, list):
        raise PlanError("the plan's 'fault' must be a list of rules")
    plan_seed = document.get("seed", 0) if seed is None else seed
    start = document.get("start")
    for key, value in (("seed", plan_seed), ("start", start)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value)):
            raise PlanError(f"the plan's {key!r} must be a number, not {value!r}")
    rules: list[Rule] = []
    refusals: list[str] = []
    for index, raw in enumerate(faults):
        name = raw.get("name", f"fault-{index + 1}") if isinstance(raw, dict) else f"fault-{index + 1}"
        seam = raw.get("seam", "wire") if isinstance(raw, dict) else None
        if seam in _UNDOABLE:
            refusals.append(f"fault {name!r} skipped: {_UNDOABLE[seam]}")
            continue
        rule = parse_rule(raw, f"fault-{index + 1}")
        if rule.seam == "invocation" and rule.type == "throttle":
            refusals.append(f"fault {rule.name!r} skipped: {_NO_THROTTLE}")
        elif any(r.name == rule.name for r in rules):
            raise PlanError(f"two faults are named {rule.name!r}; names must be unique")
        else:
            rules.append(rule)
    return rules, int(plan_seed), None if start is None else float(start), refusals


def _tables(text: str) -> dict[str, str]:
    pairs = (item.partition("=") for item in text.split(",") if item.strip())
    return {logical.strip(): name.strip() for logical, _, name in pairs if name.strip()}


class Chaos:
    """One execution environment's plan (inline, or from SSM with a cache), its event identities
    and its botocore hooks. ``environ`` is read once; the hooks are installed on creation."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.inline = environ.get("RELAY_CHAOS_PLAN", "")
        self.parameter = environ.get("RELAY_CHAOS_PARAMETER", "")
        try:
            self.cache_s = float(environ.get("RELAY_CHAOS_CACHE_SECONDS") or 60)
            self.seed = int(environ["RELAY_CHAOS_SEED"]) if environ.get("RELAY_CHAOS_SEED") else None
        except ValueError:
            raise PlanError("RELAY_CHAOS_CACHE_SECONDS and RELAY_CHAOS_SEED must be numbers") from None
        self.identities = EventIdentities()
        self.log = StdoutFaultLog()
        self.plan = FaultPlan([], 0, self.log)
        self._text: str | None = None
        self._next_read = -math.inf
        self._ssm: Any = None
        self._lock = threading.Lock()
        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        self.call_faults = CallFaults(self.plan, _tables(environ.get("RELAY_CHAOS_TABLES", "")),
                                      hook_id="relay-harness-lambda-chaos")
        self.call_faults.install(boto3.DEFAULT_SESSION.events)
        if self.inline:
            self._use(self.inline, "RELAY_CHAOS_PLAN")

    def current(self) -> FaultPlan:
        """The plan now: an SSM plan is read again once its cache time has passed."""
        with self._lock:
            if self.parameter and not self.inline and time.monotonic() >= self._next_read:
                self._next_read = time.monotonic() + self.cache_s
                text = self._read_parameter()
                if text is not None and text != self._text:
                    self._use(text, f"SSM parameter {self.parameter}")
            return self.plan

    def _read_parameter(self) -> str | None:
        try:
            if self._ssm is None:
                self._ssm = boto3.client("ssm")
            return self._ssm.get_parameter(Name=self.parameter, WithDecryption=True)["Parameter"]["Value"]
        except (BotoCoreError, ClientError) as exc:
            say(f"cannot read SSM parameter {self.parameter} ({exc}); keeping the current plan")
            return None

    def _use(self, text: str, source: str) -> None:
        self._text = text
        try:
            rules, seed, start, refusals = parse_plan(text, self.seed)
        except PlanError as exc:
            say(f"plan from {source} refused: {exc}; no faults until it is fixed")
            rules, seed, start, refusals = [], 0, None, []
        plan = FaultPlan(rules, seed, self.log)
        if start is not None:
            plan.started = time.monotonic() - (time.time() - start)
        self.plan = self.call_faults.plan = plan
        for refusal in refusals:
            say(refusal)
        say(f"plan from {source}: {len(rules)} rule(s), seed {seed}")

    def wrap(self, name: str, handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """``handler`` with the invocation seam in front of it, as the function ``name``."""

        def wrapped(event: Any, context: Any) -> Any:
            return contextvars.copy_context().run(self._invoke, name, handler, event, context)

        wrapped.__wrapped__ = handler  # type: ignore[attr-defined]
        return wrapped

    def close(self) -> None:
        self.call_faults.uninstall()

    def _invoke(self, name: str, handler: Callable[[Any, Any], Any], event: Any, context: Any) -> Any:
        plan = self.current()
        facts, key = self.identities.facts_and_key(name, event if isinstance(event, dict) else {})
        request_id = str(getattr(context, "aws_request_id", ""))
        current_invocation.set((name, request_id))
        invocation_key.set(key)
        invocation_calls.set(Counter())
        rule = plan.pick("invocation", facts, key)
        if rule is None:
            return handler(event, context)
        target = {"function": name, "source": facts["source"], "route": facts["route"], "action": facts["action"],
                  "event": list(key[1:]), "request_id": request_id}
        if rule.type == "error_before":
            plan.record(rule, target, key)
            raise InjectedError(INJECTED_ERRORS["error_before"]["errorMessage"])
        if rule.type in ("latency", "cold_start"):
            plan.record(rule, target, key)
            time.sleep(plan.delay_s(rule, key))
            return handler(event, context)
        if rule.type == "error_after":
            handler(event, context)  # a failure of its own propagates: nothing was injected
            plan.record(rule, target, key)
            raise InjectedError(INJECTED_ERRORS["error_after"]["errorMessage"])
        cut = time.monotonic() + rule.params["after_ms"] / 1000  # timeout
        frozen_at.set(cut)
        try:
            handler(event, context)
        except Exception:
            if time.monotonic() < cut:
                raise  # it failed by itself before the cut
        plan.record(rule, target, key)
        time.sleep(context.get_remaining_time_in_millis() / 1000 + 1)  # Lambda reports the timeout
        raise InjectedError("the invocation outlived its timeout (injected)")  # only if Lambda did not stop it


def _split(spec: str) -> tuple[str, str, str]:
    parts = spec.split(":")
    if len(parts) < 3 or not all(parts):
        raise AttributeError(f"handler harness.lambda_chaos.{spec} must look like "
                             "harness.lambda_chaos.NAME:MODULE:ATTR (the real handler's dots as colons)")
    return parts[0], ".".join(parts[1:-1]), parts[-1]


_chaos: Chaos | None = None
_handlers: dict[str, Callable[[Any, Any], Any]] = {}
_lock = threading.Lock()


def handler_for(spec: str, environ: Mapping[str, str] | None = None) -> Callable[[Any, Any], Any]:
    """The callable for ``harness.lambda_chaos.SPEC``: the real handler itself when no plan is set,
    else the real handler wrapped (this environment's ``Chaos`` is made on first use, before the
    real handler's module is imported)."""
    global _chaos
    name, module, attribute = _split(spec)
    environ = os.environ if environ is None else environ
    with _lock:
        if spec not in _handlers:
            on = bool(environ.get("RELAY_CHAOS_PLAN") or environ.get("RELAY_CHAOS_PARAMETER"))
            if on and _chaos is None:
                _chaos = Chaos(environ)
            real = getattr(importlib.import_module(module), attribute)
            _handlers[spec] = _chaos.wrap(name, real) if on and _chaos is not None else real
        return _handlers[spec]


def __getattr__(attribute: str) -> Any:
    """Lambda (and the local runtime) look the Handler's last part up here."""
    if ":" not in attribute:
        raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
    return handler_for(attribute)

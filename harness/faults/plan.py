"""The seams behind the gateway: fault rules, their validation, matching and seeded decisions.

One rule is one ``[[fault]]`` table of a chaos profile whose ``seam`` is ``invocation``, ``store``
or ``management`` (the wire seam's rules are the proxy's, ``harness/proxy/faults.py``)::

    [[fault]]
    name = "stream-retried"
    seam = "invocation"
    type = "error_after"              # see SEAMS for every seam's types and parameters
    probability = 0.2                 # default 1
    count = 5                         # at most this many times in the run (default: no limit)
    window = { start = 3, end = 30 }  # seconds after the stack started; or at = 3, for = 27
    match = { function = "StreamFunction", source = "stream" }   # a value or a list of values

A decision is ``decide(probability, seed, rule name, *key)`` where the key is the stable identity
of what is being decided (a function and its event's stable identity, the n-th store call of that
invocation, ...), never a request id or the time, so a seed replays the same faults for the same
traffic. Every injected fault is one line of the fault log (shared format 2), written when the
fault takes effect.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from . import fault_name
from .decisions import decide, uniform
from .log import FaultLog

_MS = (0.0, 900_000.0)
# seam -> ({type -> {param -> (default or None when required, minimum, maximum) | tuple of choices}}, match keys)
SEAMS: dict[str, tuple[dict[str, dict[str, Any]], tuple[str, ...]]] = {
    "invocation": ({
        "error_before": {},
        "error_after": {},
        "timeout": {"after_ms": (None, *_MS)},
        "latency": {"ms": (None, *_MS), "jitter_ms": (0.0, *_MS)},
        "throttle": {},
        "cold_start": {"ms": (None, *_MS)},
    }, ("function", "source", "route", "action")),
    "store": ({
        "ProvisionedThroughputExceededException": {},
        "ThrottlingException": {},
        "TransactionConflict": {},
        "InternalServerError": {},
        "latency": {"ms": (None, *_MS), "jitter_ms": (0.0, *_MS), "when": ("before", "after")},
        "commit_then_timeout": {},
    }, ("function", "table", "operation")),
    "management": ({
        "gone": {},
        "throttle": {},
        "internal_error": {},
        "latency": {"ms": (None, *_MS), "jitter_ms": (0.0, *_MS)},
    }, ("function", "operation")),
    # Whole-stack faults over a time span (``at`` + ``for``, or a window with both ends).
    "process": ({
        "store_outage": {},
        "stream_stall": {},
        "clock_skew": {"ms": (None, -86_400_000.0, 86_400_000.0)},  # the functions' clock off by ms (+- 24 h)
        "kill": {},
    }, ()),
}
SOURCES = ("websocket", "http", "stream", "schedule")
_FIELDS = ("name", "seam", "type", "probability", "count", "window", "at", "for", "match", "params")


class PlanError(ValueError):
    """An invalid rule: the message names the rule, the field and the allowed values."""


@dataclass(frozen=True)
class Rule:
    name: str
    seam: str
    type: str
    probability: float = 1.0
    count: int | None = None
    start: float | None = None
    end: float | None = None
    match: tuple[tuple[str, tuple[str, ...]], ...] = ()
    params: dict[str, Any] = field(default_factory=dict)

    def in_window(self, elapsed: float) -> bool:
        return (self.start is None or elapsed >= self.start) and (self.end is None or elapsed < self.end)

    def matches(self, facts: dict[str, Any]) -> bool:
        """Every match key must equal one of its values; a fact that is unknown (None) never matches."""
        return all(facts.get(key) in values for key, values in self.match)


def _number(where: str, key: str, value: Any, low: float, high: float, whole: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PlanError(f"{where}: {key!r} must be a number from {low:g} to {high:g}, not {value!r}")
    if whole and value != int(value):
        raise PlanError(f"{where}: {key!r} must be a whole number, not {value!r}")
    if not low <= value <= high:
        raise PlanError(f"{where}: {key!r} must be from {low:g} to {high:g}, not {value!r}")
    return value


def _window(where: str, raw: dict[str, Any]) -> tuple[float | None, float | None]:
    if "window" in raw and ("at" in raw or "for" in raw):
        raise PlanError(f"{where}: give either 'window' or 'at' (+ 'for'), not both")
    if "for" in raw and "at" not in raw:
        raise PlanError(f"{where}: 'for' needs 'at' (the second it starts)")
    if "at" in raw:
        start = _number(where, "at", raw["at"], 0, 1e9)
        end = start + _number(where, "for", raw["for"], 0.001, 1e9) if "for" in raw else None
        return start, end
    window = raw.get("window")
    if window is None:
        return None, None
    if not isinstance(window, dict) or set(window) - {"start", "end"}:
        raise PlanError(f"{where}: 'window' must be {{start = SECONDS, end = SECONDS}} (either may be left out)")
    start = _number(where, "window.start", window["start"], 0, 1e9) if "start" in window else None
    end = _number(where, "window.end", window["end"], 0, 1e9) if "end" in window else None
    if start is not None and end is not None and end <= start:
        raise PlanError(f"{where}: window end ({end:g}) must be after its start ({start:g})")
    return start, end


def _params(where: str, kind: str, allowed: dict[str, Any], raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise PlanError(f"{where}: 'params' must be a table")
    unknown = set(raw) - set(allowed)
    if unknown:
        listed = ", ".join(sorted(allowed)) or "none"
        raise PlanError(f"{where}: {kind} takes no parameter {sorted(unknown)[0]!r} (it takes: {listed})")
    params: dict[str, Any] = {}
    for key, spec in allowed.items():
        if isinstance(spec[0], str):  # a choice among strings; the first is the default
            value = raw.get(key, spec[0])
            if value not in spec:
                raise PlanError(f"{where}: params.{key} must be one of {', '.join(spec)}, not {value!r}")
            params[key] = value
        elif key in raw:
            params[key] = _number(where, f"params.{key}", raw[key], spec[1], spec[2])
        elif spec[0] is None:
            raise PlanError(f"{where}: {kind} needs params.{key} (from {spec[1]:g} to {spec[2]:g})")
        else:
            params[key] = spec[0]
    return params


def _match(where: str, keys: tuple[str, ...], raw: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not keys:
        raise PlanError(f"{where}: 'match' must be a table such as {{{keys[0]} = \"...\"}}" if keys else
                        f"{where}: this seam takes no 'match'")
    unknown = set(raw) - set(keys)
    if unknown:
        raise PlanError(f"{where}: unknown match field {sorted(unknown)[0]!r}; this seam matches on "
                        f"{', '.join(keys)}")
    out = []
    for key, value in sorted(raw.items()):
        values = tuple(value) if isinstance(value, list) else (value,)
        if not values or not all(isinstance(v, str) and v for v in values):
            raise PlanError(f"{where}: match {key} must be a string or a list of strings, not {value!r}")
        if key == "source" and set(values) - set(SOURCES):
            raise PlanError(f"{where}: match source must be one of {', '.join(SOURCES)}, not {value!r}")
        out.append((key, values))
    return tuple(out)


def parse_rule(raw: Any, default_name: str = "fault") -> Rule:
    """Validate one non-wire ``[[fault]]`` table. Raises PlanError with a one-line reason."""
    name, where = fault_name(raw, default_name, PlanError)
    seam = raw.get("seam")
    if seam not in SEAMS:
        raise PlanError(f"{where}: 'seam' must be one of wire, {', '.join(SEAMS)}, not {seam!r}")
    unknown = set(raw) - set(_FIELDS)
    if unknown:
        raise PlanError(f"{where}: unknown field {sorted(unknown)[0]!r}; fields are {', '.join(_FIELDS)}")
    types, match_keys = SEAMS[seam]
    kind = raw.get("type")
    if kind not in types:
        raise PlanError(f"{where}: the {seam} seam's 'type' must be one of {', '.join(types)}, not {kind!r}")
    probability = float(_number(where, "probability", raw.get("probability", 1.0), 0, 1))
    count = raw.get("count")
    if count is not None:
        count = int(_number(where, "count", count, 1, 1e12, whole=True))
    start, end = _window(where, raw)
    if seam == "process" and (start is None or (end is None and kind != "kill")
                              or set(raw) & {"probability", "count", "match"}):
        span = ("'at' (and optionally 'for', the seconds the stack stays down before its restart)" if kind == "kill"
                else "'at' and 'for' (or a window with start and end)")
        raise PlanError(f"{where}: a process fault happens once: give {span}, and no probability, count or match")
    params = _params(where, kind, types[kind], raw.get("params", {}))
    if seam == "process":  # the span (a kill's: its downtime), as the report and the checkers read it
        params["seconds"] = end - start if end is not None and start is not None else 0.0
    return Rule(name, seam, kind, probability, count, start, end, _match(where, match_keys, raw.get("match")),
                params)


def delay_s(rule: Rule, seed: int, key: tuple[Any, ...]) -> float:
    """A delaying rule's delay for the event ``key``, in seconds: ``ms`` plus a share of ``jitter_ms``
    drawn from ``seed`` and ``key``, so any process with the same seed gives the same delay."""
    jitter = rule.params.get("jitter_ms", 0.0) * uniform(seed, rule.name, "jitter", *key)
    return (rule.params.get("ms", 0.0) + jitter) / 1000


class FaultPlan:
    """The rules of one run for the seams behind the gateway, their counters and the fault log.

    ``start()`` fixes the time windows count from (the stack calls it once it accepts traffic).
    Thread-safe: handlers decide concurrently.

    ``live=True``: rules may also be added (``add``) and removed (``remove``) while the stack runs,
    so the stack installs every seam's hooks from the start, whatever the first rules are.
    """

    def __init__(self, rules: list[Rule], seed: int, log: FaultLog | None = None, live: bool = False) -> None:
        self.rules = rules
        self.seed = seed
        self.log = log or FaultLog()
        self.live = live
        self.started = time.monotonic()
        self._used: dict[str, int] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        self.started = time.monotonic()

    def add(self, raw: dict[str, Any]) -> Rule:
        """Validate one ``[[fault]]`` table as a profile's are (PlanError, one line) and apply it from
        now on; its window and ``at`` still count from the stack's start. Its injections are logged
        like any rule's. The plan must be ``live`` (else the stack may lack the seam's hooks).
        Returns the rule; a rule of the same name must be removed first."""
        rule = parse_rule(raw, f"rule-{len(self.rules) + 1}")
        if not self.live:
            raise PlanError(f"{rule.name!r}: this plan was not made live=True, so the stack may not have "
                            "installed the hooks a rule added now needs")
        with self._lock:
            if any(r.name == rule.name for r in self.rules):
                raise PlanError(f"{rule.name!r}: a rule of that name exists; remove it first or pick another name")
            self.rules = [*self.rules, rule]  # a new list: a decision iterating the old one is unaffected
            self._used.pop(rule.name, None)
        return rule

    def remove(self, name: str) -> bool:
        """Stop applying the rule ``name`` (added or from the profile); False if there is none."""
        with self._lock:
            kept = [r for r in self.rules if r.name != name]
            removed = len(kept) < len(self.rules)
            self.rules = kept
        return removed

    def used(self, name: str) -> int:
        """How many times the rule ``name`` has taken effect so far."""
        with self._lock:
            return self._used.get(name, 0)

    def has(self, seam: str, *types: str) -> bool:
        return any(r.seam == seam and (not types or r.type in types) for r in self.rules)

    def pick(self, seam: str, facts: dict[str, Any], key: tuple[Any, ...],
             types: tuple[str, ...] | None = None) -> Rule | None:
        """The first rule of ``seam`` (optionally of these types) that is in its window, matches
        ``facts``, is decided yes for ``key`` and has not used up its count; None when none does."""
        elapsed = time.monotonic() - self.started
        for rule in self.rules:
            if rule.seam != seam or (types and rule.type not in types) or not rule.in_window(elapsed):
                continue
            if not rule.matches(facts) or not decide(rule.probability, self.seed, rule.name, *key):
                continue
            with self._lock:
                used = self._used.get(rule.name, 0)
                if rule.count is not None and used >= rule.count:
                    continue
                self._used[rule.name] = used + 1
            return rule
        return None

    def ongoing(self, kind: str) -> Rule | None:
        """The ``process`` rule of this type whose span is now, if any; logged the first time it is asked for
        (when it first takes effect)."""
        elapsed = time.monotonic() - self.started
        for rule in self.rules:
            if rule.seam == "process" and rule.type == kind and rule.in_window(elapsed):
                with self._lock:
                    first = rule.name not in self._used
                    self._used[rule.name] = 1
                if first:
                    self.record(rule, {"scope": "stack"}, (rule.name,))
                return rule
        return None

    def seconds_left(self, rule: Rule) -> float:
        """Until the end of ``rule``'s window (0 when it has none or it is over)."""
        return 0.0 if rule.end is None else max(0.0, self.started + rule.end - time.monotonic())

    def delay_s(self, rule: Rule, key: tuple[Any, ...]) -> float:
        return delay_s(rule, self.seed, key)

    def record(self, rule: Rule, target: dict[str, Any], key: tuple[Any, ...]) -> None:
        """One line in the fault log, now (call it when the fault takes effect)."""
        self.log.record(rule.seam, rule.type, target, rule.params, rule.name, "/".join(map(str, key)))

"""Wire fault specifications: what each fault is, how it is written, and its validation.

A spec is a plain mapping, the same from the command line, a profile file, the control API and
Python. Toxiproxy's spellings are accepted too (``stream`` for direction, ``toxicity`` for
probability, ``attributes`` for the parameters), so its users feel at home.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..faults import fault_name
from .frames import OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT

# Per message: decided for each whole message (or control frame) that matches.
MESSAGE_FAULTS = ("drop", "duplicate", "delay", "reorder", "corrupt", "truncate", "reset", "close", "blackhole",
                  "timeout")
# Per connection: decided once when a connection opens, then shape all of its traffic.
CONNECTION_FAULTS = ("latency", "bandwidth", "slicer", "limit_data")
# The whole proxy: happen at a time, to every connection.
PROXY_FAULTS = ("mass_disconnect", "pause", "refuse")
FAULT_TYPES = MESSAGE_FAULTS + CONNECTION_FAULTS + PROXY_FAULTS

DIRECTIONS = ("upstream", "downstream", "both")
OPCODE_GROUPS = {"text": {OP_TEXT}, "binary": {OP_BINARY}, "data": {OP_TEXT, OP_BINARY}, "close": {OP_CLOSE},
                 "ping": {OP_PING}, "pong": {OP_PONG}, "control": {OP_CLOSE, OP_PING, OP_PONG},
                 "continuation": {OP_CONTINUATION}}

# name -> (default, minimum, maximum, kind); a default of None means required.
_PARAMS: dict[str, dict[str, tuple[Any, float, float, type]]] = {
    "drop": {},
    "duplicate": {"copies": (1, 1, 100, int)},
    "delay": {"ms": (None, 0, 600_000, float), "jitter_ms": (0, 0, 600_000, float)},
    "reorder": {"hold": (1, 1, 1000, int), "max_wait_ms": (1000, 0, 600_000, float)},
    "corrupt": {"bytes": (1, 1, 1 << 20, int)},
    "truncate": {"keep_bytes": (0, 0, 1 << 24, int)},
    "reset": {},
    "close": {"code": (1001, 1000, 4999, int)},
    "blackhole": {},
    "timeout": {"ms": (0, 0, 3_600_000, float)},
    "latency": {"ms": (None, 0, 600_000, float), "jitter_ms": (0, 0, 600_000, float)},
    "bandwidth": {"kbps": (None, 0.001, 10_000_000, float)},
    "slicer": {"size_bytes": (64, 1, 1 << 20, int), "delay_us": (0, 0, 10_000_000, float)},
    "limit_data": {"bytes": (None, 0, 1 << 40, int)},
    "mass_disconnect": {"code": (1001, 1000, 4999, int)},
    "pause": {"seconds": (None, 0, 3600, float)},
    "refuse": {"seconds": (None, 0, 3600, float)},
}
_STRING_PARAMS = {"close": {"reason"}, "mass_disconnect": {"reason"}}
_KNOWN_KEYS = {"name", "type", "direction", "stream", "probability", "toxicity", "match", "count", "window", "at",
               "params", "attributes", "seam"}


class FaultSpecError(ValueError):
    """An invalid fault spec; the message names the fault, the field, and what would be valid."""


@dataclass(frozen=True)
class Match:
    opcodes: frozenset[int] | None = None
    type: str | None = None  # a JSON "type" in the message (what the relay sends)
    action: str | None = None  # a JSON "action" in the message (what clients send)
    tags: tuple[tuple[str, str], ...] = ()  # connection tags: query-string parameters, or "path"

    def connection_matches(self, tags: dict[str, str]) -> bool:
        return all(tags.get(key) == value for key, value in self.tags)

    @property
    def needs_content(self) -> bool:
        return self.type is not None or self.action is not None


@dataclass(frozen=True)
class FaultSpec:
    name: str
    type: str
    direction: str = "both"
    probability: float = 1.0
    match: Match = field(default_factory=Match)
    count: int | None = None  # at most this many times per connection
    start: float | None = None  # seconds after the proxy started (or the run's start, in a profile)
    end: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict, compare=False)

    def applies_to(self, direction: str) -> bool:
        return self.direction in (direction, "both")

    def in_window(self, elapsed: float) -> bool:
        return (self.start is None or elapsed >= self.start) and (self.end is None or elapsed < self.end)

    def describe(self) -> dict[str, Any]:
        """The spec as the control API lists it (also Toxiproxy's names for the common fields)."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "direction": self.direction,
                               "stream": self.direction, "probability": self.probability,
                               "toxicity": self.probability, "params": dict(self.params),
                               "attributes": dict(self.params)}
        if self.count is not None:
            out["count"] = self.count
        if self.start is not None or self.end is not None:
            out["window"] = {"start": self.start, "end": self.end}
        match = self.source.get("match")
        if match:
            out["match"] = match
        return out


def _number(where: str, key: str, value: Any, low: float, high: float, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or (isinstance(value, float) and
                                                                         not math.isfinite(value)):
        raise FaultSpecError(f"{where}: {key!r} must be a number from {low:g} to {high:g}, not {value!r}")
    if kind is int and value != int(value):
        raise FaultSpecError(f"{where}: {key!r} must be a whole number, not {value!r}")
    if not low <= value <= high:
        raise FaultSpecError(f"{where}: {key!r} must be from {low:g} to {high:g}, not {value!r}")
    return kind(value)


def _match(where: str, raw: Any) -> Match:
    if raw is None:
        return Match()
    if not isinstance(raw, dict):
        raise FaultSpecError(f"{where}: 'match' must be a table such as {{type = \"MESSAGE\"}}, not {raw!r}")
    unknown = set(raw) - {"opcode", "type", "action", "tags"}
    if unknown:
        raise FaultSpecError(f"{where}: unknown match key {sorted(unknown)[0]!r}; use opcode, type, action or tags")
    opcodes = None
    if "opcode" in raw:
        names = raw["opcode"] if isinstance(raw["opcode"], list) else [raw["opcode"]]
        bad = [n for n in names if n not in OPCODE_GROUPS]
        if bad or not names:
            raise FaultSpecError(f"{where}: match opcode {bad[0] if bad else names!r} is not one of "
                                 f"{', '.join(OPCODE_GROUPS)}")
        opcodes = frozenset(op for n in names for op in OPCODE_GROUPS[n])
    tags = raw.get("tags", {})
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise FaultSpecError(f"{where}: match tags must map names to strings, e.g. {{sessionType = \"chess\"}}")
    for key in ("type", "action"):
        if key in raw and not isinstance(raw[key], str):
            raise FaultSpecError(f"{where}: match {key} must be a string")
    return Match(opcodes, raw.get("type"), raw.get("action"), tuple(sorted(tags.items())))


def parse_fault(raw: dict[str, Any], default_name: str = "fault") -> FaultSpec:
    """Validate one spec. Raises FaultSpecError with a one-line reason and how to fix it."""
    name, where = fault_name(raw, default_name, FaultSpecError)
    unknown = set(raw) - _KNOWN_KEYS
    if unknown:
        raise FaultSpecError(f"{where}: unknown field {sorted(unknown)[0]!r}; "
                             f"fields are {', '.join(sorted(_KNOWN_KEYS))}")
    kind = raw.get("type")
    if kind not in FAULT_TYPES:
        raise FaultSpecError(f"{where}: 'type' must be one of {', '.join(FAULT_TYPES)}, not {kind!r}")
    seam = raw.get("seam", "wire")
    if seam != "wire":
        raise FaultSpecError(f"{where}: seam {seam!r} is not served by the proxy (it serves 'wire')")
    direction = raw.get("direction", raw.get("stream", "both"))
    if direction not in DIRECTIONS:
        raise FaultSpecError(f"{where}: 'direction' must be upstream (client->relay), downstream (relay->client) "
                             f"or both, not {direction!r}")
    probability = _number(where, "probability", raw.get("probability", raw.get("toxicity", 1.0)), 0, 1, float)
    count = raw.get("count")
    if count is not None:
        count = _number(where, "count", count, 1, 1e12, int)
    start = end = None
    if "window" in raw:
        window = raw["window"]
        if not isinstance(window, dict) or set(window) - {"start", "end"}:
            raise FaultSpecError(f"{where}: 'window' must be {{start = SECONDS, end = SECONDS}}")
        start = _number(where, "window.start", window["start"], 0, 1e9, float) if "start" in window else None
        end = _number(where, "window.end", window["end"], 0, 1e9, float) if "end" in window else None
        if start is not None and end is not None and end <= start:
            raise FaultSpecError(f"{where}: window end ({end:g}) must be after its start ({start:g})")
    if "at" in raw:
        if kind not in PROXY_FAULTS:
            raise FaultSpecError(f"{where}: 'at' is for proxy-wide faults ({', '.join(PROXY_FAULTS)}); "
                                 "use 'window' for the others")
        start = _number(where, "at", raw["at"], 0, 1e9, float)
    params_raw = raw.get("params", raw.get("attributes", {}))
    if not isinstance(params_raw, dict):
        raise FaultSpecError(f"{where}: 'params' must be a table")
    allowed = _PARAMS[kind]
    strings = _STRING_PARAMS.get(kind, set())
    unknown = set(params_raw) - set(allowed) - strings
    if unknown:
        listed = ", ".join(sorted(set(allowed) | strings)) or "none"
        raise FaultSpecError(f"{where}: {kind} takes no parameter {sorted(unknown)[0]!r} (it takes: {listed})")
    params: dict[str, Any] = {}
    for key, (default, low, high, number_kind) in allowed.items():
        if key in params_raw:
            params[key] = _number(where, key, params_raw[key], low, high, number_kind)
        elif default is None:
            raise FaultSpecError(f"{where}: {kind} needs params.{key} (from {low:g} to {high:g})")
        else:
            params[key] = default
    for key in strings:
        value = params_raw.get(key, "")
        if not isinstance(value, str) or len(value.encode()) > 123:
            raise FaultSpecError(f"{where}: {key!r} must be a string of at most 123 bytes")
        params[key] = value
    return FaultSpec(name, kind, direction, probability, _match(where, raw.get("match")), count, start, end, params,
                     dict(raw))


def parse_cli_fault(text: str, index: int) -> FaultSpec:
    """``--fault`` takes JSON, or ``type=drop,direction=downstream,probability=0.1,match.type=MESSAGE``."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return parse_fault(json.loads(text), f"cli-{index}")
        except json.JSONDecodeError as exc:
            raise FaultSpecError(f"--fault {text!r} is not valid JSON: {exc.msg} at character {exc.pos}") from None
    raw: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise FaultSpecError(f"--fault {text!r}: {part!r} must look like key=value")
        target = raw
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = _scalar(value)
    params = {k: raw.pop(k) for k in list(raw) if k not in _KNOWN_KEYS}
    if params:
        raw.setdefault("params", {}).update(params)
    return parse_fault(raw, f"cli-{index}")


def _scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text

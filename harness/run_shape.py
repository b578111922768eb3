"""The shape of an experiment: how many players, how fast they come, for how long, in sessions of
which sizes, and whether the relay's clean-up is made to run during play. A chaos profile may
carry it (``relay-harness chaos`` reads it); the Locust run takes the same as options.

Session sizes are written ``N`` (every public session has N members) or ``A-B`` (each player
draws the size of each session it joins, or hosts, from A..B with its own seeded RNG).
"""

from __future__ import annotations

from typing import Any

MIN_SESSION, MAX_SESSION = 2, 32  # the protocol's targetNumMembers bounds (docs/protocol.md)


class ShapeError(ValueError):
    """A bad value; the message names the key, what it must be and what it was."""


def session_sizes(spec: str | int) -> list[int]:
    """``"3"`` -> [3], ``"2-4"`` -> [2, 3, 4]; raises ShapeError outside 2..32 or when malformed."""
    text = str(spec).strip()
    low, _, high = text.partition("-")
    try:
        sizes = list(range(int(low), int(high or low) + 1))
    except ValueError:
        raise ShapeError(f"session size {spec!r}: write N or A-B (e.g. 2 or 2-4)") from None
    if not sizes or sizes[0] < MIN_SESSION or sizes[-1] > MAX_SESSION:
        raise ShapeError(f"session size {spec!r} must be from {MIN_SESSION} to {MAX_SESSION} (N or A-B, A <= B)")
    return sizes


def _number(key: str, value: Any, low: float, high: float, whole: bool = False, unit: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, int if whole else int | float) or not low <= value <= high:
        what = "a whole number" if whole else "a number"
        raise ShapeError(f"{key} must be {what} from {low:g} to {high:g}{unit}, not {value!r}")
    return value


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ShapeError(f"{key} must be true or false, not {value!r}")
    return value


def _sizes(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ShapeError(f"{key} must be N or \"A-B\" (e.g. 2 or \"2-4\"), not {value!r}")
    session_sizes(value)
    return str(value)


# key -> validator(key, value) returning the value to use
KEYS: dict[str, Any] = {
    "users": lambda k, v: _number(k, v, 1, 10_000, whole=True),
    "spawn_rate": lambda k, v: _number(k, v, 0.01, 10_000),
    "duration": lambda k, v: _number(k, v, 1, 7 * 24 * 3600, unit=" (seconds)"),
    "session_size": _sizes,
    "short_expiry": _flag,
    "cleanup_wait": lambda k, v: _number(k, v, 0, 3600, unit=" (seconds)"),
}
DEFAULTS: dict[str, Any] = {"users": 20, "spawn_rate": 20.0, "duration": 60.0, "session_size": "2",
                            "short_expiry": False, "cleanup_wait": 0.0}


def validate(key: str, value: Any) -> Any:
    """The value of one shape key, checked; raises ShapeError."""
    return KEYS[key](key, value)

"""Short expiries for a run whose relay must clean up during play (``--short-expiry``,
``--cleanup-wait``): which of a template's parameters to set, and to what.

A template's expiry settings are its ``Type: Number`` parameters whose names say so (``expir`` or
``ttl``, any case): the reference relay's ``ConnectionExpirySeconds``, ``MemberExpirySeconds``,
``SessionExpirySeconds``; Simple Relay 2.0.0's ``ConnectionExpireAfterSeconds``,
``SessionExpireAfterSeconds``. Each is set to the protocol's shortest expiry (docs/protocol.md):
60 s for a name with "session", else 30 s, kept within the parameter's ``MinValue``/``MaxValue``
(CloudFormation refuses a value outside them). A value the user gave (``--parameter``) wins.
For the reference relay this gives 30, 30 and 60 s, as it always did."""

from __future__ import annotations

import re
from pathlib import Path

from .template import Template

_EXPIRY_NAME = re.compile(r"expir|ttl", re.IGNORECASE)
SHORTEST_S = 30.0  # connection and member expiries
SHORTEST_SESSION_S = 60.0


class ExpiryError(Exception):
    """The template's expiries cannot be shortened; the message says why and how to fix it, in one line."""


def _seconds(value: float) -> str:
    return f"{value:g}" if value != int(value) else str(int(value))


def expiry_parameters(template: Template) -> dict[str, str]:
    """Each expiry parameter of ``template`` -> the short value it gets (seconds, as a template value)."""
    short = {}
    for name, declared in (template.body.get("Parameters") or {}).items():
        if not isinstance(declared, dict) or declared.get("Type") != "Number" or not _EXPIRY_NAME.search(name):
            continue
        value = SHORTEST_SESSION_S if "session" in name.lower() else SHORTEST_S
        if "MinValue" in declared:
            value = max(value, float(declared["MinValue"]))
        if "MaxValue" in declared:
            value = min(value, float(declared["MaxValue"]))
        short[name] = _seconds(value)
    return short


def shorten(path: Path, given: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The parameters to shorten in the template at ``path`` (name -> seconds), leaving out those in
    ``given`` (the user's ``--parameter`` values, which win); and every expiry parameter the
    template has, with its short value (``expiry_parameters``). Raises ExpiryError when the template has
    no expiry parameter and the user gave no parameter either: nothing would make the relay clean up
    within the run. TemplateError when the template cannot be read."""
    template = Template.load(path)
    found = expiry_parameters(template)
    if not found and not given:
        declared = ", ".join(template.body.get("Parameters") or {}) or "none"
        raise ExpiryError(f"the local stack cannot shorten the expiries of {path}: it has no Number parameter named "
                          f"like an expiry or TTL (its parameters: {declared}); pass --parameter NAME=SECONDS for "
                          "the relay's expiry settings, or leave out --cleanup-wait/--short-expiry")
    return {name: value for name, value in found.items() if name not in given}, found

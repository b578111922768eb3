"""Turning the clean-up schedule (an EventBridge rule) on when there is live state, off when none."""

from __future__ import annotations

from . import clients


def set_cleanup_schedule(rule_name: str, enabled: bool) -> None:
    """Idempotent; a relay deployed without a rule name simply has no schedule to toggle."""
    if not rule_name:
        return
    events = clients.client("events")
    if enabled:
        events.enable_rule(Name=rule_name)
    else:
        events.disable_rule(Name=rule_name)

"""History checkers: pure functions from a run (history, fault logs, store scan) to findings."""

from __future__ import annotations

from collections.abc import Callable

from . import cleanup, delivery, health, liveness, membership, notifications, pinned
from .model import CheckResult, Run

CHECKERS: list[Callable[[Run], CheckResult]] = [membership.check, liveness.check, delivery.check,
                                                notifications.check, pinned.check, cleanup.check, health.check]


def run_checkers(run: Run) -> list[CheckResult]:
    return [check(run) for check in CHECKERS]


def reliability_score(results: list[CheckResult]) -> float | None:
    """Weighted pass rate of the checkers that ran, in percent (Litmus/Gremlin style)."""
    ran = [r for r in results if r.skipped is None]
    total = sum(r.weight for r in ran)
    return round(100.0 * sum(r.weight for r in ran if r.passed) / total, 1) if total else None

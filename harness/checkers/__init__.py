"""History checkers: pure functions from a run (history, fault logs, store scan) to findings.

The verdict (``verdict``) is the rule that turns them into pass, fail or inconclusive:
- **fail** when any checker found a violation;
- **inconclusive** when the relay was not exercised enough for a pass to mean anything: no player
  ever started, no connect succeeded, no session started, no message was relayed, one of the core
  checks (membership, delivery, notifications) checked nothing, or a checker itself failed; or when
  something the checkers found is explained only by the local stack falling behind its load
  (``model.lag_spans``): there the harness was too slow to judge the relay;
- **pass** otherwise. Checks that checked nothing are ``not exercised`` and count neither way.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from . import (
    cleanup,
    client_errors,
    delivery,
    fanout,
    health,
    leaks,
    live_cleanup,
    liveness,
    membership,
    notifications,
    pinned,
    recovery,
    session_end,
)
from .model import CheckResult, Run, only_lag

Checker = Callable[[Run], CheckResult]
# (name, title, weight, check): names and titles are known even when a check raises.
CHECKERS: list[tuple[str, str, int, Checker]] = [
    ("membership", "Membership safety", 3, membership.check),
    ("liveness", "Matchmaking liveness", 2, liveness.check),
    ("delivery", "Message delivery", 3, delivery.check),
    ("notifications", "Membership notifications", 2, notifications.check),
    ("client_errors", "Client-visible errors", 2, client_errors.check),
    ("session_end", "END_SESSION ends the session for everyone", 2, session_end.check),
    ("recovery", "HEARTBEAT waitingFor brings lost notices back", 2, recovery.check),
    ("fanout", "A gone socket does not stop a fan-out", 2, fanout.check),
    ("live_cleanup", "Clean-up spares live players", 2, live_cleanup.check),
    ("pinned", "Pinned message convergence", 1, pinned.check),
    ("cleanup", "Expiry clean-up", 1, cleanup.check),
    ("health", "Function health", 2, health.check),
    ("leaks", "No resource growth (memory, file descriptors)", 1, leaks.check),
]
CORE_CHECKS = ("membership", "delivery", "notifications")


def run_checkers(run: Run) -> list[CheckResult]:
    """Every checker on the run; one that raises is reported with status ``error`` and the others
    still run (a relay's unexpected output must never take the whole report down)."""
    results = []
    for name, title, weight, check in CHECKERS:
        try:
            results.append(check(run))
        except Exception as exc:
            result = CheckResult(name, title, weight)
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            result.error = f"{type(exc).__name__}: {exc} (at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})"
            results.append(result)
    for result in results:
        if behind := unjudged(result):
            result.notes.append(f"{behind} finding(s) fall where the local stack fell behind its load: not judged")
    return results


def unjudged(result: CheckResult) -> int:
    """How many of the check's findings only the local stack's lag explains (not judged)."""
    return sum(only_lag(finding) for finding in result.explained)


def reliability_score(results: list[CheckResult]) -> float | None:
    """Weighted pass rate, in percent, of the checks that passed or failed (Litmus/Gremlin style);
    checks that were skipped, not exercised or errored count neither way, nor does a pass with findings
    left unjudged where the local stack fell behind."""
    judged = [r for r in results if r.status == "fail" or (r.status == "pass" and not unjudged(r))]
    total = sum(r.weight for r in judged)
    return round(100.0 * sum(r.weight for r in judged if r.passed) / total, 1) if total else None


def exercise(run: Run) -> dict[str, int]:
    """How much of the relay the run exercised, from the history alone."""
    history = run.history
    return {
        "records": len(history),
        "connects": sum(r["op"] in ("connect", "rejoin") and r["phase"] == "invoke" for r in history),
        "connects_ok": sum(r["op"] in ("connect", "rejoin") and r["phase"] == "ok" for r in history),
        "sessions": len({r["msg"].get("sessionId") for r in run.received("SESSION_CONNECT")}),
        "sends": sum(r["op"] == "send" and r["phase"] == "ok" for r in history),
        "deliveries": sum(r["op"] == "recv" and bool(r.get("pid")) for r in history),
    }


def lag_summary(lags: list[dict[str, Any]]) -> dict[str, Any]:
    """``Run.lags`` in figures: ``spans``, ``seconds`` (their total), ``max_queued_ms``, ``invocations``."""
    return {"spans": len(lags), "seconds": round(sum(lag["params"]["seconds"] for lag in lags), 1),
            "max_queued_ms": max((lag["params"]["max_queued_ms"] for lag in lags), default=0),
            "invocations": sum(lag["params"]["invocations"] for lag in lags)}


def verdict(results: list[CheckResult], exercised: dict[str, int], lags: list[dict[str, Any]] | None = None
            ) -> tuple[str, str]:
    """("pass" | "fail" | "inconclusive", one line saying why). ``lags``: ``Run.lags``."""
    violations = sum(len(r.violations) for r in results)
    failed = [r.title for r in results if r.violations]
    if violations:
        return "fail", f"{violations} violation(s) in {', '.join(failed)}"
    behind = [(r.title, f) for r in results for f in r.explained if only_lag(f)]
    if behind:
        lag = lag_summary(lags or [])
        titles = ", ".join(dict.fromkeys(title for title, _ in behind))
        return "inconclusive", (
            f"the local stack fell behind its load ({lag['invocations']} invocation(s) waited up to "
            f"{lag['max_queued_ms'] / 1000:.1f} s for a free function instance, over {lag['seconds']:.0f} s in "
            f"{lag['spans']} span(s)): {len(behind)} finding(s) in {titles} fall there and cannot be judged; "
            "run fewer users (-u) or give the machine more cores")
    reason = _not_exercised(results, exercised)
    if reason:
        return "inconclusive", reason
    passed = [r for r in results if r.status == "pass"]
    return "pass", (f"no violation in {len(passed)} exercised check(s): {exercised['sessions']} session(s), "
                    f"{exercised['deliveries']} deliveries")


def _not_exercised(results: list[CheckResult], exercised: dict[str, int]) -> str | None:
    if not exercised["records"]:
        return "the relay was never exercised: no player ever started (0 history records)"
    if not exercised["connects_ok"]:
        return f"the relay was never exercised: 0 of {exercised['connects']} connects succeeded"
    if not exercised["sessions"]:
        return (f"no session ever started: {exercised['connects_ok']} of {exercised['connects']} connects succeeded "
                "but no SESSION_CONNECT arrived")
    if not exercised["deliveries"]:
        return f"no message was relayed: {exercised['sends']} sent, 0 delivered"
    errored = [r for r in results if r.status == "error"]
    if errored:
        return f"the {errored[0].title} check could not run: {errored[0].error}"
    idle = [r.title for r in results if r.name in CORE_CHECKS and r.status == "not exercised"]
    if idle:
        return f"core check(s) not exercised: {', '.join(idle)}"
    return None

"""Function health: unexpected handler exceptions, timeouts, and stream batches given up on (sent
to the on-failure destination), counted from the local stack's logs.

Invocations that started after the load stopped (run.json ``ended_t``) are the run's teardown, not
the relay's behaviour: they are counted in a note, never judged. A failure that an injected fault
caused (an invocation fault on that very request, or a process fault such as a store outage while it
ran) is explained, not a violation; store and management faults are transient answers a relay must
survive, never an excuse."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from .model import GRACE_S, SLOWING, CheckResult, Finding, Run, overlaps


def _by_request(run: Run) -> dict[Any, list[int]]:
    """Invocation faults' positions in ``run.stack_faults`` by the request id they name."""
    found: dict[Any, list[int]] = defaultdict(list)
    for position, fault in enumerate(run.stack_faults):
        if fault.get("seam") == "invocation":
            found[(fault.get("target") or {}).get("request_id")].append(position)
    return found


def _caused_by(run: Run, invocation: dict[str, Any], by_request: dict[Any, list[int]]) -> list[dict[str, Any]]:
    """The injected faults that made this invocation fail: an invocation fault on that very request,
    or a process fault (a store outage) while it ran. Store and management faults are transient
    answers a relay must survive (botocore retries them, contention is retried): they explain no
    handler error. (Only the faults of that request or of its time are read: ``by_request``, the
    run's fault index.)"""
    end = invocation["t"]
    start = end - float(invocation.get("duration_ms") or 0)
    candidates = set(by_request.get(invocation.get("request_id"), ())).union(
        run.stack_index.positions(start - GRACE_S * 1000, end))
    hits = []
    for fault in run.stack_index.at(sorted(candidates)):
        target = fault.get("target") or {}
        same_request = fault.get("seam") == "invocation" and target.get("request_id") == invocation.get("request_id")
        during = fault.get("seam") == "process" and fault["fault"] not in SLOWING \
            and overlaps(fault, start, end, 0.0, GRACE_S * 1000)
        if same_request or during:
            hits.append(fault)
    return hits


def _injected_on_batch(run: Run, failure: dict[str, Any]) -> list[dict[str, Any]]:
    """Invocation faults that failed a try of the batch an on-failure record describes: the same
    function, on a stream batch whose sequence numbers cover the given-up ones."""
    info = failure.get("DDBStreamBatchInfo", {})
    function = (failure.get("requestContext") or {}).get("functionArn")
    try:
        first, last = int(info["startSequenceNumber"]), int(info["endSequenceNumber"])
    except (KeyError, TypeError, ValueError):
        return []
    hits = []
    for fault in run.stack_faults:
        target = fault.get("target") or {}
        event = target.get("event") or []
        if fault.get("seam") != "invocation" or target.get("source") != "stream" or len(event) < 3 or \
                fault["fault"] in SLOWING or target.get("function") != function:
            continue
        try:
            covers = int(event[1]) <= first and last <= int(event[2])
        except (TypeError, ValueError):
            continue
        if covers:
            hits.append(fault)
    return hits


def check(run: Run) -> CheckResult:
    result = CheckResult("health", "Function health", weight=2)
    if not run.invocations:
        result.skipped = "no invocation log (the run targeted a relay this harness did not start)"
        return result
    ended = run.info.get("ended_t")
    judged = [r for r in run.invocations
              if ended is None or r["t"] - float(r.get("duration_ms") or 0) <= ended]
    if len(judged) < len(run.invocations):
        result.notes.append(f"{len(run.invocations) - len(judged)} invocation(s) started after the load stopped "
                            "(teardown): not judged")
    result.checked = len(judged)
    failures: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for invocation in judged:
        if invocation["outcome"] != "ok":
            failures[(invocation["function"], invocation["outcome"], invocation.get("error", ""))].append(invocation)
    by_request = _by_request(run)
    for (function, outcome, error), invocations in sorted(failures.items(), key=lambda item: -len(item[1])):
        explained = [(i, _caused_by(run, i, by_request)) for i in invocations]
        for is_explained in (True, False):
            chosen = [(i, faults) for i, faults in explained if bool(faults) == is_explained]
            if not chosen:
                continue
            finding = Finding(f"no handler {outcome}s", f"{function}: {len(chosen)} {outcome}(s): {error}",
                              [i for i, _ in chosen[:3]], [f for _, faults in chosen for f in faults])
            (result.explained if is_explained else result.violations).append(finding)
    for failure in run.stream_failures:
        info = failure.get("DDBStreamBatchInfo", {})
        context = failure.get("requestContext", {})
        injected = _injected_on_batch(run, failure)
        finding = Finding("no stream batch given up on", f"{context.get('functionArn')} gave up on "
                          f"{info.get('batchSize')} record(s) ({context.get('condition')})", [failure], injected)
        # Every try of the batch failed by an injected fault: the event source did what Lambda does.
        every_try = len(injected) >= int(context.get("approximateInvokeCount") or 0) > 0
        (result.explained if every_try else result.violations).append(finding)
    counts = Counter(r["function"] for r in judged)
    result.notes.append("invocations: " + ", ".join(f"{name} {count}" for name, count in sorted(counts.items())))
    return result

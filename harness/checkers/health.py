"""Function health: unexpected handler exceptions, timeouts, and stream batches given up on (sent
to the on-failure destination), counted from the local stack's logs."""

from __future__ import annotations

from collections import Counter

from .model import CheckResult, Finding, Run


def check(run: Run) -> CheckResult:
    result = CheckResult("health", "Function health", weight=2)
    if not run.invocations:
        result.skipped = "no invocation log (the run targeted a relay this harness did not start)"
        return result
    result.checked = len(run.invocations)
    failures = Counter((r["function"], r["outcome"], r.get("error", "")) for r in run.invocations
                       if r["outcome"] != "ok")
    for (function, outcome, error), count in failures.most_common():
        examples = [r for r in run.invocations if r["function"] == function and r.get("error", "") == error][:3]
        result.violations.append(Finding(f"no handler {outcome}s", f"{function}: {count} {outcome}(s): {error}",
                                         examples))
    for failure in run.stream_failures:
        info = failure.get("DDBStreamBatchInfo", {})
        result.violations.append(Finding(
            "no stream batch given up on", f"{failure.get('requestContext', {}).get('functionArn')} gave up on "
            f"{info.get('batchSize')} record(s) ({failure.get('requestContext', {}).get('condition')})", [failure]))
    counts = Counter(r["function"] for r in run.invocations)
    result.notes.append("invocations: " + ", ".join(f"{name} {count}" for name, count in sorted(counts.items())))
    return result

"""Clean-up: after the run and the clean-up window, no connection, member or session records are
left in the store, and the clean-up schedule has turned itself off.

The window must outlast the relay's expiries: with the expiry settings in force known (run.json
``stack_options.expiries_s``, whatever the template names them), a window no longer than the longest
skips the check instead of blaming records that had not expired yet; unknown (a foreign template
with no parameter named like an expiry), the leftovers are judged against the window alone, and a
note says so."""

from __future__ import annotations

from .model import CheckResult, Finding, Run

_BOOKKEEPING = (".sent.",)  # delivery ledger marks: left to DynamoDB's TTL by design


def check(run: Run) -> CheckResult:
    result = CheckResult("cleanup", "Expiry clean-up", weight=1)
    store = run.store
    if store is None:
        result.skipped = "no end-of-run store scan (the run targeted a relay this harness did not start)"
        return result
    if store.get("unavailable"):
        result.skipped = f"the store could not be scanned after the run: {store['unavailable']}"
        return result
    if not store.get("cleanup_wait_s"):
        result.skipped = ("the run did not wait for the clean-up window; run with --cleanup-wait SECONDS (longer "
                          "than the relay's expiry times) to check it")
        return result
    wait = store["cleanup_wait_s"]
    if run.expiries_s:
        name, longest = max(run.expiries_s.items(), key=lambda item: item[1])
        if wait <= longest:
            result.skipped = (f"the run waited {wait:g} s for the clean-up, no longer than the relay's longest expiry "
                              f"in force ({name}={longest:g} s); run with --cleanup-wait above {longest:g}")
            return result
    elif run.expiries_unknown:
        result.notes.append(f"the relay's expiry settings in force are not known (no template parameter named like "
                            f"an expiry): leftovers are judged against the {wait:g} s wait alone")
    for table, items in (store.get("tables") or {}).items():
        result.checked += 1  # a table scanned and found empty is a check that passed
        for item in items:
            if str(item.get("id", "")).startswith(_BOOKKEEPING):
                continue
            result.violations.append(Finding("no orphaned records", f"{table} still holds {item.get('id')} "
                                             f"{store['cleanup_wait_s']} s after the run", [item]))
    if store.get("rule_state") is not None:
        result.checked += 1
    if store.get("rule_state") not in (None, "DISABLED"):
        result.violations.append(Finding("the clean-up schedule turns itself off",
                                         f"rule {store.get('rule_name')} is {store.get('rule_state')} with no live "
                                         "state left"))
    return result

"""Client-visible errors: what a player of a correct relay never sees, whatever the rule set.

- AWS's ``{"message": "Internal server error", ...}`` frame: a route's function failed;
- a 5xx answer to a well-formed ``$connect`` (the harness's players only send well-formed ones);
- an ``ERROR`` frame (the reference relay's answer to a malformed action): a well-formed action was
  refused;
- a frame that is not JSON, or a JSON message the client could not read (``<unreadable>``: a field
  of the wrong kind, such as a list for ``type``; the client records it and reads on).
Each is explained only by an injected fault that could cause it: an invocation or process fault
around it (store and management faults are transient answers a relay must survive), or for a bad
handshake or a bad frame, a wire fault on that very socket (the proxy answers 502 when the upstream
is gone; corrupt and truncate garble frames).
Handshakes that got no HTTP answer from the target (refused, reset, timed out, or the chaos proxy's
own 502 saying its upstream could not be reached) are counted, not judged: they say the target was
unreachable, which makes a run inconclusive rather than failed."""

from __future__ import annotations

import re
from collections import defaultdict

from .model import CheckResult, Finding, Run, excerpt

_STATUS = re.compile(r"\b(?:[Hh]andshake status|status) (\d{3})\b")
_GARBLING = {"corrupt", "truncate"}
# The chaos proxy's answer when it could not reach its upstream (harness/proxy/server.py): the
# target said nothing, so it is not the target's 502.
_PROXY_UNREACHABLE = re.compile(r"chaos proxy: upstream \S+ failed")


def handshake_status(error: str) -> int | None:
    """The HTTP status of a failed WebSocket handshake, from the history's ``error`` text."""
    found = _STATUS.search(error or "")
    if found:
        return int(found.group(1))
    leading = (error or "").split(" ", 1)[0]
    return int(leading) if leading.isdigit() and len(leading) == 3 else None


def _failing(run: Run, record: dict) -> list[dict]:
    """Injected faults that make a function fail outright around this record: invocation faults and
    process faults (store and management faults are transient answers a relay must survive)."""
    return [f for f in run.stack_faults_near(record["t"] - 1000, record["t"], record["client"])
            if f.get("seam") in ("invocation", "process")]


def check(run: Run) -> CheckResult:
    result = CheckResult("client_errors", "Client-visible errors", weight=2)
    unanswered = 0
    grouped: dict[str, list[tuple[dict, list[dict]]]] = defaultdict(list)
    for record in run.history:
        if record["op"] in ("connect", "rejoin") and record["phase"] in ("ok", "fail"):
            result.checked += 1
            if record["phase"] == "ok":
                continue
            error = record.get("error", "")
            status = handshake_status(error)
            if status is None or (status == 502 and _PROXY_UNREACHABLE.search(error)):
                unanswered += 1
            elif status >= 500:
                faults = _failing(run, record) + \
                    run.socket_faults(record["client"], record["conn"]) + \
                    run.proxy_wide_near(record["t"], record["t"], {"refuse"})
                grouped[f"{status} answer to a well-formed $connect"].append((record, faults))
        elif record["op"] == "recv":
            result.checked += 1
            message = record.get("msg") or {}
            kind = message.get("type")
            if kind is None and "message" in message:
                faults = _failing(run, record)
                grouped[f"API Gateway error frame {message.get('message')!r}"].append((record, faults))
            elif kind == "ERROR":
                faults = [f for f in run.socket_faults(record["client"], record["conn"]) if f["fault"] in _GARBLING
                          and (f.get("target") or {}).get("direction") == "upstream"]
                grouped[f"ERROR frame ({message.get('reason', 'no reason')}) for a well-formed action"].append(
                    (record, faults))
            elif kind == "<not json>":
                faults = [f for f in run.socket_faults(record["client"], record["conn"]) if f["fault"] in _GARBLING]
                grouped["a frame that is not JSON"].append((record, faults))
            elif kind == "<unreadable>":
                faults = [f for f in run.socket_faults(record["client"], record["conn"]) if f["fault"] in _GARBLING]
                grouped[f"a message the protocol's client cannot read ({message.get('error')})"].append(
                    (record, faults))
    for what, items in grouped.items():
        for explained in (True, False):
            chosen = [(record, faults) for record, faults in items if bool(faults) == explained]
            if not chosen:
                continue
            records = [record for record, _ in chosen]
            clients = sorted({r["client"] for r in records})
            finding = Finding("no client-visible error", f"{len(records)} x {what} (clients: {', '.join(clients[:5])}"
                              f"{', ...' if len(clients) > 5 else ''})", excerpt(records),
                              [f for _, faults in chosen for f in faults])
            (result.explained if explained else result.violations).append(finding)
    if unanswered:
        result.notes.append(f"{unanswered} handshake(s) got no HTTP answer (refused, reset or timed out): not judged")
    return result

"""Delivery: no duplicate delivery to a member, no phantom, and every send reaches every member
connected throughout; with the reference relay's rules, per-sender order is kept too (the protocol
promises no order: API Gateway invokes a socket's routes concurrently).

A loss or a duplicate counts as explained only by an injected fault that could have caused it
(see ``model``): a drop of that very message on the receiver's or sender's socket, the end of one
of those sockets, or a stack-side fault around it; anything else is a relay bug."""

from __future__ import annotations

from collections import Counter, defaultdict

from .model import GRACE_S, CheckResult, Finding, Run, excerpt


def _sequence(pid: str) -> tuple[str, int] | None:
    sender, _, number = pid.rpartition("-")
    return (sender, int(number)) if number.isdigit() else None


def check(run: Run) -> CheckResult:
    result = CheckResult("delivery", "Message delivery", weight=3)
    invokes = {r["pid"]: r for r in run.history if r["op"] == "send" and r["phase"] == "invoke" and r.get("pid")}
    sent_ok = [r for r in run.history if r["op"] == "send" and r["phase"] == "ok" and r.get("pid")]
    receipts = [r for r in run.history if r["op"] == "recv" and r.get("pid")]
    result.checked = len(sent_ok)
    _phantoms(run, receipts, invokes, result)

    received_by: dict[str, list[dict]] = defaultdict(list)
    for record in receipts:
        received_by[record["client"]].append(record)
    for client, records in received_by.items():
        _duplicates(run, client, records, invokes, result)
        if run.rules == "reference":
            _order(run, client, records, invokes, result)
    _losses(run, sent_ok, invokes, received_by, result)
    return result


def _phantoms(run: Run, receipts: list[dict], invokes: dict[str, dict], result: CheckResult) -> None:
    phantoms = [r for r in receipts if r["pid"] not in invokes]
    if not phantoms:
        return
    if run.info.get("history_complete") is False:
        missing = "; ".join(run.info.get("history_missing") or ["some history never reached the run folder"])
        result.notes.append(f"{len(phantoms)} delivery(ies) match no send in the history, which is incomplete "
                            f"({missing}): missing data, not judged")
        return
    for record in phantoms:
        result.violations.append(Finding("no phantom delivery", f"{record['client']} received {record['pid']}, "
                                         "which nobody sent", excerpt([record])))


def _duplicates(run: Run, client: str, records: list[dict], invokes: dict[str, dict], result: CheckResult) -> None:
    counts = Counter(r["pid"] for r in records if r.get("via") != "HEARTBEAT")
    for pid, count in counts.items():
        if count < 2:
            continue
        copies = [r for r in records if r["pid"] == pid and r.get("via") != "HEARTBEAT"]
        faults = [f for conn in {r["conn"] for r in copies}
                  for f in run.message_faults(client, conn, {"duplicate"}, pid=pid)]
        send = invokes.get(pid)
        if send is not None:
            faults += run.message_faults(send["client"], send["conn"], {"duplicate"}, pid=pid, direction="upstream")
        finding = Finding("no duplicate delivery", f"{client} received {pid} {count} times", excerpt(copies), faults)
        (result.explained if faults else result.violations).append(finding)


def _order(run: Run, client: str, records: list[dict], invokes: dict[str, dict], result: CheckResult) -> None:
    """Per sender socket and receiver socket, messages arrive in the order they were sent."""
    last: dict[tuple[str, int, int], tuple[int, dict]] = {}
    seen: set[str] = set()
    for record in records:
        if record.get("via") == "HEARTBEAT" or record["pid"] in seen or record["pid"] not in invokes:
            continue
        seen.add(record["pid"])
        parsed = _sequence(record["pid"])
        if parsed is None:
            continue
        sender, number = parsed
        key = (sender, invokes[record["pid"]]["conn"], record["conn"])
        if key in last and number < last[key][0]:
            earlier = last[key][1]
            faults = []
            for pid in (record["pid"], earlier["pid"]):
                faults += run.message_faults(client, record["conn"], {"reorder"}, pid=pid)
                faults += run.message_faults(sender, key[1], {"reorder"}, pid=pid, direction="upstream")
            # A stack-side fault can hold one invocation back (a store outage past the handler's
            # timeout: the local runtime cannot kill the overrunning thread, which sends later).
            faults += run.stack_faults_near(invokes[earlier["pid"]]["t"], record["t"], sender, client, slowing=True)
            finding = Finding("per-sender order kept", f"{client} received {record['pid']} after {earlier['pid']}",
                              excerpt([earlier, record]), faults)
            (result.explained if faults else result.violations).append(finding)
        last[key] = (max(number, last.get(key, (number, record))[0]), record)


def _members_over_time(run: Run) -> dict[str, list[tuple[str, float, float]]]:
    """session -> (client, in the session from t, until t). A client's membership ends when it leaves
    (SESSION_END, CONNECTION_OVERWRITE, INVALID_CONNECTION), is put in another session, or starts a
    new join (a new session attempt): its later sockets are not that session's."""
    spans: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for client, records in run.by_client.items():
        current: tuple[str, float] | None = None
        for record in records:
            message = record.get("msg") or {}
            kind = message.get("type") if record["op"] == "recv" else None
            if current and record["op"] == "connect" and record["phase"] == "invoke":
                spans[current[0]].append((client, current[1], record["t"]))
                current = None
            elif kind == "SESSION_CONNECT":
                if current and current[0] != message.get("sessionId"):
                    spans[current[0]].append((client, current[1], record["t"]))
                    current = None
                if current is None:
                    current = (message.get("sessionId"), record["t"])
            elif current and (kind in ("SESSION_END", "CONNECTION_OVERWRITE", "INVALID_CONNECTION")):
                spans[current[0]].append((client, current[1], record["t"]))
                current = None
        if current:
            spans[current[0]].append((client, current[1], float("inf")))
    return spans


def _losses(run: Run, sent_ok: list[dict], invokes: dict[str, dict], received_by: dict[str, list[dict]],
            result: CheckResult) -> None:
    members = _members_over_time(run)
    got = {client: {r["pid"] for r in records} for client, records in received_by.items()}
    grace = GRACE_S * 1000
    for send in sent_ok:
        session = send.get("session")
        window_end = send["t"] + grace
        if not session or window_end > run.end_t:
            continue
        sender_in = [s for s in members.get(session, []) if s[0] == send["client"] and s[1] <= send["t"] <= s[2]]
        if not sender_in:
            continue
        for client, joined, left in members.get(session, []):
            if not (joined <= send["t"] and left >= window_end):
                continue
            if not run.connected_throughout(client, send["t"], window_end):
                continue
            if send["pid"] in got.get(client, set()):
                continue
            receiver_conn = run.socket_at(client, send["t"])
            faults = run.loss_faults(send["pid"], send["client"], send["conn"], client, receiver_conn, send["t"],
                                     window_end, run.last_receipts.get(send["pid"]))
            pinned = bool((invokes[send["pid"]].get("msg") or {}).get("pinned"))
            message = f"{send['pid']} from {send['client']} never reached {client}"
            if faults:
                message += f" (explained by {len(faults)} injected fault(s)"
                message += "; pinned, so HEARTBEAT could bring it back)" if pinned else "; not recoverable)"
            nearby = [r for r in run.by_client.get(client, []) if send["t"] - 500 <= r["t"] <= window_end][:8]
            shown = [invokes[send["pid"]], send, *nearby]
            finding = Finding("every send reaches every member connected throughout", message, excerpt(shown),
                              faults)
            (result.explained if faults else result.violations).append(finding)

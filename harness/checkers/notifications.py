"""Notifications: CONNECTION and SESSION_CONNECT once per socket, MEMBER_DISCONNECT /
MEMBER_RECONNECT once per change, and SESSION_CONNECT's memberPresence shows the receiver connected.

Rule sets: two MEMBER_RECONNECT in a row for one member are harmless (a rejoin can overtake the old
socket's ``$disconnect``), so only the reference relay's rules, which promise strict alternation,
flag them. Two MEMBER_DISCONNECT in a row are flagged under every rule set: in between, the member
came back and the others were never told. A receiver whose own socket changed between the two may
simply have missed the notice in between: not judged."""

from __future__ import annotations

import itertools
from collections import defaultdict

from .model import MESSAGE_LOSING, CheckResult, Finding, Run, excerpt, slot

_OPPOSITE = {"MEMBER_DISCONNECT": "MEMBER_RECONNECT", "MEMBER_RECONNECT": "MEMBER_DISCONNECT"}


def check(run: Run) -> CheckResult:
    result = CheckResult("notifications", "Membership notifications", weight=2)
    pushed = [r for r in run.received() if r.get("via") != "HEARTBEAT"]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for record in pushed:
        kind = record["msg"].get("type")
        if kind == "CONNECTION":
            groups[("CONNECTION", record["client"], record["conn"])].append(record)
        elif kind == "SESSION_CONNECT":
            groups[("SESSION_CONNECT", record["client"], record["conn"], record["msg"].get("sessionId"))].append(record)
    result.checked = len(groups)
    for (kind, client, conn, *_), records in groups.items():
        if len(records) > 1:
            faults = run.message_faults(client, conn, {"duplicate"}, kind=kind)
            finding = Finding("exactly once per change", f"{client} got {kind} {len(records)} times on one socket",
                              excerpt(records), faults)
            (result.explained if faults else result.violations).append(finding)

    changes: dict[tuple, list[dict]] = defaultdict(list)
    for record in pushed:
        if record["msg"].get("type") in _OPPOSITE:
            changes[(record["client"], record.get("session"), slot(record["msg"].get("memberNum")))].append(record)
    for (client, _, member_num), records in changes.items():
        result.checked += 1
        for previous, current in itertools.pairwise(records):
            kind = current["msg"]["type"]
            if previous["msg"]["type"] != kind or previous["conn"] != current["conn"]:
                continue
            if kind == "MEMBER_RECONNECT" and run.rules != "reference":
                continue
            faults = [f for f in run.message_faults(client, current["conn"], set(MESSAGE_LOSING), kind=_OPPOSITE[kind])
                      if previous["t"] - 1000 <= f["t"] <= current["t"]]
            message = (f"{client} was told {kind} for member {member_num} twice in a row on one socket, with no "
                       f"{_OPPOSITE[kind]} in between")
            finding = Finding("exactly once per change", message, excerpt([previous, current]), faults)
            (result.explained if faults else result.violations).append(finding)

    for record in run.received("SESSION_CONNECT"):
        presence = record["msg"].get("memberPresence") or []
        num = slot(record["msg"].get("memberNum"))
        if num is None or not 0 <= num < len(presence) or not presence[num]:
            result.violations.append(Finding("memberPresence matches who is connected",
                                             f"{record['client']} got SESSION_CONNECT saying its own slot {num} is "
                                             f"not connected ({presence})", excerpt([record])))
    return result

"""Notifications: CONNECTION, SESSION_CONNECT, MEMBER_DISCONNECT / MEMBER_RECONNECT exactly once per
change per member, and SESSION_CONNECT's memberPresence matches who is connected."""

from __future__ import annotations

import itertools
from collections import defaultdict

from .model import CheckResult, Finding, Run, excerpt


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
    for key, records in groups.items():
        if len(records) > 1:
            _report(run, result, "exactly once per change", f"{key[1]} got {key[0]} {len(records)} times on one "
                    "socket", records)

    changes: dict[tuple, list[dict]] = defaultdict(list)
    for record in pushed:
        if record["msg"].get("type") in ("MEMBER_DISCONNECT", "MEMBER_RECONNECT"):
            changes[(record["client"], record.get("session"), record["msg"].get("memberNum"))].append(record)
    for (client, _, member_num), records in changes.items():
        result.checked += 1
        for previous, current in itertools.pairwise(records):
            if previous["msg"]["type"] == current["msg"]["type"]:
                # A lost notice in between (a drop fault) also explains two alike in a row.
                _report(run, result, "exactly once per change", f"{client} was told {current['msg']['type']} for "
                        f"member {member_num} twice in a row", [previous, current], any_fault=True)

    for record in run.received("SESSION_CONNECT"):
        presence = record["msg"].get("memberPresence") or []
        num = record["msg"].get("memberNum")
        if not isinstance(num, int) or num >= len(presence) or not presence[num]:
            result.violations.append(Finding("memberPresence matches who is connected",
                                             f"{record['client']} got SESSION_CONNECT saying its own slot {num} is "
                                             f"not connected ({presence})", excerpt([record])))
    return result


def _report(run: Run, result: CheckResult, invariant: str, message: str, records: list[dict],
            any_fault: bool = False) -> None:
    faults = [f for f in run.faults_near(records[0]["client"], records[0]["t"], records[-1]["t"])
              if any_fault or f["fault"] in ("duplicate", "mass_disconnect", "reset", "close")]
    finding = Finding(invariant, message, excerpt(records), faults)
    (result.explained if faults else result.violations).append(finding)

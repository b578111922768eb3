"""The scheduled clean-up function: ends what expired, and turns its own schedule off when idle.

DynamoDB's TTL deletes expired items only eventually (often days later) and tells nobody; this
function does it on time and through the same paths as the live relay, so members are told
(MEMBER_DISCONNECT, SESSION_END) as they would be for any other departure.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from .config import now_s
from .delivery import LEDGER_PREFIX
from .departures import depart, end_session
from .model import Session, is_session_id
from .postman import Postman
from .schedule import set_cleanup_schedule
from .store import Busy, Contention, Store, default_store

log = logging.getLogger(__name__)
_EXPIRED = "expireAfter < :now"


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    store = default_store()
    counts = sweep(store, Postman(store.settings.websocket_api_endpoint), now_s())
    rule = store.settings.cleanup_rule_name
    if not has_live_state(store):
        set_cleanup_schedule(rule, enabled=False)
        # A session created while we were disabling would have enabled the rule before our
        # disable landed; looking again after it closes that window.
        if has_live_state(store):
            set_cleanup_schedule(rule, enabled=True)
        else:
            counts["schedule_disabled"] = 1
    log.info("clean-up: %s", dict(counts))
    return dict(counts)


def sweep(store: Store, postman: Postman, now: int) -> Counter:
    settings = store.settings
    counts: Counter = Counter()
    values = {":now": now}
    for item in store.scan(settings.sessions_table, _EXPIRED, values):
        if not is_session_id(item["id"]):
            counts["pointers"] += store.write(
                "delete_item", TableName=settings.sessions_table, Key={"id": item["id"]},
                ConditionExpression=_EXPIRED, ExpressionAttributeValues=values)
            continue
        try:
            end_session(store, Session.from_item(item), expired_before=now)
            counts["sessions"] += 1
        except Contention:
            log.info("session %s was refreshed or changed while expiring; left for the next run", item["id"])
    for item in store.scan(settings.connections_table, _EXPIRED, values):
        if item["id"].startswith(LEDGER_PREFIX):
            counts["delivery_records"] += store.write(
                "delete_item", TableName=settings.connections_table, Key={"id": item["id"]},
                ConditionExpression=_EXPIRED, ExpressionAttributeValues=values)
            continue
        try:
            depart(store, item["id"], expired_before=now)
        except Busy:
            continue
        postman.close(item["id"])
        counts["connections"] += 1
    for item in store.scan(settings.members_table, _EXPIRED, values):
        # A member still holding a socket is governed by that connection's expiry.
        counts["members"] += store.write(
            "delete_item", TableName=settings.members_table, Key={"id": item["id"]},
            ConditionExpression=f"{_EXPIRED} AND attribute_not_exists(connId)", ExpressionAttributeValues=values)
    return counts


def has_live_state(store: Store) -> bool:
    """Any session, member or connection; expired delivery records are left to DynamoDB's TTL."""
    settings = store.settings
    for table in (settings.sessions_table, settings.members_table):
        if next(store.scan(table), None) is not None:
            return True
    live_connections = store.scan(settings.connections_table, "NOT begins_with(#id, :ledger)",
                                  {":ledger": LEDGER_PREFIX}, {"#id": "id"})
    return next(live_connections, None) is not None

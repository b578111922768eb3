"""The sessions table's stream function: tells members about membership changes.

Safe to run more than once on the same records (its event source retries failed batches): the
notices are a pure function of each record and the delivery ledger sends each at most once.
A record that cannot be finished is reported as a partial batch failure, so the records before
it are not processed again and the ones after it wait, keeping order within the shard.
"""

from __future__ import annotations

import logging
from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import BotoCoreError, ClientError

from .config import Settings
from .delivery import DeliveryLedger, fan_out, send_or_depart
from .model import Session, is_session_id
from .notifications import Notice, notices
from .postman import DeliveryFailed, Postman
from .schedule import set_cleanup_schedule
from .store import Busy, Store, default_store

log = logging.getLogger(__name__)
_deserializer = TypeDeserializer()


def _session(record: dict[str, Any], image: str) -> Session | None:
    raw = record["dynamodb"].get(image)
    if not raw:
        return None
    return Session.from_item({k: _deserializer.deserialize(v) for k, v in raw.items()})


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    store = default_store()
    settings: Settings = store.settings
    postman = Postman(settings.websocket_api_endpoint)
    ledger = DeliveryLedger(store)
    for record in event.get("Records", []):
        try:
            _process(record, store, postman, ledger)
        except (DeliveryFailed, Busy, ClientError, BotoCoreError) as exc:
            sequence = record["dynamodb"]["SequenceNumber"]
            log.warning("record %s (%s) failed, reporting it for retry: %s", record.get("eventID"), sequence, exc)
            return {"batchItemFailures": [{"itemIdentifier": sequence}]}
    return {"batchItemFailures": []}


def _process(record: dict[str, Any], store: Store, postman: Postman, ledger: DeliveryLedger) -> None:
    if not is_session_id(record["dynamodb"]["Keys"]["id"]["S"]):
        return
    old, new = _session(record, "OldImage"), _session(record, "NewImage")
    if old is None and new is not None:
        set_cleanup_schedule(store.settings.cleanup_rule_name, enabled=True)
    event_id = record["eventID"]

    def deliver(notice: Notice) -> None:
        if not ledger.claim(event_id, notice.conn_id):
            return
        try:
            send_or_depart(store, postman, notice.conn_id, list(notice.messages))
        except DeliveryFailed:
            ledger.release(event_id, notice.conn_id)
            raise

    failures = fan_out(notices(old, new), deliver)
    if failures:
        raise failures[0][1]

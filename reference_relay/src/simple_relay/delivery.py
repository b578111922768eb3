"""Getting frames to members: 410 handling and the once-only ledger for retried stream batches."""

from __future__ import annotations

from .departures import depart
from .messages import Message
from .postman import Postman
from .store import Store, expires_in

LEDGER_PREFIX = ".sent."


def send_or_depart(store: Store, postman: Postman, conn_id: str, frame: list[Message]) -> bool:
    """Send one frame; a socket that is gone (410) is recorded as departed, and False returned."""
    if postman.send(conn_id, frame):
        return True
    depart(store, conn_id)
    return False


class DeliveryLedger:
    """Remembers which (stream record, connection) pairs were already sent, so a retry skips them.

    The mark is written before the send: a crash between the two loses that one frame (which the
    client gets back with HEARTBEAT ``waitingFor``), but no retry can ever send a frame twice.
    Marks live in the connections table (no stream there) and expire with ``expireAfter``.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def _key(self, event_id: str, conn_id: str) -> dict[str, str]:
        return {"id": f"{LEDGER_PREFIX}{event_id}.{conn_id}"}

    def claim(self, event_id: str, conn_id: str) -> bool:
        settings = self.store.settings
        return self.store.write(
            "put_item", TableName=settings.connections_table,
            Item={**self._key(event_id, conn_id), "expireAfter": expires_in(settings.delivery_record_expiry)},
            ConditionExpression="attribute_not_exists(#id)", ExpressionAttributeNames={"#id": "id"})

    def release(self, event_id: str, conn_id: str) -> None:
        self.store.write("delete_item", TableName=self.store.settings.connections_table,
                         Key=self._key(event_id, conn_id))

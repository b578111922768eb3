"""Getting frames to members: 410 handling and the once-only ledger for retried stream batches."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .config import now_s
from .departures import depart
from .messages import Message
from .postman import Postman
from .store import Store, expires_in

LEDGER_PREFIX = ".sent."
# A $connect can take at most API Gateway's integration timeout (29 s), so a socket written longer
# ago than this that answers 410 is gone. https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html
CONNECTING_S = 30
# Sends to different members go out together: a session's fan-out costs one round trip to API
# Gateway, not one per member. boto3's low-level clients are safe to share between threads.
_FAN_OUT = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fan-out")

T = TypeVar("T")
log = logging.getLogger(__name__)


def fan_out(items: Iterable[T], send: Callable[[T], object]) -> list[tuple[T, BaseException]]:
    """Run ``send`` for every item concurrently; returns the items whose send raised, with the error."""
    items = list(items)
    if len(items) == 1:
        try:
            send(items[0])
        except Exception as exc:
            return [(items[0], exc)]
        return []
    futures = [(item, _FAN_OUT.submit(send, item)) for item in items]
    return [(item, error) for item, future in futures if (error := future.exception()) is not None]


def send_or_depart(store: Store, postman: Postman, conn_id: str, frame: list[Message]) -> bool:
    """Send one frame; a socket that is gone (410) is recorded as departed, and False returned.

    API Gateway also answers 410 for a socket whose ``$connect`` has not returned yet, and the
    stream can tell members about a join (SESSION_CONNECT to a rejoiner) before that. So a socket
    written less than ``CONNECTING_S`` ago is not departed on a 410: its ``$disconnect`` or the
    clean-up does that if it is really gone, and its member gets the lost frame back with
    HEARTBEAT ``waitingFor``. Departing it would drop a member whose join was just accepted."""
    if postman.send(conn_id, frame):
        return True
    connection = store.connection(conn_id)
    if connection is not None and now_s() - int(connection.get("connectedAt", 0)) <= CONNECTING_S:
        log.info("connection %s answered 410 within %d s of its join: maybe still connecting, kept",
                 conn_id, CONNECTING_S)
        return False
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

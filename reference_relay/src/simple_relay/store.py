"""DynamoDB access: typed reads, item builders and transactions with bounded retries.

The boto3 clients come from the standard configuration (region, credentials, and
``AWS_ENDPOINT_URL`` for a local DynamoDB), so this runs unchanged on AWS and locally.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from . import clients
from .config import Settings, now_s
from .model import Session, is_session_id

# Throttling and 5xx are retried by botocore (standard mode, set in the template); contention
# between our own transactions is retried by ``retry_on_contention`` because it needs fresh reads.
CONTENTION_ATTEMPTS = 10
_BACKOFF_BASE_S = 0.01
_BACKOFF_CAP_S = 0.25

T = TypeVar("T")


class Contention(Exception):
    """A transaction lost a race (a condition on fresh state failed, or a conflict): re-read, retry."""


class Busy(Exception):
    """Contention did not clear within ``CONTENTION_ATTEMPTS`` tries."""


def retry_on_contention(attempt: Callable[[], T], attempts: int = CONTENTION_ATTEMPTS) -> T:
    """Run ``attempt`` until it stops raising Contention, with full-jitter exponential backoff."""
    for tries in range(attempts):
        try:
            return attempt()
        except Contention:
            time.sleep(random.uniform(0, min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**tries)))
    raise Busy(f"gave up after {attempts} tries: too many concurrent changes to the same session")


def expires_in(seconds: int) -> int:
    return now_s() + seconds


class Store:
    def __init__(self, settings: Settings, dynamodb_client: Any) -> None:
        self.settings = settings
        self.client = dynamodb_client

    # ---- reads -------------------------------------------------------------------------
    def _get(self, table: str, key: str) -> dict[str, Any] | None:
        return self.client.get_item(TableName=table, Key={"id": key}, ConsistentRead=True).get("Item")

    def session(self, session_id: str) -> Session | None:
        item = self._get(self.settings.sessions_table, session_id)
        return Session.from_item(item) if item and is_session_id(item["id"]) else None

    def open_pointer(self, pointer_id: str) -> dict[str, Any] | None:
        return self._get(self.settings.sessions_table, pointer_id)

    def connection(self, conn_id: str) -> dict[str, Any] | None:
        return self._get(self.settings.connections_table, conn_id)

    def member(self, member_id: str) -> dict[str, Any] | None:
        return self._get(self.settings.members_table, member_id)

    def scan(self, table: str, filter_expression: str | None = None, values: dict | None = None,
             names: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
        if filter_expression:
            kwargs.update(FilterExpression=filter_expression, ExpressionAttributeValues=values)
        if names:
            kwargs["ExpressionAttributeNames"] = names
        for page in self.client.get_paginator("scan").paginate(**kwargs):
            yield from page.get("Items", [])

    # ---- writes ------------------------------------------------------------------------
    def transact(self, items: list[dict[str, Any]]) -> None:
        """All-or-nothing write; a failed condition or a conflict raises Contention."""
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("TransactionCanceledException", "TransactionConflictException"):
                raise Contention(str(exc)) from exc
            raise

    def write(self, operation: str, **kwargs: Any) -> bool:
        """One conditional single-item write; False when its condition failed."""
        try:
            getattr(self.client, operation)(**kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    # ---- item builders -----------------------------------------------------------------
    def put_member(self, member_id: str, session_id: str, conn_id: str, *, new: bool) -> dict[str, Any]:
        put: dict[str, Any] = {
            "TableName": self.settings.members_table,
            "Item": {"id": member_id, "sessionId": session_id, "connId": conn_id,
                     "expireAfter": expires_in(self.settings.member_expiry)},
        }
        if new:
            put["ConditionExpression"] = "attribute_not_exists(#id)"
            put["ExpressionAttributeNames"] = {"#id": "id"}
        return {"Put": put}

    def put_connection(self, conn_id: str, session_id: str, member_id: str) -> dict[str, Any]:
        return {"Put": {
            "TableName": self.settings.connections_table,
            "Item": {"id": conn_id, "sessionId": session_id, "memberId": member_id, "connectedAt": now_s(),
                     "expireAfter": expires_in(self.settings.connection_expiry)},
        }}

    def delete_connection(self, conn_id: str) -> dict[str, Any]:
        return {"Delete": {"TableName": self.settings.connections_table, "Key": {"id": conn_id}}}

    def delete_member(self, member_id: str) -> dict[str, Any]:
        return {"Delete": {"TableName": self.settings.members_table, "Key": {"id": member_id}}}

    def pointer_write(self, pointer_id: str, session_id: str, waiting: int | None) -> dict[str, Any]:
        """Set the open pointer's count of waiting members, or delete it (``None``), only while it
        still points at the session."""
        body: dict[str, Any] = {
            "TableName": self.settings.sessions_table,
            "Key": {"id": pointer_id},
            "ConditionExpression": "openSessionId = :sid",
            "ExpressionAttributeValues": {":sid": session_id},
        }
        if waiting is None:
            return {"Delete": body}
        body["UpdateExpression"] = "SET numWaiting = :n"
        body["ExpressionAttributeValues"][":n"] = waiting
        return {"Update": body}


def default_store() -> Store:
    """One store per warm Lambda instance, rebuilt only if its environment changes."""
    return Store(Settings.from_env(), clients.client("dynamodb"))

"""Makes moto's DynamoDB behave as DynamoDB does where relays can tell the difference, and fast.

Loaded only inside the local DynamoDB's own process (``moto_server``), where every DynamoDB
request already runs under one lock. Each fix closes a gap measured against moto 5.2:

- ``JournaledTransactions``: moto snapshots every table a transaction touches, streams included,
  with ``copy.deepcopy`` (7 ms per transaction, 55 ms once a stream holds ~1,000 records, 260 ms
  on a 2,000-item table), and on cancellation swaps the tables for the copies, which strands open
  shard iterators. Here only the touched items are saved, and a cancelled transaction is undone
  in place, leaving no stream record behind.
- ``coalesce_stream_records``: DynamoDB writes at most one stream record per item per request and
  none for a write that changes nothing; moto writes two INSERTs for an Update that creates an
  item, and a MODIFY for an identical Put.
- ``TtlSweeper``: moto never expires items; DynamoDB deletes them some time after their TTL and
  the stream shows a REMOVE by the service (``userIdentity`` type Service).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from moto import backends as moto_backends
from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table

# As the DynamoDB Streams API spells it; Lambda events spell the same keys in lower camel case.
SERVICE_IDENTITY = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}


def all_tables() -> Iterator[Table]:
    for regions in list(dynamodb_backends.values()):
        for backend in list(regions.values()):
            yield from list(backend.tables.values())


def stream_lengths() -> dict[int, int]:
    """How many records each stream holds now, by shard identity."""
    return {id(t.stream_shard): len(t.stream_shard.items) for t in all_tables() if t.stream_shard is not None}


def _keys(table: Table, attributes: dict[str, Any]) -> tuple[DynamoType, DynamoType | None]:
    hash_key = DynamoType(attributes[table.hash_key_attr])
    range_key = DynamoType(attributes[table.range_key_attr]) if table.range_key_attr else None
    return hash_key, range_key


def _restore(table: Table, hash_key: DynamoType, range_key: DynamoType | None, item: Any) -> None:
    if range_key is None:
        if item is None:
            table.items.pop(hash_key, None)
        else:
            table.items[hash_key] = item
    elif item is None:
        table.items.get(hash_key, {}).pop(range_key, None)
    else:
        table.items[hash_key][range_key] = item


class _NoTableCopies:
    """Stands in for the ``copy`` module inside moto's backend during a transaction: tables are
    not copied (the journal undoes changes instead); everything else is, as before."""

    @staticmethod
    def deepcopy(value: Any, memo: dict | None = None) -> Any:
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)


_original_transact = DynamoDBBackend.transact_write_items


def _journaled_transact(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    saved: list[tuple[Table, DynamoType, DynamoType | None, Any]] = []
    shards: dict[int, tuple[Any, int]] = {}
    for entry in transact_items:
        _, op = next(iter(entry.items()))
        table = self.tables.get(op.get("TableName", ""))
        if table is None:
            continue
        try:
            hash_key, range_key = _keys(table, op.get("Item") or op.get("Key") or {})
        except KeyError:
            continue  # moto reports the malformed request itself
        saved.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
        if table.stream_shard is not None:
            shards[id(table.stream_shard)] = (table.stream_shard, len(table.stream_shard.items))
    dynamodb_models.copy = _NoTableCopies  # type: ignore[assignment]
    try:
        _original_transact(self, transact_items)
    except Exception:
        for table, hash_key, range_key, item in reversed(saved):
            _restore(table, hash_key, range_key, item)
        for shard, length in shards.values():
            del shard.items[length:]
        raise
    finally:
        dynamodb_models.copy = copy  # type: ignore[assignment]


def _record_key(record: dict[str, Any]) -> str:
    return json.dumps(record["dynamodb"]["Keys"], sort_keys=True)


def coalesce_stream_records(before: dict[int, int]) -> None:
    """Rewrite the records one request added: one per item, none for a no-op write."""
    for table in all_tables():
        shard = table.stream_shard
        if shard is None:
            continue
        start = before.get(id(shard), 0)
        added = shard.items[start:]
        if not added:
            continue
        by_key: dict[str, list[Any]] = {}
        for stream_record in added:
            by_key.setdefault(_record_key(stream_record.record), []).append(stream_record)
        kept = []
        for stream_record in added:
            group = by_key[_record_key(stream_record.record)]
            if stream_record is not group[-1]:
                continue
            merged = _merge(group)
            if merged is not None:
                kept.append(merged)
        if len(kept) == len(added) and all(a is b for a, b in zip(kept, added, strict=True)):
            continue
        shard.items[start:] = kept
        for offset, stream_record in enumerate(kept):
            stream_record.record["dynamodb"]["SequenceNumber"] = str(shard.starting_sequence_number + start + offset)


def _merge(group: list[Any]) -> Any | None:
    first, last = group[0].record, group[-1].record
    existed = first["eventName"] != "INSERT"
    exists = last["eventName"] != "REMOVE"
    body = last["dynamodb"]
    old_image = first["dynamodb"].get("OldImage")
    if existed and exists and old_image is not None and old_image == body.get("NewImage"):
        return None
    if not existed and not exists:
        return None
    last["eventName"] = "MODIFY" if existed and exists else ("INSERT" if exists else "REMOVE")
    if existed and old_image is not None:
        body["OldImage"] = old_image
    else:
        body.pop("OldImage", None)
    return group[-1]


class TtlSweeper(threading.Thread):
    """Deletes items past their TTL attribute ``delay`` seconds late, as the service would."""

    def __init__(self, lock: threading.Lock, delay: float, interval: float = 1.0) -> None:
        super().__init__(name="ttl-sweeper", daemon=True)
        self.lock = lock
        self.delay = delay
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            with self.lock:
                self.sweep(time.time())

    def sweep(self, now: float) -> int:
        deleted = 0
        for table in all_tables():
            if table.ttl.get("TimeToLiveStatus") != "ENABLED":
                continue
            attribute = table.ttl["AttributeName"]
            for item in list(_items(table)):
                value = item.attrs.get(attribute)
                if value is None or value.type != "N" or float(value.value) + self.delay > now:
                    continue
                table.delete_item(item.hash_key, item.range_key)
                if table.stream_shard is not None and table.stream_shard.items:
                    table.stream_shard.items[-1].record["userIdentity"] = dict(SERVICE_IDENTITY)
                deleted += 1
        return deleted


def _items(table: Table) -> Iterator[Any]:
    for value in table.items.values():
        if table.range_key_attr:
            yield from value.values()
        else:
            yield value


def install() -> None:
    DynamoDBBackend.transact_write_items = _journaled_transact  # type: ignore[method-assign]
    # moto's server lists its own package folder on every request (a listdir and ~50 stats) to
    # route it; the list never changes while the process runs.
    modules = tuple(moto_backends.list_of_moto_modules())
    moto_backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]

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
- ``_single_spaced_expressions``: DynamoDB's expression grammar separates tokens by any whitespace
  (newlines and tabs included: relays write expressions as multi-line template literals); moto has
  three tokenizers that each know only some of it (conditions and filters: spaces; update
  expressions: spaces and newlines; key conditions: spaces), and a condition it cannot lex raises
  a bare ``ValueError`` (HTTP 500, which SDKs retry until the caller times out). Every
  ``...Expression`` parameter of every operation, at any depth (``TransactItems``,
  ``RequestItems``), has each run of whitespace made one space before moto parses it; the grammar
  has no string literals, so a run of whitespace is only ever a separator
  (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.html).
- ``_validation_error_dispatch``: an exception moto does not expect (``StopIteration`` for an
  attribute value with no type, ``{"id": {}}``; ``ValueError`` for a condition it cannot lex)
  becomes HTTP 500 on its own; DynamoDB answers a request it
  cannot serve with 400 ``ValidationException`` and a message, so here it becomes that, naming the
  operation and the error, and is reported (the traceback on stderr). Inside a transaction moto
  turns such an exception into a cancellation reason coded with the exception's class; that too
  is answered as a ValidationException (``_raise_if_moto_failed``).
- ``_stream_record_with_keys``: moto puts a binary (``B``) key into a stream record's ``Keys``
  already base64-encoded, and its serializer encodes it again (the images hold bytes and are
  right): a consumer got ``base64(base64(key))``. Here ``Keys`` hold the key attributes' values as
  the images do.
- ``_projected_transact_get``: moto's ``TransactGetItems`` ignores each Get's
  ``ProjectionExpression`` and returns whole items; here each Get returns what its projection names.

And two that only make it cheaper (same answers; measured with ``benchmarks/store_benchmark.py``):

- ``_method_names_once_per_class``: moto lists a handler class's methods with ``inspect.getmembers``
  on every request to check that the action is one of them (3 % of the process's CPU); the
  methods of a class do not change once ``install`` has patched them, so each class is listed once.
- ``list_of_moto_modules`` is listed once (below, in ``install``).
"""

from __future__ import annotations

import copy
import functools
import json
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from moto import backends as moto_backends
from moto.core import responses as moto_responses
from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.exceptions import MockValidationException, TransactionCanceledException
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import StreamRecord, Table
from moto.dynamodb.models.utilities import dynamo_to_dict
from moto.dynamodb.responses import DynamoHandler, ProjectionExpressionParser
from werkzeug.exceptions import HTTPException

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
    except Exception as exc:
        for table, hash_key, range_key, item in reversed(saved):
            _restore(table, hash_key, range_key, item)
        for shard, length in shards.values():
            del shard.items[length:]
        if isinstance(exc, TransactionCanceledException):
            _raise_if_moto_failed(exc)
        raise
    finally:
        dynamodb_models.copy = copy  # type: ignore[assignment]


# A cancellation reason's codes, as DynamoDB gives them (API reference, CancellationReason).
_CANCELLATION_CODES = {"None", "ConditionalCheckFailed", "ItemCollectionSizeLimitExceeded", "TransactionConflict",
                       "ProvisionedThroughputExceeded", "ThrottlingError", "ValidationError"}


def _raise_if_moto_failed(exc: TransactionCanceledException) -> None:
    """moto turns any exception inside a transaction into a cancellation reason coded with the
    exception's class (``KeyError`` for a Put without its key); that is moto failing, not a
    cancellation: DynamoDB answers such a request 400 ValidationException."""
    reasons = json.loads(exc.description).get("CancellationReasons", [])
    failed = [(index, reason) for index, reason in enumerate(reasons) if reason.get("Code") not in _CANCELLATION_CODES]
    if failed:
        index, reason = failed[0]
        message = (f"TransactWriteItems: the local DynamoDB (moto) could not handle TransactItems[{index}]: "
                   f"{reason['Code']}: {reason.get('Message', '')}")
        report(f"answered 400 ValidationException: {message}")
        raise MockValidationException(message) from exc


def _record_key(record: dict[str, Any]) -> str:
    return json.dumps(record["dynamodb"]["Keys"], sort_keys=True, default=repr)  # a binary key is bytes


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


# Spaces, tabs and line ends (LF, CRLF): what a formatted expression holds; other characters that
# Unicode calls whitespace (a no-break space) are left for moto to refuse, as DynamoDB may.
_WHITESPACE = re.compile(r"[ \t\r\n]+")


def single_spaced(params: Any) -> Any:
    """``params`` (a request's parsed parameters) with every ``...Expression`` string's runs of
    spaces, tabs and line ends made one space and its ends stripped, at any depth; everything else as it was."""
    if isinstance(params, dict):
        return {key: _WHITESPACE.sub(" ", value).strip(" ") if key.endswith("Expression") and isinstance(value, str)
                else single_spaced(value) for key, value in params.items()}
    if isinstance(params, list):
        return [single_spaced(value) for value in params]
    return params


_original_parse_parameters = DynamoHandler.parse_parameters


def _single_spaced_expressions(self: DynamoHandler, request: Any) -> None:
    _original_parse_parameters(self, request)
    self.params = single_spaced(self.params)


def _stderr_report(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# Where a request moto could not handle is reported, besides its traceback on stderr.
report: Callable[[str], None] = _stderr_report


def _validation_error_dispatch(self: DynamoHandler, request: Any, full_url: str, headers: Any) -> Any:
    try:
        self.setup_class(request, full_url, headers)
        return self.call_action()
    except HTTPException:
        raise  # moto's own errors (ValidationException and the rest) are answered as they are
    except Exception as exc:
        target = str(headers.get("X-Amz-Target") or headers.get("x-amz-target") or "")
        operation = target.rsplit(".", 1)[-1] or "the request"
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        message = f"{operation}: the local DynamoDB (moto) could not handle this request: {error}"
        traceback.print_exc(file=sys.stderr)
        report(f"answered 400 ValidationException: {message}")
        raise MockValidationException(message) from exc


_original_stream_record_init = StreamRecord.__init__


def _stream_record_with_keys(self: StreamRecord, table: Table, stream_type: str, event_name: str, old: Any,
                             new: Any, seq: int) -> None:
    _original_stream_record_init(self, table, stream_type, event_name, old, new, seq)
    item = old if old is not None else new
    names = [name for name in (table.hash_key_attr, table.range_key_attr) if name]
    self.record["dynamodb"]["Keys"] = {name: {item.attrs[name].type: item.attrs[name].value} for name in names}


_original_transact_get = DynamoHandler.transact_get_items


def _projected_transact_get(self: DynamoHandler) -> Any:
    result = _original_transact_get(self)
    gets = [entry["Get"] for entry in self.body["TransactItems"]]
    for get, answer in zip(gets, result.result["Responses"], strict=True):
        expression = get.get("ProjectionExpression")
        if expression and "Item" in answer:
            paths = ProjectionExpressionParser(expression, get.get("ExpressionAttributeNames")).parse()
            item = self.dynamodb_backend.get_item(get["TableName"], get["Key"], paths)
            answer["Item"] = dynamo_to_dict(item.describe_attrs(attributes=None))["Item"]
    return result


_original_method_names = moto_responses.method_names_from_class


@functools.cache
def _method_names_once_per_class(clazz: type) -> frozenset[str]:
    """The names of ``clazz``'s methods (moto's ``method_names_from_class``), listed once per class."""
    return frozenset(_original_method_names(clazz))


def install(report_to: Callable[[str], None] | None = None) -> None:
    """Apply every fix above to moto in this process; ``report_to`` receives one line per request
    moto could not handle (default: stderr)."""
    global report
    if report_to is not None:
        report = report_to
    DynamoHandler.parse_parameters = _single_spaced_expressions  # type: ignore[method-assign]
    DynamoHandler._dispatch = _validation_error_dispatch  # type: ignore[method-assign]
    DynamoHandler.transact_get_items = _projected_transact_get  # type: ignore[method-assign]
    StreamRecord.__init__ = _stream_record_with_keys  # type: ignore[method-assign]
    DynamoDBBackend.transact_write_items = _journaled_transact  # type: ignore[method-assign]
    # moto's server lists its own package folder on every request (a listdir and ~50 stats) to
    # route it; the list never changes while the process runs.
    modules = tuple(moto_backends.list_of_moto_modules())
    moto_backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]
    moto_responses.method_names_from_class = _method_names_once_per_class  # type: ignore[assignment]

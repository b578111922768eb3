"""The local DynamoDB delivers what DynamoDB would, where moto alone does not (README table)."""

from __future__ import annotations

import threading
import time

import pytest

from harness.stack import dynamodb as local_ddb
from harness.stack.streams import StreamReader
from harness.stack.template import TableSpec

SPEC = TableSpec("T", "fidelity", [{"AttributeName": "id", "KeyType": "HASH"}],
                 [{"AttributeName": "id", "AttributeType": "S"}], "NEW_AND_OLD_IMAGES", "expireAfter")


@pytest.fixture
def table(local_dynamodb):
    local_dynamodb.reset()
    client = local_ddb.client(local_dynamodb.endpoint)
    arn = local_ddb.create_tables(client, [SPEC])["fidelity"]
    reader = StreamReader(local_ddb.client(local_dynamodb.endpoint, "dynamodbstreams"), arn)
    return client, reader


def _events(reader):
    return [(r["eventName"], r["dynamodb"]["Keys"]["id"]["S"]) for r in reader.poll()]


def test_update_that_creates_an_item_is_one_insert_with_the_full_image(table):
    client, reader = table
    client.transact_write_items(TransactItems=[{"Update": {
        "TableName": "fidelity", "Key": {"id": {"S": "a"}},
        "UpdateExpression": "SET members = list_append(if_not_exists(members, :e), :m)",
        "ExpressionAttributeValues": {":e": {"L": []}, ":m": {"L": [{"S": "x"}]}}}}])
    client.update_item(TableName="fidelity", Key={"id": {"S": "b"}}, UpdateExpression="SET n = :n",
                       ExpressionAttributeValues={":n": {"N": "1"}})
    records = reader.poll()
    assert [(r["eventName"], r["dynamodb"]["Keys"]["id"]["S"]) for r in records] == [("INSERT", "a"), ("INSERT", "b")]
    assert records[0]["dynamodb"]["NewImage"]["members"] == {"L": [{"S": "x"}]}
    assert "OldImage" not in records[0]["dynamodb"]
    assert int(records[1]["dynamodb"]["SequenceNumber"]) == int(records[0]["dynamodb"]["SequenceNumber"]) + 1


def test_cancelled_transaction_leaves_no_record_and_open_iterators_keep_working(table):
    client, reader = table
    client.put_item(TableName="fidelity", Item={"id": {"S": "b"}})
    streams = reader.client
    shard = streams.describe_stream(StreamArn=reader.stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=reader.stream_arn, ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    with pytest.raises(client.exceptions.TransactionCanceledException):
        client.transact_write_items(TransactItems=[
            {"Put": {"TableName": "fidelity", "Item": {"id": {"S": "z"}}}},
            {"Put": {"TableName": "fidelity", "Item": {"id": {"S": "b"}},
                     "ConditionExpression": "attribute_not_exists(id)"}}])
    client.put_item(TableName="fidelity", Item={"id": {"S": "c"}})
    assert _events(reader) == [("INSERT", "b"), ("INSERT", "c")]
    assert "Item" not in client.get_item(TableName="fidelity", Key={"id": {"S": "z"}})
    seen = streams.get_records(ShardIterator=iterator)["Records"]
    assert [r["dynamodb"]["Keys"]["id"]["S"] for r in seen] == ["b", "c"]


def test_a_write_that_changes_nothing_writes_no_record(table):
    client, reader = table
    client.put_item(TableName="fidelity", Item={"id": {"S": "a"}, "n": {"N": "1"}})
    client.put_item(TableName="fidelity", Item={"id": {"S": "a"}, "n": {"N": "1"}})
    client.put_item(TableName="fidelity", Item={"id": {"S": "a"}, "n": {"N": "2"}})
    assert _events(reader) == [("INSERT", "a"), ("MODIFY", "a")]


def test_concurrent_conditional_writes_are_serialised(table):
    client, _ = table
    client.put_item(TableName="fidelity", Item={"id": {"S": "counter"}, "n": {"N": "0"}})
    won = []

    def bump():
        for _ in range(20):
            current = client.get_item(TableName="fidelity", Key={"id": {"S": "counter"}}, ConsistentRead=True)
            n = int(current["Item"]["n"]["N"])
            try:
                client.transact_write_items(TransactItems=[{"Update": {
                    "TableName": "fidelity", "Key": {"id": {"S": "counter"}}, "UpdateExpression": "SET n = :next",
                    "ConditionExpression": "n = :seen",
                    "ExpressionAttributeValues": {":seen": {"N": str(n)}, ":next": {"N": str(n + 1)}}}}])
                won.append(n)
            except client.exceptions.TransactionCanceledException:
                pass

    threads = [threading.Thread(target=bump) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    final = int(client.get_item(TableName="fidelity", Key={"id": {"S": "counter"}})["Item"]["n"]["N"])
    assert final == len(won)
    assert sorted(won) == list(range(final))  # every successful write saw the one before it


def test_ttl_deletes_late_and_the_stream_shows_the_service(tmp_path):
    with local_ddb.LocalDynamoDB(ttl_delay=0.5) as ddb:
        client = local_ddb.client(ddb.endpoint)
        arn = local_ddb.create_tables(client, [SPEC])["fidelity"]
        reader = StreamReader(local_ddb.client(ddb.endpoint, "dynamodbstreams"), arn)
        now = int(time.time())
        client.put_item(TableName="fidelity", Item={"id": {"S": "old"}, "expireAfter": {"N": str(now - 1)}})
        client.put_item(TableName="fidelity", Item={"id": {"S": "new"}, "expireAfter": {"N": str(now + 3600)}})
        reader.skip_to_end()
        deadline = time.monotonic() + 10
        removed = []
        while not removed and time.monotonic() < deadline:
            removed = [r for r in reader.poll() if r["eventName"] == "REMOVE"]
        [record] = removed
        assert record["dynamodb"]["Keys"]["id"]["S"] == "old"
        assert record["userIdentity"] == {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
        assert [i["id"]["S"] for i in client.scan(TableName="fidelity")["Items"]] == ["new"]

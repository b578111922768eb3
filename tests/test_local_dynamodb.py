"""The local DynamoDB delivers what DynamoDB would, where moto alone does not (README table)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import boto3
import botocore.config
import pytest

from harness.faults.log import FaultLog
from harness.faults.plan import FaultPlan, parse_rule
from harness.stack import dynamodb as local_ddb
from harness.stack import moto_fidelity
from harness.stack.call_faults import CallFaults
from harness.stack.invocation_keys import invocation_key
from harness.stack.logs import StackLog, current_invocation
from harness.stack.python_runtime import PythonFunction
from harness.stack.runtime import FunctionSpec
from harness.stack.stream_source import StreamEventSource, StreamMapping
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


# ---- requests moto alone answers with HTTP 500 (README table) ------------------------------------

# How a relay's multi-line template literal reaches DynamoDB: newlines, tabs, runs of spaces, CRLF.
GAP = "\n\t\t  \r\n\t"
PAIR = TableSpec("P", "pairs",
                 [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                 [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
                 None, None)


def _no_retries(endpoint, **config):
    """A client that shows the first answer: a 500 would otherwise be retried for seconds."""
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                        config=botocore.config.Config(retries={"max_attempts": 1}, **config),
                        **local_ddb.LOCAL_CREDENTIALS)


@pytest.fixture
def pairs(local_dynamodb):
    local_dynamodb.reset()
    local_ddb.create_tables(local_ddb.client(local_dynamodb.endpoint), [PAIR])
    return _no_retries(local_dynamodb.endpoint)


def test_single_spaced_touches_every_expression_and_nothing_else():
    params = {"TransactItems": [{"Update": {"UpdateExpression": f"{GAP}SET{GAP}a = :a{GAP}",
                                            "ExpressionAttributeValues": {":a": {"S": f"x{GAP}y"}}}}],
              "RequestItems": {"t": {"ProjectionExpression": f"a,{GAP}b"}}, "Statement": f"SELECT{GAP}*"}
    assert moto_fidelity.single_spaced(params) == {
        "TransactItems": [{"Update": {"UpdateExpression": "SET a = :a",
                                      "ExpressionAttributeValues": {":a": {"S": f"x{GAP}y"}}}}],
        "RequestItems": {"t": {"ProjectionExpression": "a, b"}}, "Statement": f"SELECT{GAP}*"}


def test_expressions_with_newlines_and_tabs_are_valid_in_every_operation(pairs):
    c, key, one = pairs, {"pk": {"S": "a"}, "sk": {"S": "1"}}, {":one": {"N": "1"}}
    c.put_item(TableName="pairs", Item={**key, "n": {"N": "1"}, "type": {"S": "t"}},
               ConditionExpression=f"{GAP}attribute_not_exists(pk){GAP}AND{GAP}attribute_not_exists(#s){GAP}",
               ExpressionAttributeNames={"#s": "sk"})
    with pytest.raises(c.exceptions.ConditionalCheckFailedException):  # the condition is evaluated, not skipped
        c.put_item(TableName="pairs", Item=key, ConditionExpression=f"attribute_not_exists(pk){GAP}")
    updated = c.update_item(
        TableName="pairs", Key=key, ReturnValues="ALL_NEW", ExpressionAttributeNames={"#n": "n", "#t": "type"},
        UpdateExpression=f"{GAP}SET{GAP}#n = #n +{GAP}:one,{GAP}m = :one{GAP}ADD{GAP}c :one{GAP}REMOVE{GAP}#t",
        ConditionExpression=f"attribute_exists(pk){GAP}AND{GAP}(#n{GAP}={GAP}:one{GAP}OR{GAP}size(#t) > :one)",
        ExpressionAttributeValues=one)["Attributes"]
    assert (updated["n"], updated["m"], updated["c"], "type" in updated) == ({"N": "2"}, {"N": "1"}, {"N": "1"}, False)
    assert c.get_item(TableName="pairs", Key=key, ProjectionExpression=f"pk,{GAP}m")["Item"] == {
        "pk": {"S": "a"}, "m": {"N": "1"}}
    query = c.query(TableName="pairs",
                    KeyConditionExpression=f"{GAP}pk{GAP}={GAP}:p{GAP}AND{GAP}begins_with(sk,{GAP}:s)",
                    FilterExpression=f"n{GAP}>{GAP}:one", ProjectionExpression=f"sk,{GAP}n",
                    ExpressionAttributeValues={":p": {"S": "a"}, ":s": {"S": "1"}, **one})
    assert query["Items"] == [{"sk": {"S": "1"}, "n": {"N": "2"}}]
    scan = c.scan(TableName="pairs", FilterExpression=f"{GAP}c{GAP}={GAP}:one", ProjectionExpression=f"pk,{GAP}c",
                  ExpressionAttributeValues=one)
    assert scan["Items"] == [{"pk": {"S": "a"}, "c": {"N": "1"}}]
    other = {"pk": {"S": "b"}, "sk": {"S": "1"}}
    c.transact_write_items(TransactItems=[
        {"Update": {"TableName": "pairs", "Key": key, "UpdateExpression": f"SET{GAP}m = m +{GAP}:one",
                    "ConditionExpression": f"attribute_exists(pk){GAP}AND{GAP}m = :one",
                    "ExpressionAttributeValues": one}},
        {"Put": {"TableName": "pairs", "Item": other, "ConditionExpression": f"attribute_not_exists(pk){GAP}"}},
        {"ConditionCheck": {"TableName": "pairs", "Key": {"pk": {"S": "c"}, "sk": {"S": "1"}},
                            "ConditionExpression": f"{GAP}attribute_not_exists(pk)"}},
        {"Delete": {"TableName": "pairs", "Key": {"pk": {"S": "d"}, "sk": {"S": "1"}},
                    "ConditionExpression": f"attribute_not_exists(pk){GAP}"}}])
    got = c.transact_get_items(TransactItems=[{"Get": {"TableName": "pairs", "Key": key,
                                                       "ProjectionExpression": f"pk,{GAP}m"}}])["Responses"]
    assert got == [{"Item": {"pk": {"S": "a"}, "m": {"N": "2"}}}]
    batch = c.batch_get_item(RequestItems={"pairs": {"Keys": [other], "ProjectionExpression": f"sk,{GAP}pk"}})
    assert batch["Responses"]["pairs"] == [{"pk": {"S": "b"}, "sk": {"S": "1"}}]
    c.delete_item(TableName="pairs", Key=other, ConditionExpression=f"attribute_exists(pk){GAP}OR{GAP}n = :one",
                  ExpressionAttributeValues=one)
    assert "Item" not in c.get_item(TableName="pairs", Key=other)


def _raw_answers(client):
    """Every HTTP answer the client gets, as (status, JSON body)."""
    answers = []
    client.meta.events.register("after-call.dynamodb", lambda http_response, **_: answers.append(
        (http_response.status_code, json.loads(http_response.content or b"{}"))))
    return answers


def test_a_request_moto_cannot_handle_is_a_validation_exception_not_a_500(local_dynamodb, table):
    # A key attribute with no type, as a relay's bug (or an SDK without parameter validation) sends it.
    client = _no_retries(local_dynamodb.endpoint, parameter_validation=False)
    answers = _raw_answers(client)
    with pytest.raises(client.exceptions.ClientError) as caught:
        client.put_item(TableName="fidelity", Item={"id": {}})
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    status, body = answers[-1]
    assert body["__type"] == "com.amazonaws.dynamodb.v20120810#ValidationException"
    assert status == 400 and body["message"] == (
        "PutItem: the local DynamoDB (moto) could not handle this request: StopIteration")
    # moto's condition lexer raises a bare ValueError for what it cannot lex; DynamoDB: ValidationException.
    with pytest.raises(client.exceptions.ClientError) as caught:
        client.delete_item(TableName="fidelity", Key={"id": {"S": "a"}}, ConditionExpression="id = = :a",
                           ExpressionAttributeValues={":a": {"S": "a"}})
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert answers[-1][0] == 400 and answers[-1][1]["message"].startswith("DeleteItem: ")
    # moto codes the KeyError of a Put without its key as a cancellation reason; DynamoDB: ValidationException.
    with pytest.raises(client.exceptions.ClientError) as caught:
        client.transact_write_items(TransactItems=[{"Put": {"TableName": "fidelity", "Item": {"id": {"S": "b"}}}},
                                                   {"Put": {"TableName": "fidelity", "Item": {}}}])
    assert caught.value.response["Error"] == {
        "Code": "ValidationException",
        "Message": "TransactWriteItems: the local DynamoDB (moto) could not handle TransactItems[1]: KeyError: 'id'"}
    assert "Item" not in client.get_item(TableName="fidelity", Key={"id": {"S": "b"}})
    stack_log = Path(local_dynamodb.stack_log_dir, "stack.log").read_text()
    assert ("[dynamodb] answered 400 ValidationException: PutItem: the local DynamoDB (moto) could not handle "
            "this request: StopIteration") in stack_log


def test_an_injected_internal_server_error_is_still_a_500(local_dynamodb, table):
    client = _no_retries(local_dynamodb.endpoint)
    plan = FaultPlan([parse_rule({"name": "store-500", "seam": "store", "type": "InternalServerError",
                                  "match": {"operation": "PutItem"}})], seed=1, log=FaultLog())
    faults = CallFaults(plan)
    faults.install(client.meta.events)
    invocation = current_invocation.set(("fn", "request-1"))
    key = invocation_key.set(("fn", "event-1"))
    try:
        with pytest.raises(client.exceptions.InternalServerError) as caught:
            client.put_item(TableName="fidelity", Item={"id": {"S": "a"}})
    finally:
        invocation_key.reset(key)
        current_invocation.reset(invocation)
        faults.uninstall()
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert "Item" not in client.get_item(TableName="fidelity", Key={"id": {"S": "a"}})


# ---- stream records reach Lambda as Lambda's JSON (README table) ---------------------------------

BINARY = TableSpec("B", "binary", [{"AttributeName": "id", "KeyType": "HASH"}],
                   [{"AttributeName": "id", "AttributeType": "B"}], "NEW_AND_OLD_IMAGES", None)
STREAM_PROBE = '''
import json


def handler(event, context):
    with open("seen.json", "a") as seen:  # its instance runs in its own process, in this folder
        seen.write(json.dumps(event) + "\\n")
'''


def test_binary_attributes_reach_lambda_as_base64_and_times_as_whole_seconds(local_dynamodb, tmp_path, fork_server):
    local_dynamodb.reset()
    client = local_ddb.client(local_dynamodb.endpoint)
    arn = local_ddb.create_tables(client, [BINARY])["binary"]
    reader = StreamReader(local_ddb.client(local_dynamodb.endpoint, "dynamodbstreams"), arn)
    raw = b"\x00\xffhello"
    client.put_item(TableName="binary", Item={
        "id": {"B": raw}, "b": {"B": raw}, "set": {"BS": [raw]},
        "deep": {"M": {"list": {"L": [{"B": raw}, {"M": {"b": {"B": raw}}}]}}}})
    (tmp_path / "binary_stream_probe.py").write_text(STREAM_PROBE)
    function = PythonFunction(FunctionSpec("Probe", "probe", "binary_stream_probe.handler", tmp_path, {}),
                              StackLog(), {}, fork_server, 1)
    try:
        source = StreamEventSource(StreamMapping(function, arn, starting_position="TRIM_HORIZON"), reader, StackLog())
        source.deliver(reader.poll())
    finally:
        function.close()
    [event] = [json.loads(line) for line in (tmp_path / "seen.json").read_text().splitlines()]
    [record] = event["Records"]
    encoded = {"B": "AP9oZWxsbw=="}
    assert record["dynamodb"]["Keys"] == {"id": encoded}
    image = record["dynamodb"]["NewImage"]
    assert (image["id"], image["b"], image["set"]) == (encoded, encoded, {"BS": ["AP9oZWxsbw=="]})
    assert image["deep"] == {"M": {"list": {"L": [encoded, {"M": {"b": encoded}}]}}}
    stamp = record["dynamodb"]["ApproximateCreationDateTime"]
    assert isinstance(stamp, int) and abs(stamp - time.time()) < 60


# ---- the call shapes of a relay written against DynamoDB's low-level API (Simple Relay 2.0.0's) ----

def _hash_table(logical, name):
    return TableSpec(logical, name, [{"AttributeName": "id", "KeyType": "HASH"}],
                     [{"AttributeName": "id", "AttributeType": "S"}], None, None)


def _s(value):
    return {"S": value}


def _member(member_id, conn_id=None):
    return {"M": {"memberId": _s(member_id), **({"connId": _s(conn_id)} if conn_id else {})}}


def _join(member_id, conn, session, open_session, *, new, last):
    """A join's transaction: member and connection records, the session's member list, the open
    session's waiting count (or its deletion when this join fills the session)."""
    expire = {"N": "4102444800"}
    session_update = {
        "TableName": "sessions", "Key": {"id": _s(session)},
        "UpdateExpression": """
            SET members = list_append(if_not_exists(members, :emptyList), :newMember),
              expireAfter = :expireAfter
              """ + (""", targetNumMembers = :targetNumMembers, #type = :type
            """ if new else ""),
        "ConditionExpression": """
            (attribute_not_exists(members) OR size(members) < targetNumMembers)
            """ + ("" if new else " AND attribute_exists(id)\n\t"),
        "ExpressionAttributeValues": {":emptyList": {"L": []}, ":newMember": {"L": [_member(member_id, conn)]},
                                      ":expireAfter": expire,
                                      **({":type": _s("pair"), ":targetNumMembers": {"N": "2"}} if new else {})},
        **({"ExpressionAttributeNames": {"#type": "type"}} if new else {})}
    if last:
        waiting = {"Delete": {"TableName": "sessions", "Key": {"id": _s(open_session)},
                              "ConditionExpression": "numWaiting = :targetNumMembersMinus1",
                              "ExpressionAttributeValues": {":targetNumMembersMinus1": {"N": "1"}}}}
    else:
        waiting = {"Update": {
            "TableName": "sessions", "Key": {"id": _s(open_session)},
            "UpdateExpression": """
                SET openSessionId = :sessionId,
                  expireAfter = :expireAfter
                ADD numWaiting :one
            """,
            "ConditionExpression": """
                attribute_not_exists(id)
                OR (
                  openSessionId = :sessionId
                  AND numWaiting < :targetNumMembersMinus1
                )
            """,
            "ExpressionAttributeValues": {":sessionId": _s(session), ":expireAfter": expire, ":one": {"N": "1"},
                                          ":targetNumMembersMinus1": {"N": "1"}}}}
    return [{"Put": {"TableName": "members", "Item": {"id": _s(member_id), "sessionId": _s(session),
                                                      "connId": _s(conn), "expireAfter": expire}}},
            {"Put": {"TableName": "connections", "Item": {"id": _s(conn), "sessionId": _s(session),
                                                          "expireAfter": expire}}},
            {"Update": session_update}, waiting]


def test_a_relays_low_level_store_calls_behave_as_on_dynamodb(local_dynamodb):
    local_dynamodb.reset()
    c = _no_retries(local_dynamodb.endpoint)
    local_ddb.create_tables(c, [_hash_table("S", "sessions"), _hash_table("M", "members"),
                                _hash_table("C", "connections")])
    answers = _raw_answers(c)

    def session():
        return c.get_item(TableName="sessions", Key={"id": _s("s1")}, ConsistentRead=True).get("Item")

    c.transact_write_items(TransactItems=_join("m1", "c1", "s1", "open-pair", new=True, last=False))
    assert session()["members"] == {"L": [_member("m1", "c1")]} and session()["type"] == _s("pair")
    assert c.get_item(TableName="sessions", Key={"id": _s("open-pair")})["Item"]["numWaiting"] == {"N": "1"}
    c.transact_write_items(TransactItems=_join("m2", "c2", "s1", "open-pair", new=False, last=True))
    assert len(session()["members"]["L"]) == 2
    assert "Item" not in c.get_item(TableName="sessions", Key={"id": _s("open-pair")})
    # A third joiner into the full session: cancelled, the reason at the session update's index.
    with pytest.raises(c.exceptions.TransactionCanceledException) as caught:
        c.transact_write_items(TransactItems=_join("m3", "c3", "s1", "open-pair", new=False, last=True))
    codes = [r["Code"] for r in answers[-1][1]["CancellationReasons"]]
    assert codes[:3] == ["None", "None", "ConditionalCheckFailed"]
    assert [r["Code"] for r in caught.value.response["CancellationReasons"]] == codes
    assert "Item" not in c.get_item(TableName="members", Key={"id": _s("m3")})  # nothing of it was applied

    def rejoin(member_id, conn, old_conn):
        return [{"Put": {"TableName": "connections", "Item": {"id": _s(conn), "sessionId": _s("s1")}}},
                {"Put": {"TableName": "members", "Item": {"id": _s(member_id), "sessionId": _s("s1"),
                                                          "connId": _s(conn)}}},
                {"Update": {"TableName": "sessions", "Key": {"id": _s("s1")},
                            "UpdateExpression": "\n  SET members[1] = :newMember,\n    expireAfter = :expireAfter\n",
                            "ConditionExpression": "members[1].memberId = :memberId",
                            "ExpressionAttributeValues": {":memberId": _s(member_id),
                                                          ":newMember": _member(member_id, conn),
                                                          ":expireAfter": {"N": "1"}}}},
                {"Delete": {"TableName": "connections", "Key": {"id": _s(old_conn)}}}]

    c.transact_write_items(TransactItems=rejoin("m2", "c2b", "c2"))
    assert session()["members"]["L"][1] == _member("m2", "c2b")
    assert "Item" not in c.get_item(TableName="connections", Key={"id": _s("c2")})
    with pytest.raises(c.exceptions.TransactionCanceledException) as caught:
        c.transact_write_items(TransactItems=rejoin("m1", "c1b", "c1"))  # m1 is not members[1]
    assert caught.value.response["CancellationReasons"][2]["Code"] == "ConditionalCheckFailed"

    # A heartbeat: a conditional update that returns the item as it was.
    heartbeat = {"TableName": "sessions", "UpdateExpression": "SET expireAfter = :expireAfter",
                 "ExpressionAttributeValues": {":expireAfter": {"N": "5"}},
                 "ConditionExpression": "attribute_exists(id)", "ReturnValues": "ALL_OLD"}
    old = c.update_item(Key={"id": _s("s1")}, **heartbeat)["Attributes"]
    assert old["expireAfter"] == {"N": "1"} and session()["expireAfter"] == {"N": "5"}
    with pytest.raises(c.exceptions.ConditionalCheckFailedException):
        c.update_item(Key={"id": _s("gone")}, **heartbeat)
    assert "Item" not in c.get_item(TableName="sessions", Key={"id": _s("gone")})  # no item was created

    # A disconnect after the session started: the connection record goes, the member's connId too.
    deleted = c.delete_item(TableName="connections", Key={"id": _s("c2b")}, ReturnValues="ALL_OLD")
    assert deleted["Attributes"]["sessionId"] == _s("s1")
    assert "Attributes" not in c.delete_item(TableName="connections", Key={"id": _s("c2b")}, ReturnValues="ALL_OLD")
    c.transact_write_items(TransactItems=[{"Update": {"TableName": "sessions", "Key": {"id": _s("s1")},
                                                      "UpdateExpression": "REMOVE members[1].connId"}}])
    assert session()["members"]["L"] == [_member("m1", "c1"), _member("m2")]

    # Disconnects before a session starts: leave a two-member waiting list, then empty a one-member one.
    c.transact_write_items(TransactItems=_join("m4", "c4", "s2", "open-pair", new=True, last=False))
    c.put_item(TableName="sessions", Item={"id": _s("s2"), "members": {"L": [_member("m4", "c4"), _member("m5")]},
                                           "targetNumMembers": {"N": "3"}})
    c.put_item(TableName="sessions", Item={"id": _s("open-pair"), "numWaiting": {"N": "2"}})
    c.delete_item(TableName="connections", Key={"id": _s("c4")})
    c.transact_write_items(TransactItems=[
        {"Update": {"TableName": "sessions", "Key": {"id": _s("s2")}, "UpdateExpression": "REMOVE members[0]",
                    "ConditionExpression": "\n  size(members) < targetNumMembers\n"
                                           "  AND members[0].memberId = :memberId\n",
                    "ExpressionAttributeValues": {":memberId": _s("m4")}}},
        {"Delete": {"TableName": "members", "Key": {"id": _s("m4")}}},
        {"Update": {"TableName": "sessions", "Key": {"id": _s("open-pair")},
                    "UpdateExpression": "ADD numWaiting :minusOne", "ConditionExpression": "numWaiting > :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}, ":minusOne": {"N": "-1"}}}}])
    s2 = c.get_item(TableName="sessions", Key={"id": _s("s2")})["Item"]
    assert s2["members"] == {"L": [_member("m5")]}
    assert c.get_item(TableName="sessions", Key={"id": _s("open-pair")})["Item"]["numWaiting"] == {"N": "1"}
    c.transact_write_items(TransactItems=[
        {"Delete": {"TableName": "sessions", "Key": {"id": _s("s2")},
                    "ConditionExpression": "\n  size(members) = :one\n  AND members[0].memberId = :memberId\n",
                    "ExpressionAttributeValues": {":memberId": _s("m5"), ":one": {"N": "1"}}}},
        {"Delete": {"TableName": "sessions", "Key": {"id": _s("open-pair")},
                    "ConditionExpression": "numWaiting = :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}}])
    assert "Item" not in c.get_item(TableName="sessions", Key={"id": _s("s2")})

    # Ending a session: its records go in one batch over two tables.
    ended = c.delete_item(TableName="sessions", Key={"id": _s("s1")}, ReturnValues="ALL_OLD")["Attributes"]
    c.batch_write_item(RequestItems={
        "members": [{"DeleteRequest": {"Key": {"id": m["M"]["memberId"]}}} for m in ended["members"]["L"]],
        "connections": [{"DeleteRequest": {"Key": {"id": m["M"]["connId"]}}}
                        for m in ended["members"]["L"] if "connId" in m["M"]]})
    assert c.scan(TableName="members")["Items"] == [] and c.scan(TableName="connections")["Items"] == []
    assert all(status == 200 or body["__type"].endswith(("#TransactionCanceledException",
                                                          "#ConditionalCheckFailedException"))
               for status, body in answers)


# ---- the HTTP server (moto_server.serve): connections kept open, werkzeug's 500 kept ---------------

def _raw_post(connection, headers: dict[str, str], body: str):
    connection.request("POST", "/", body=body, headers={"Content-Type": "application/x-amz-json-1.0", **headers})
    response = connection.getresponse()
    return response, response.read()


def test_connections_stay_open_and_an_exception_out_of_moto_is_werkzeugs_500(local_dynamodb, table):
    import http.client

    connection = http.client.HTTPConnection(local_dynamodb.host, local_dynamodb.port, timeout=10)
    auth = {"Authorization": "AWS4-HMAC-SHA256 Credential=local/20261203/us-east-1/dynamodb/aws4_request, "
                             "SignedHeaders=host, Signature=x"}
    get = {**auth, "X-Amz-Target": "DynamoDB_20120810.GetItem"}
    first, _ = _raw_post(connection, get, json.dumps({"TableName": "fidelity", "Key": {"id": {"S": "a"}}}))
    sock = connection.sock
    second, _ = _raw_post(connection, get, json.dumps({"TableName": "fidelity", "Key": {"id": {"S": "a"}}}))
    assert (first.status, second.status) == (200, 200)
    assert first.getheader("Connection") is None and connection.sock is sock  # one connection, both answers
    # No X-Amz-Target: moto's routing raises; the answer is the page werkzeug's server gave, on a new connection.
    failed, body = _raw_post(http.client.HTTPConnection(local_dynamodb.host, local_dynamodb.port, timeout=10),
                             auth, "{}")
    assert failed.status == 500 and failed.getheader("Content-Type") == "text/html; charset=utf-8"
    assert b"<title>500 Internal Server Error</title>" in body

"""Reading a local DynamoDB stream.

Every poll opens a fresh iterator after the last sequence number seen: moto's transactions
replace the stream object, after which an iterator that was already open sees nothing more.
"""

from __future__ import annotations

from typing import Any


class StreamReader:
    def __init__(self, streams_client: Any, stream_arn: str) -> None:
        self.client = streams_client
        self.stream_arn = stream_arn
        self.last_seen: dict[str, str] = {}

    def _iterator(self, shard_id: str) -> str:
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard_id}
        if shard_id in self.last_seen:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=self.last_seen[shard_id])
        else:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        return self.client.get_shard_iterator(**kwargs)["ShardIterator"]

    def poll(self, limit: int = 1000) -> list[dict[str, Any]]:
        """New records of every shard, in order within each shard."""
        records: list[dict[str, Any]] = []
        shards = self.client.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        for shard in shards:
            shard_id = shard["ShardId"]
            batch = self.client.get_records(ShardIterator=self._iterator(shard_id), Limit=limit)["Records"]
            if batch:
                self.last_seen[shard_id] = batch[-1]["dynamodb"]["SequenceNumber"]
                records.extend(batch)
        return records

    def skip_to_end(self) -> None:
        while self.poll():
            pass

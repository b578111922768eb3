"""Reading a local DynamoDB stream, in order per shard.

Shard iterators are chained (one GetRecords call per poll), as Lambda's poller does. moto, on its
own, strands an open iterator when a transaction is cancelled (it swaps the table for a copy);
our local DynamoDB does not, but to stay correct against a bare moto (``--dynamodb-endpoint``),
an iterator that has returned nothing for ``refresh_after`` polls is replaced by a fresh one
after the last sequence number seen.
"""

from __future__ import annotations

from typing import Any


class StreamReader:
    def __init__(self, streams_client: Any, stream_arn: str, refresh_after: int = 20) -> None:
        self.client = streams_client
        self.stream_arn = stream_arn
        self.refresh_after = refresh_after
        self.last_seen: dict[str, str] = {}
        self._iterators: dict[str, str | None] = {}
        self._empty_polls: dict[str, int] = {}
        self._shards: list[str] | None = None

    def _fresh_iterator(self, shard_id: str) -> str:
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard_id}
        if shard_id in self.last_seen:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=self.last_seen[shard_id])
        else:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        return self.client.get_shard_iterator(**kwargs)["ShardIterator"]

    def shards(self) -> list[str]:
        if self._shards is None:
            description = self.client.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]
            self._shards = [shard["ShardId"] for shard in description["Shards"]]
        return self._shards

    def poll(self, limit: int = 1000) -> list[dict[str, Any]]:
        """New records of every shard, in order within each shard."""
        records: list[dict[str, Any]] = []
        for shard_id in self.shards():
            iterator = self._iterators.get(shard_id)
            if iterator is None or self._empty_polls.get(shard_id, 0) >= self.refresh_after:
                iterator = self._fresh_iterator(shard_id)
                self._empty_polls[shard_id] = 0
            response = self.client.get_records(ShardIterator=iterator, Limit=limit)
            self._iterators[shard_id] = response.get("NextShardIterator")
            batch = response["Records"]
            if batch:
                self.last_seen[shard_id] = batch[-1]["dynamodb"]["SequenceNumber"]
                self._empty_polls[shard_id] = 0
                records.extend(batch)
            else:
                self._empty_polls[shard_id] = self._empty_polls.get(shard_id, 0) + 1
        return records

    def skip_to_end(self) -> None:
        while self.poll():
            pass

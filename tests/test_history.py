"""The history's write side: lines are json's own (compact) wherever orjson would write them differently."""

import json
import threading

import pytest

from harness.history import History, HistoryFile, encode_line, read_history


@pytest.mark.parametrize("record", [
    {"t": 1, "mono": 12.345678, "op": "recv", "msg": {"type": "MESSAGE", "payload": "{\"pid\":\"a-1\"}", "time": 5}},
    {"msg": {"memberPresence": [True, None]}},  # a null: orjson would write NaN as null too
    {"msg": {"time": float("nan"), "x": float("inf")}},
    {"msg": {"body": "h\u00e9llo \u2603"}},  # json escapes non-ASCII
    {"msg": {"time": 2**70}},  # beyond 64 bits: orjson refuses
    {"msg": {"body": "\ud800"}},  # a lone surrogate: orjson refuses
    {"msg": {1: "int key"}},
])
def test_a_line_is_what_json_dumps_writes(record):
    assert encode_line(record) == json.dumps(record, separators=(",", ":")).encode()


def test_records_from_many_threads_are_all_drained_once_in_order_per_thread(tmp_path):
    history = History()

    def client(name):
        for n in range(2000):
            history.record(name, 1, "send", "invoke", seq=n, pid=None)

    threads = [threading.Thread(target=client, args=(f"c{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    out = HistoryFile(tmp_path / "history.jsonl")
    while any(thread.is_alive() for thread in threads):
        out.write(history.drain())
    out.write(history.drain())
    out.close()
    records = read_history(tmp_path / "history.jsonl")
    assert len(records) == out.count == 8000 and all("pid" not in r for r in records)
    for i in range(4):
        assert [r["seq"] for r in records if r["client"] == f"c{i}"] == list(range(2000))

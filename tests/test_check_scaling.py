"""Checking that scales: the fault index answers as reading every fault would, while reading few;
the history reader reads what the standard library's parser reads; copies of a run for the report
benchmark keep every identity apart (benchmarks/replicate_run.py)."""

from __future__ import annotations

import json
import random

from benchmarks.replicate_run import replicate
from harness.checkers.model import GRACE_S, SLOWING, FaultIndex, Run, fault_span, overlaps
from harness.history import read_history


def _stack_fault(t, kind="TransactionConflict", seam="store", client=None, **params):
    target = {"request_id": f"req-{t}"} | ({"client": client} if client else {})
    return {"t": t, "seam": seam, "fault": kind, "target": target, "params": params}


def test_the_fault_index_finds_what_reading_every_fault_finds_and_reads_few():
    rng = random.Random(7)
    faults = [_stack_fault(rng.randrange(0, 3_600_000), client=rng.choice([None, "a", "b"])) for _ in range(5000)]
    faults += [_stack_fault(1_000_000, "store_outage", "process", seconds=4),
                _stack_fault(2_000_000, "kill", "process", seconds=0.5),  # exact span: no grace
                _stack_fault(10, "latency", "process", seconds=3600),  # longer than LONG_MS: always a candidate
                _stack_fault(1_500_000, "stream_stall", "process", seconds=3)]
    rng.shuffle(faults)
    run = Run(history=[], faults=faults)
    grace = GRACE_S * 1000
    for _ in range(300):
        start = rng.randrange(-10_000, 3_700_000)
        end = start + rng.choice([0, 1, 999, 5000, 60_000, -3000])
        clients = rng.choice([(), ("a",), ("a", "b")])
        slowing = rng.random() < 0.5
        every = [f for f in run.stack_faults if overlaps(f, start, end, grace, grace)
                 and (f.get("target") or {}).get("client") in (None, *clients)
                 and (slowing or f["fault"] not in SLOWING)]
        assert run.stack_faults_near(start, end, *clients, slowing=slowing) == every
        assert len(run.stack_index.positions(start - grace, end + grace)) < 500  # of 5004 faults
    assert len(run.stack_index.positions(0, float("inf"))) == len(faults)  # an open-ended question reads them all


def test_the_fault_index_keeps_the_order_given_and_files_a_span_under_every_second_it_covers():
    faults = [{"t": 5000, "fault": "pause", "params": {"seconds": 3}}, {"t": 1000, "fault": "drop"},
              {"t": 7500, "fault": "drop"}]
    index = FaultIndex(faults)
    assert index.within(6000, 6000) == [faults[0]]
    assert index.within(0, 10_000) == faults
    assert index.within(8000, 7000) == [faults[0], faults[2]]  # [lo, hi] given either way round
    # a few more than meet [lo, hi] may come back (the same second's): callers apply their exact condition
    assert index.within(7600, 9000) == [faults[0], faults[2]]
    assert [f for f in faults if f["t"] + 1000 * fault_span(f) >= 7600 and f["t"] <= 9000] == [faults[0]]


def test_the_history_reader_reads_what_the_standard_parser_reads(tmp_path):
    lines = ['{"t": 1, "client": "a", "op": "recv", "phase": "ok", "msg": {"type": "MESSAGE", "payload": "p"}}',
             '{"t": NaN, "client": "a", "op": "x", "phase": "ok"}',  # not JSON to orjson, a float to json
             '{"s": "\\ud800"}', "", "[1, 2]"]
    path = tmp_path / "history.jsonl"
    path.write_text("\n".join([*lines, '{"torn": '] + [""]))
    errors = []
    records = read_history(path, lambda number, line: errors.append(number))
    assert json.dumps(records) == json.dumps([json.loads(line) for line in lines if line])
    assert errors == [6]


T = 1_796_290_000_000  # wall-clock ms, as runs write them


def _write_run(folder):
    history = [
        {"t": T, "mono": 1.0, "client": "P-1", "conn": 1, "op": "connect", "phase": "invoke",
         "msg": {"sessionType": "game", "targetNumMembers": "2"}},
        {"t": T + 100, "mono": 1.1, "client": "P-1", "conn": 1, "op": "recv", "phase": "ok", "member": "M_a-1",
         "session": "S-x", "msg": {"type": "SESSION_CONNECT", "sessionId": "S-x", "sessionType": "game"}},
        {"t": T + 200, "mono": 1.2, "client": "P-1", "conn": 1, "op": "send", "phase": "invoke", "pid": "P-1-0",
         "session": "S-x", "msg": {"action": "SEND_MESSAGE", "payload": json.dumps({"pid": "P-1-0", "ts": T + 200})}},
        {"t": T + 10_000, "mono": 11.0, "client": "P-12", "conn": 2, "op": "close", "phase": "invoke"},
    ]
    faults = [
        {"t": T + 300, "seam": "wire", "fault": "drop", "target": {"conn": "/?client=P-1&conn=1#0",
                                                                   "pids": ["P-1-0"]}},
        {"t": T + 5_000, "seam": "process", "fault": "kill", "target": {"scope": "stack"}, "params": {}},
        {"t": T + 1_000, "seam": "invocation", "fault": "error_after", "target": {
            "request_id": "36bc5822-bd85-4357-9367-556f071b00b4", "event": ["stream", "1100000000017454423058"]}},
    ]
    (folder / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    (folder / "faults.jsonl").write_text("".join(json.dumps(f) + "\n" for f in faults))
    (folder / "run.json").write_text(json.dumps({"seed": 3, "command": ["locust", "-f", "scenarios/relay.py"],
                                                 "ended_t": T + 10_000,
                                                 "stack_restarts": [{"killed_t": T + 5_000, "ready_t": T + 6_000}]}))
    return history


def test_copies_of_a_run_keep_every_identity_apart_and_overlap_in_time(tmp_path):
    source, dest = tmp_path / "source", tmp_path / "copies"
    source.mkdir()
    dest.mkdir()
    history = _write_run(source)
    assert replicate(source, dest, records=12, concurrent=2) == 12  # three copies of four records
    copies = read_history(dest / "history.jsonl")
    assert copies[:4] == history  # copy 0 is the run as it was
    shift = 10_000 // 2  # the run's span / copies overlapping
    second = copies[4:8]
    assert [r["client"] for r in second] == ["P-1_r1"] * 3 + ["P-12_r1"]
    assert (second[1]["member"], second[1]["session"], second[1]["msg"]["sessionId"], second[1]["msg"]["sessionType"]
            ) == ("M_a-1_r1", "S-x_r1", "S-x_r1", "game_r1")
    assert second[2]["pid"] == "P-1_r1-0" and json.loads(second[2]["msg"]["payload"]) == {
        "pid": "P-1_r1-0", "ts": T + 200 + shift}
    assert [r["t"] - o["t"] for r, o in zip(second, history, strict=True)] == [shift] * 4
    assert [r["mono"] for r in second] == [r["mono"] for r in history]
    wire, kill, invocation = read_history(dest / "faults.jsonl")[6:9]
    assert wire["target"] == {"conn": "/?client=P-1_r2&conn=1#0", "pids": ["P-1_r2-0"]}
    assert invocation["target"]["request_id"] == "36bc5822-bd85-4357-9367-556f071b00b4_r2"
    assert invocation["target"]["event"][1] == str(1100000000017454423058 + 2 * 10**12)
    info = json.loads((dest / "run.json").read_text())
    assert info["ended_t"] == T + 10_000 + 2 * shift and info["command"] == ["locust", "-f", "scenarios/relay.py"]
    assert [r["killed_t"] for r in info["stack_restarts"]] == [T + 5_000 + k * shift for k in range(3)]
    assert kill["t"] == info["stack_restarts"][2]["killed_t"]

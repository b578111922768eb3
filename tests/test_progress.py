"""The live line (harness/progress.py): its text, its cadence on a terminal and in a CI log, the
fault count and the provisional check, without a run (the smoke chaos run in tests/test_chaos.py
shows it for real)."""

from __future__ import annotations

import io
import json

from harness.faults.profile import load_profile
from harness.progress import (
    ERASE,
    FaultCount,
    JsonlTail,
    LiveLine,
    ProvisionalCheck,
    Snapshot,
    faults_end_s,
    format_line,
)
from tests.test_checkers import joined, start

NOW_S = 1_000_000.0  # the provisional check's wall clock in these tests, seconds


def test_the_line_shows_phase_time_users_violations_so_far_and_faults_per_seam():
    snapshot = Snapshot("load", 12.4, 40, 20, {"process": 2, "wire": 20, "store": 6}, 0)
    assert format_line(snapshot) == ("relay-harness: load 12/40 s | 20 users | violations so far 0 (provisional) | "
                                     "faults 28: wire 20, store 6, process 2")
    assert format_line(Snapshot("starting stack", 3.2)) == ("relay-harness: starting stack 3 s | "
                                                            "violations: not judged yet | faults 0")
    final = Snapshot("report", 58, faults={"wire": 3}, violations=0, verdict="pass", unconfirmed=2)
    assert format_line(final) == ("relay-harness: report 58 s | verdict pass, 0 violations (2 provisional "
                                  "violation(s) not confirmed by the whole run: the report is the verdict) | "
                                  "faults 3: wire 3")


def test_not_a_terminal_one_plain_line_every_10_s_and_at_each_new_phase():
    out = io.StringIO()
    line = LiveLine(out, tty=False)
    drawn = [now for now, phase in [(0, "load"), (5, "load"), (9.9, "load"), (10, "load"), (12, "faults quiet"),
                                    (15, "faults quiet"), (22, "faults quiet")]
             if line.show(Snapshot(phase, now, 40, 20, {"wire": int(now)}), now)]
    assert drawn == [0, 10, 12, 22]
    line.finish(Snapshot("report", 30, verdict="pass", violations=0))
    lines = out.getvalue().split("\n")
    assert len(lines) == 6 and lines[-1] == "" and lines[1].startswith("relay-harness: load 10/40 s | 20 users")
    assert all(ch.isprintable() for text in lines for ch in text)


def test_on_a_terminal_one_line_rewritten_in_place_and_erased_by_other_output():
    out = io.StringIO()
    line = LiveLine(out, tty=True)
    assert [line.show(Snapshot("load", now, 40, 2), now) for now in (0, 0.5, 1.0)] == [True, False, True]
    assert out.getvalue().count(ERASE) == 2 and "\n" not in out.getvalue() and line.drawn
    line.wrap(out).write("a log line\n")  # e.g. Locust's log through its handler
    assert out.getvalue().endswith("faults 0" + ERASE + "a log line\n") and not line.drawn
    line.finish(Snapshot("report", 3, verdict="pass", violations=0))
    assert out.getvalue().endswith("\n") and not line.drawn


def test_faults_go_quiet_after_the_last_window_unless_one_never_ends():
    assert faults_end_s(load_profile("smoke")) == 25  # windows end at 25; the last process fault: kill at 24
    assert faults_end_s(load_profile("lossy")) is None  # its faults go on until the run's last second


def test_fault_count_and_tail_read_only_whole_lines(tmp_path):
    path = tmp_path / "faults.jsonl"
    count = FaultCount(path)
    assert count.update() == {}
    path.write_text('{"seam": "wire"}\n{"seam": "store"}\n{"seam": "wi')
    assert count.update() == {"wire": 1, "store": 1}
    with open(path, "a") as more:
        more.write('re"}\n')
    assert count.update() == {"wire": 2, "store": 1}
    assert JsonlTail(tmp_path / "absent.jsonl").read() == []


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_provisional_check_counts_settled_safety_violations_and_stays_quiet_on_a_good_history(tmp_path):
    old = (NOW_S - 60) * 1000
    good = joined("a", "S", 0, old) + joined("b", "S", 1, old + 20)
    _write(tmp_path / "history.jsonl", good)
    check = ProvisionalCheck(tmp_path, dict, clock=lambda: NOW_S)
    check.run_pass()
    assert (check.violations, check.next_at > 0, check.running) == (0, True, False)
    # A second SESSION_CONNECT on one socket (no duplicate fault to explain it), but only 2 s old:
    # not judged yet (a fault logged a little later could explain it).
    with open(tmp_path / "history.jsonl", "a") as more:
        more.write(json.dumps(start("a", "S", 0, (NOW_S - 2) * 1000)) + "\n")
    check.run_pass()
    assert check.violations == 0
    check._clock = lambda: NOW_S + 20
    check.run_pass()
    assert (check.violations, check.by_check["notifications"]) == (1, 1)


def test_provisional_check_stops_past_its_record_limit(tmp_path):
    _write(tmp_path / "history.jsonl", joined("a", "S", 0, 0) + joined("b", "S", 1, 20))
    check = ProvisionalCheck(tmp_path, dict, max_records=5, clock=lambda: NOW_S)
    check.run_pass()
    assert (check.violations, check.stopped, check.records) == (None, True, [])
    assert check.note == "judged at the end (history over 5 records)" and not check.due(check.next_at + 1)

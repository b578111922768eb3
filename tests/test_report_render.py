"""The report writers (report.html, summary.md, junit.xml), the charts' time axis and the files' modes,
from results.json-shaped dicts: verdicts and check statuses, cut lists, fault bands, CPU warnings."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.checkers.model import Run
from harness.report.build import write_atomic
from harness.report.charts import BAND_LABEL, TICK_LABEL, line_chart
from harness.report.html import render_html
from harness.report.junit import render_junit
from harness.report.markdown import render_summary
from harness.report.results import fault_spans, replay_command, time_series

T0 = 1_700_000_000_000


def check(name: str, status: str = "pass", **fields) -> dict:
    return {"name": name, "title": name.capitalize(), "weight": 1, "status": status, "skipped": None, "checked": 3,
            "notes": [], "violations": [], "explained": [], "explained_count": 0, **fields}


def finding(message: str, **fields) -> dict:
    return {"invariant": "every send reaches every member", "message": message,
            "excerpt": [{"t": T0, "client": "a", "op": "send"}], "explained_by": [], **fields}


def results(**fields) -> dict:
    """A results.json of the agreed shape (interfaces.md), overridden by ``fields``."""
    return {"schema": "relay-harness/results/v1", "verdict": "pass", "verdict_reason": "", "partial": False,
            "score": 100.0, "seed": 7, "profile": "lossy", "rules": "reference",
            "replay": "locust -f scenarios/relay.py --seed 7",
            "counts": {"operations": 40, "clients": 2, "faults": 0, "violations": 0, "explained": 0},
            "checks": [check("delivery")], "series": {"t": [0.0, 1.0], "deliveries_per_s": [3.0, 4.0],
                                                      "p50_ms": [5.0, 6.0], "p95_ms": [7.0, 8.0], "p99_ms": [9.0, 9.0]},
            "faults": [], "stats": None, "resources": None, **fields}


def junit_cases(page: str) -> dict[str, ET.Element]:
    return {case.get("name"): case for case in ET.fromstring(page.encode()).iter("testcase")}


def junit_properties(page: str) -> dict[str, str]:
    return {prop.get("name"): prop.get("value") for prop in ET.fromstring(page.encode()).iter("property")}


def test_an_inconclusive_verdict_is_neither_pass_nor_fail_and_says_why():
    reason = "the relay was never exercised: 0 of 36 connects succeeded"
    inconclusive = results(verdict="inconclusive", verdict_reason=reason, score=None,
                           checks=[check("delivery", "not exercised", checked=0)])
    page = render_html(inconclusive)
    assert 'class="verdict inconclusive">INCONCLUSIVE<' in page and reason in page
    assert ".inconclusive{background:" in page
    summary = render_summary(inconclusive)
    assert summary.startswith("## Relay reliability: INCONCLUSIVE") and reason in summary and "FAIL" not in summary
    suite = ET.fromstring(render_junit(inconclusive).encode())
    verdict = junit_cases(render_junit(inconclusive))["verdict"]
    assert verdict.find("error").get("message") == f"inconclusive: {reason}"
    assert suite.get("errors") == "1" and suite.get("tests") == "2"
    # a pass or a fail has one test case per checker, no verdict case
    assert list(junit_cases(render_junit(results()))) == ["Delivery"]


def test_not_exercised_and_crashed_checks_are_shown_as_such():
    error = "TypeError: '>' not supported between instances of 'str' and 'int'"
    run = results(checks=[check("pinned", "not exercised", checked=0), check("health", "error", checked=0, error=error),
                          check("delivery")])
    page = render_html(run)
    assert "<td class='not-exercised'>not exercised</td>" in page and "checked nothing" in page
    assert "<td class='error'>error</td>" in page and "the checker failed: TypeError: &#x27;&gt;&#x27;" in page
    summary = render_summary(run)
    assert "| Pinned | not exercised | 0 | 0 | checked nothing |" in summary and error in summary
    cases = junit_cases(render_junit(run))
    assert cases["Pinned"].find("skipped").get("message") == "checked nothing"
    crashed = cases["Health"].find("error")
    assert crashed.get("type") == "TypeError" and crashed.get("message") == error and crashed.text == error
    suite = ET.fromstring(render_junit(run).encode())
    assert (suite.get("errors"), suite.get("skipped"), suite.get("failures")) == ("1", "1", "0")


def test_a_cut_list_says_how_much_of_it_is_shown():
    explained = [finding(f"m-{i} lost", explained_by=[{"fault": "drop"}] * 5, explained_by_count=9)
                 for i in range(50)]
    violations = [finding(f"v-{i} never arrived", excerpt=[{"t": T0 + i}] * 12, excerpt_count=20) for i in range(30)]
    run = results(verdict="fail", checks=[check("delivery", "fail", violations=violations, explained=explained,
                                                explained_count=101)])
    page = render_html(run)
    assert "Delivery: 101 explained by injected faults or the local stack's lag (showing 10 of 101)" in page
    assert "Delivery: 30 violation(s) (showing 25 of 30)" in page
    assert "the history that shows it (showing 12 of 20)" in page and "Explained by (showing 5 of 9)" in page
    assert page.count("<details>") == 35
    assert "Violations (showing 10 of 30):" in render_summary(run)
    few = render_html(results(checks=[check("delivery", explained=[finding("m lost")] * 3, explained_count=3)]))
    assert "3 explained by injected faults or the local stack's lag</h3>" in few and "showing" not in few


def _record(t: float, op: str = "heartbeat", **fields) -> dict:
    return {"t": t, "mono": t / 1000, "client": "a", "conn": 1, "op": op, "phase": "ok", **fields}


def _delivery(t: float) -> dict:
    payload = json.dumps({"pid": f"p{t}", "ts": t - 20})
    return _record(t, "recv", msg={"type": "MESSAGE", "payload": payload})


def _fault(t: float, rule: str, kind: str = "drop", **params) -> dict:
    return {"t": t, "seam": "wire", "fault": kind, "target": {"conn": "/?client=a#1"}, "params": params,
            "rule": {"id": rule, "seq": 1}}


def test_only_whole_seconds_are_plotted_and_teardown_is_left_out():
    history = [_record(T0)] + [_delivery(T0 + ms) for ms in range(100, 3500, 100)] + [_record(T0 + 3500)]
    series = time_series(Run(history=history))
    assert series["t"] == [0.0, 1.0, 2.0] and series["deliveries_per_s"] == [9.0, 10.0, 10.0]
    assert series["p50_ms"] == [20.0, 20.0, 20.0]
    # records after the load stopped (run.json ended_t) are teardown: not on the axis
    teardown = history + [_record(T0 + 6200, "close")]
    assert time_series(Run(history=teardown, info={"ended_t": T0 + 2600}))["t"] == [0.0, 1.0]
    assert time_series(Run(history=[_record(T0), _record(T0 + 400)]))["t"] == []


def test_fault_spans_end_with_the_faults_and_never_outlive_the_history():
    history = [_record(T0), _record(T0 + 10_000)]
    open_window = [_fault(T0 + ms, "lose-messages") for ms in range(3000, 6001, 500)]
    faults = open_window + [_fault(T0 + 8000, "stall", "pause", seconds=30), _fault(T0 + 12_000, "lose-messages"),
                            _fault(T0 + 4200, "kill-one", "reset")]
    spans = fault_spans(Run(history=history, faults=faults, info={"ended_t": T0 + 9000}))
    assert [(s["rule"], s["start_s"], s["end_s"], s["count"]) for s in spans] == [
        ("lose-messages", 3.0, 6.0, 7), ("kill-one", 4.2, 4.2, 1), ("stall", 8.0, 9.0, 1)]


def test_fault_marks_have_a_legend_and_the_note_matches_the_run():
    plain = line_chart("t", "ms", {"p50": [(0.5, 1.0), (1.5, 2.0)]}, 2.0)
    assert BAND_LABEL not in plain and TICK_LABEL not in plain
    marked = line_chart("t", "ms", {"p50": [(0.5, 1.0)]}, 2.0, bands=[(0.2, 1.2, "w")], ticks=[(1.5, "i")])
    assert marked.count(BAND_LABEL) == 1 and marked.count(TICK_LABEL) == 1
    no_faults = render_html(results())
    assert "No fault was injected in this run." in no_faults and "fault-band" not in no_faults.split("</style>")[1]
    spans = [{"start_s": 0.2, "end_s": 1.4, "fault": "drop", "rule": "lose", "count": 3},
             {"start_s": 1.5, "end_s": 1.5, "fault": "reset", "rule": "kill", "count": 1}]
    page = render_html(results(faults=spans, counts={**results()["counts"], "faults": 4}))
    assert "No fault was injected" not in page and "the 2 stretch(es) of injected faults" in page
    assert page.count(TICK_LABEL) == 2 and page.count(BAND_LABEL) == 2 and "kill: reset at 1.5 s" in page


def test_a_short_of_cpu_run_says_so_in_the_page_and_the_summary():
    resources = {"load_generator": {"peak_cpu_percent": 97.4, "warned": True}, "stack": {"peak_cpu_percent": 41.0},
                 "short_of_cpu": ["load generator"]}
    short = results(resources=resources)
    line = "Short of CPU: the load generator (peak 97% CPU)."
    assert line in render_html(short) and line in render_summary(short)
    assert junit_properties(render_junit(short))["short_of_cpu"].startswith(line)
    for calm in (results(), results(resources={"short_of_cpu": []}), {k: v for k, v in results().items()
                                                                      if k != "resources"}):
        assert "Short of CPU" not in render_html(calm) + render_summary(calm)


def test_a_saturated_machine_and_a_stack_behind_its_load_are_said_in_the_page_and_the_summary():
    saturated = results(resources={"machine": {"cores": 2, "saturated_share": 0.81}, "short_of_cpu": ["machine"]},
                        lag={"spans": 1, "seconds": 104.2, "max_queued_ms": 21600, "invocations": 13481},
                        counts={**results()["counts"], "behind": 4323})
    line = "Short of CPU: the machine (all 2 cores at least 95% busy for 81% of the run)."
    behind = ("The local stack fell behind its load: 13481 invocation(s) waited up to 21.6 s for a free function "
              "instance (Lambda would have started another), over 104 s in 1 span(s)")
    for page in (render_html(saturated), render_summary(saturated)):
        assert line in page and behind in page and "4323 not judged (the local stack fell behind)" in page
    calm = results(lag={"spans": 0, "seconds": 0, "max_queued_ms": 0, "invocations": 0})
    assert "fell behind" not in render_html(calm) + render_summary(calm)


def test_junit_properties_leave_out_what_the_run_does_not_have():
    page = render_junit(results(profile=None, score=None, rules=None))
    properties = junit_properties(page)
    assert "None" not in page and "profile" not in properties and "score" not in properties
    assert properties["seed"] == "7" and properties["verdict"] == "pass"
    assert junit_properties(render_junit(results(score=87.456)))["score"] == "87.5"


def test_an_older_results_json_still_renders():
    old = results()
    for key in ("verdict_reason", "resources", "rules"):
        del old[key]
    old["verdict"] = "fail"
    old["checks"] = [check("delivery", "fail", violations=[finding("a-0 never arrived")]), check("cleanup", "skipped",
                                                                                                skipped="no wait")]
    assert "a-0 never arrived" in render_html(old) and "## Relay reliability: FAIL" in render_summary(old)
    assert junit_cases(render_junit(old))["Cleanup"].find("skipped").get("message") == "no wait"


def test_the_replay_command_does_not_write_into_the_replayed_run_folder():
    command = ["/x/locust/__main__.py", "-f", "scenarios/relay.py", "--run-dir", "reports/r1", "-t", "20s",
               "--run-dir=reports/r2"]
    assert replay_command({"command": command, "seed": 7}) == "locust -f scenarios/relay.py -t 20s --seed 7"
    assert replay_command({"command": ["locust", "--seed=3"], "seed": 3}) == "locust --seed=3"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_report_files_get_the_mode_of_any_new_file(tmp_path: Path, umask: int):
    previous = os.umask(umask)
    try:
        write_atomic(tmp_path / "report.html", "<p>x</p>")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(previous)
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    target = tmp_path / "summary.md"
    write_atomic(target, "old")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(target, "half \ud800 written")
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["summary.md"]


def test_a_fail_in_a_strained_run_ends_with_a_hint_that_the_load_may_be_part_of_it():
    from harness.report.build import verdict_line

    failed = {**results(), "verdict": "fail", "verdict_reason": "1 violation(s) in Client-visible errors",
              "score": 81.8, "partial": False}
    assert verdict_line(failed) == "FAIL: 1 violation(s) in Client-visible errors; score 81.8%"
    strained = {**failed, "resources": {"short_of_cpu": ["machine"]}}
    assert verdict_line(strained).endswith("; the run was short of CPU (summary.md says where): rerun with fewer "
                                           "users (-u) to tell the relay's faults from the load's")
    behind = {**failed, "lag": {"spans": 1}}
    assert "short of CPU" in verdict_line(behind)
    assert "short of CPU" not in verdict_line({**strained, "verdict": "pass", "verdict_reason": "ok"})

"""Reports from run folders: the files, their verdict and exit status, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

from harness.checkers import CHECKERS
from harness.report.build import build_report
from tests.test_checkers import got, pair, sent


def _run_folder(tmp_path, history, faults=(), **info):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(record) + "\n" for record in history))
    (tmp_path / "faults.jsonl").write_text("".join(json.dumps(f) + "\n" for f in faults))
    (tmp_path / "run.json").write_text(json.dumps({"seed": 7, "profile": "lossy",
                                                   "command": ["locust", "-f", "scenarios/relay.py"], **info}))
    return tmp_path


def _lossy_history():
    return pair() + sent("a", "a-0", 1000) + [got("a", "a-0", 1050)] + sent("a", "a-1", 2000) + [
        got("a", "a-1", 2050), got("b", "a-1", 2050), {"t": 9000, "mono": 9.0, "client": "a", "conn": 1,
                                                       "op": "heartbeat", "phase": "ok"}]


def test_a_violation_fails_the_report_in_every_format(tmp_path):
    run_dir = _run_folder(tmp_path / "run", _lossy_history())
    status, results = build_report(run_dir)
    assert status == 1 and results["verdict"] == "fail"
    assert results["schema"] == "relay-harness/results/v1" and results["seed"] == 7
    assert results["replay"] == "locust -f scenarios/relay.py --seed 7"
    assert 0 < results["score"] < 100
    on_disk = json.loads((run_dir / "results.json").read_text())
    [delivery] = [c for c in on_disk["checks"] if c["name"] == "delivery"]
    assert delivery["status"] == "fail" and delivery["violations"][0]["message"] == "a-0 from a never reached b"
    suite = ET.parse(run_dir / "junit.xml").getroot()
    assert suite.get("tests") == str(len(CHECKERS)) and suite.get("failures") == "1"
    assert [case.get("name") for case in suite if case.find("failure") is not None] == ["Message delivery"]
    summary = (run_dir / "summary.md").read_text()
    assert "FAIL" in summary and "a-0 from a never reached b" in summary and len(summary.splitlines()) < 40
    page = (run_dir / "report.html").read_text()
    assert "a-0 from a never reached b" in page and "&quot;pid&quot;:&quot;a-0&quot;" in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert not list(run_dir.glob("*.tmp"))


def test_explained_losses_pass_and_faults_are_shaded(tmp_path):
    target = {"conn": "/?client=b#0", "direction": "downstream", "frame": 3, "types": ["MESSAGE"], "pids": ["a-0"]}
    drop = {"t": 1040, "seam": "wire", "fault": "drop", "target": target,
            "params": {}, "rule": {"id": "lose-messages", "seq": ["/?client=b#0", "downstream", 3]}}
    run_dir = _run_folder(tmp_path / "run", _lossy_history(), faults=[drop])
    status, results = build_report(run_dir, partial=True)
    assert status == 0 and results["verdict"] == "pass" and results["partial"] is True
    assert results["counts"]["explained"] == 1 and results["faults"][0]["rule"] == "lose-messages"
    page = (run_dir / "report.html").read_text()
    assert "Partial: the run was interrupted" in page and "fault-tick" in page


def test_command_line_exit_statuses(tmp_path):
    failing = _run_folder(tmp_path / "failing", _lossy_history())
    passing = _run_folder(tmp_path / "passing", _lossy_history() + [got("b", "a-0", 1060)])
    never_relayed = _run_folder(tmp_path / "idle", pair())
    for run_dir, status in ((failing, 1), (passing, 0), (never_relayed, 3)):
        result = subprocess.run([sys.executable, "-m", "harness", "report", str(run_dir)], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == status, result.stderr
        assert str(run_dir / "report.html") in result.stdout
    result = subprocess.run([sys.executable, "-m", "harness", "report", str(tmp_path / "empty")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "holds no history.jsonl" in result.stderr

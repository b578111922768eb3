"""`locust -f scenarios/relay.py` as users run it: headless, no host, one run folder per run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.history import read_history
from tests.planted import planted_relay

ROOT = Path(__file__).resolve().parent.parent


def _locust(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "locust", "-f", "scenarios/relay.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _check_run(run_dir: Path) -> list[dict]:
    history = read_history(run_dir / "history.jsonl")
    sent = {r["pid"] for r in history if r["op"] == "send" and r["phase"] == "invoke"}
    delivered = [r for r in history if r["op"] == "recv" and r.get("pid")]
    starts = [r for r in history if r["op"] == "recv" and r["msg"]["type"] == "SESSION_CONNECT"]
    assert starts, "no session was formed"
    assert len(delivered) > 20, "hardly any message was relayed"
    assert {r["pid"] for r in delivered} <= sent, "a delivery matches no send"
    for record in history:
        assert {"t", "mono", "client", "conn", "op", "phase"} <= record.keys()
    stats = json.loads((run_dir / "locust_stats.json").read_text())
    names = {e["name"] for e in stats["entries"] if e["type"] == "WS"}
    assert {"connect", "time to SESSION_CONNECT", "message fan-out", "heartbeat round trip"} <= names
    return history


def test_headless_run_with_no_host_brings_up_the_stack_and_writes_a_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    result = _locust("--headless", "-u", "20", "-r", "20", "-t", "10s", "--run-dir", str(run_dir),
                     "--heartbeat-interval", "2", "--seed", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "relay-harness: seed 5;" in result.stdout + result.stderr
    history = _check_run(run_dir)
    assert len({r["client"] for r in history}) >= 18
    info = json.loads((run_dir / "run.json").read_text())
    assert info["seed"] == 5 and info["stack"]["websocket"].startswith("ws://127.0.0.1:")
    assert (run_dir / "stack.log").stat().st_size > 0 and (run_dir / "faults.jsonl").exists()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["verdict"] == "pass", [v["message"] for c in results["checks"] for v in c["violations"]]
    assert results["score"] == 100.0 and "relay-harness: PASS" in result.stdout
    store = json.loads((run_dir / "store.json").read_text())
    assert set(store["tables"]) == {"SessionsTable", "ConnectionsTable", "MembersTable"}
    _render_in_chromium(run_dir / "report.html")


def _render_in_chromium(page: Path) -> None:
    """The report renders offline in headless Chromium with no console message; the screenshot is kept
    in reports/test-artifacts/ for people to look at."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium; .ci/run does it)")
    artifacts = ROOT / "reports" / "test-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "report.png"
    screenshot.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--window-size=1000,2000",
             f"--screenshot={screenshot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert screenshot.exists() and screenshot.stat().st_size > 10_000, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert console == []


def test_bad_options_get_one_line_errors():
    result = _locust("--headless", "--session-size", "many", "-t", "1s", timeout=60)
    assert result.returncode != 0
    assert "--session-size: session size 'many': write N or A-B (e.g. 2 or 2-4)" in result.stderr
    for args, expected in ((["--session-size", "1"],
                            "relay-harness: --session-size: session size '1' must be from 2 to 32"),
                           (["--chaos-profile", "no-such"], "relay-harness: chaos profile 'no-such' not found")):
        result = _locust("--headless", "-t", "1s", *args, timeout=60)
        assert result.returncode == 2
        errors = [line for line in result.stderr.splitlines() if line.startswith("relay-harness:")]
        assert len(errors) == 1 and errors[0].startswith(expected), result.stderr[-2000:]
        assert "Traceback" not in result.stderr


def test_a_relay_whose_stream_handler_is_not_designed_for_retries_fails_the_run(tmp_path):
    """The original's weakness put back (tests/fixtures/naive_relay): the run must exit 1 and say why."""
    run_dir = tmp_path / "run"
    template = planted_relay(tmp_path / "relay", "naive_relay/src", {"StreamFunction": "naive_stream.handler"})
    result = _locust("--headless", "-u", "12", "-r", "12", "-t", "7s", "--run-dir", str(run_dir),
                     "--heartbeat-interval", "1", "--template", str(template))
    assert result.returncode == 1, result.stderr[-3000:]
    checks = {c["name"]: c for c in json.loads((run_dir / "results.json").read_text())["checks"]}
    assert checks["notifications"]["status"] == "fail"
    assert {v["invariant"] for v in checks["notifications"]["violations"]} == {"exactly once per change"}
    assert any("2 times on one socket" in v["message"] for v in checks["notifications"]["violations"])
    assert "TimeoutError: Task timed out after sending" in checks["health"]["violations"][0]["message"]
    assert checks["membership"]["status"] == "pass" and checks["delivery"]["status"] == "pass"

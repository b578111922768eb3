"""The run's end as users meet it: Ctrl-C from a terminal (the whole process group), the web UI
ended with Ctrl-C, worker processes whose last records must reach the master, run.json's end keys,
and options that are refused before anything is created."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.history import ShippingLedger, read_history
from harness.local_target import CpuSampler, LocalTarget
from tests.stack_support import wait_until

ROOT = Path(__file__).resolve().parent.parent
LOCUST = [sys.executable, "-m", "locust", "-f", "scenarios/relay.py"]
REPORT_STATUSES = {0, 1, 3}  # pass, violations, inconclusive: the report's own statuses


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _history_size(run_dir: Path) -> int:
    path = run_dir / "history.jsonl"
    return path.stat().st_size if path.exists() else 0


@pytest.mark.parametrize("mode", ["headless", "web UI"])
def test_ctrl_c_to_the_process_group_writes_a_partial_report_and_no_traceback(tmp_path, mode):
    """A terminal's Ctrl-C signals Locust and everything it started; the stack must survive it long
    enough for the store scan, and the report is written from what was collected."""
    run_dir = tmp_path / "run"
    mode_args = ["--headless", "-t", "120s"] if mode == "headless" else [
        "--autostart", "--web-host", "127.0.0.1", "--web-port", str(_free_port())]
    process = subprocess.Popen([*LOCUST, *mode_args, "-u", "6", "-r", "6", "--run-dir", str(run_dir),
                                "--heartbeat-interval", "1", "--seed", "4"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_until(lambda: _history_size(run_dir) > 5000, timeout=90, what="the run to be under way")
    finally:
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=120)
    assert "Traceback" not in err, err[-3000:]
    assert process.returncode in REPORT_STATUSES, err[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["partial"] is True and (run_dir / "report.html").stat().st_size > 0
    assert "(partial)" in out
    store = json.loads((run_dir / "store.json").read_text())
    assert "unavailable" not in store and set(store["tables"]) == {"SessionsTable", "ConnectionsTable",
                                                                   "MembersTable"}
    info = json.loads((run_dir / "run.json").read_text())
    times = [r["t"] for r in read_history(run_dir / "history.jsonl")]
    # The load stopped after the last record but one second at most, and before the report was written.
    assert max(times) - 1000 <= info["ended_t"] <= (run_dir / "results.json").stat().st_mtime * 1000
    assert info["history_complete"] is True and info["history_missing"] == []
    assert info["rules"] == "reference"
    resources = info["resources"]
    assert set(resources) == {"load_generator", "stack", "machine", "short_of_cpu"}
    assert isinstance(resources["load_generator"]["warned"], bool)
    assert 0 < resources["load_generator"]["peak_cpu_percent"] < 400
    assert 0 < resources["stack"]["peak_cpu_percent"] < 400
    assert resources["machine"]["cores"] == os.cpu_count() and 0 <= resources["machine"]["saturated_share"] <= 1
    assert set(resources["short_of_cpu"]) <= {"load generator", "stack", "machine"}


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory) -> Iterator[dict]:
    """One local stack for several short runs (each run would otherwise start its own)."""
    ready = tmp_path_factory.mktemp("stack") / "ready.json"
    process = subprocess.Popen([sys.executable, "-m", "harness", "up", "--quiet", "--ready-file", str(ready)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield wait_until(lambda: ready.exists() and json.loads(ready.read_text()), timeout=60, what="the stack")
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)


@pytest.mark.parametrize("attempt", range(2))
def test_two_worker_processes_lose_no_history_at_quit(tmp_path, shared_stack, attempt):
    """Each worker's last batch reaches the master before it checks: no delivery without its send."""
    run_dir = tmp_path / "run"
    result = subprocess.run([*LOCUST, "--headless", "--processes", "2", "-u", "8", "-r", "8", "-t", "4s",
                             "--host", shared_stack["websocket"], "--ping-url", f"{shared_stack['http']}/ping",
                             "--run-dir", str(run_dir), "--heartbeat-interval", "1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode in REPORT_STATUSES, result.stderr[-3000:]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["history_complete"] is True, info["history_missing"]
    assert info["rules"] == "protocol"  # --host: not the embedded reference relay
    history = read_history(run_dir / "history.jsonl")
    sent = {r["pid"] for r in history if r["op"] == "send" and r["phase"] == "invoke"}
    delivered = {r["pid"] for r in history if r["op"] == "recv" and r.get("pid")}
    assert delivered and delivered <= sent, f"{len(delivered - sent)} deliveries match no send"
    assert {r["client"].split("-")[0] for r in history} == {"w0", "w1"}, "one history, both workers' players"
    # The closes made as the players stop are the last records: they arrived too.
    assert any(r["op"] == "close" for r in history)
    checks = {c["name"]: c for c in json.loads((run_dir / "results.json").read_text())["checks"]}
    assert checks["delivery"]["status"] != "fail", checks["delivery"]["violations"][:3]


def test_the_ledger_names_each_worker_whose_history_is_not_all_there():
    ledger = ShippingLedger()
    ledger.expect([0, 1, 2])
    ledger.arrived(0, 5, sent=5, final=False)
    ledger.arrived(0, 3, sent=8, final=True)
    ledger.arrived(1, 4, sent=6, final=True)  # a batch of 2 went missing
    assert ledger.missing() == ["worker 1: 2 of its 6 records never arrived",
                                "worker 2's last batch never arrived (0 of its records did)"]
    assert not ledger.complete()
    ledger.arrived(2, 0, sent=0, final=True)
    ledger.arrived(1, 2, sent=4, final=False)  # a late, earlier batch: the total does not go back
    assert ledger.complete() and ledger.missing() == []


def _refused(args: list[str], tmp_path: Path) -> str:
    """Run Locust with a bad option: exit 2, one line, no traceback; returns the line."""
    result = subprocess.run([*LOCUST, "--headless", "-t", "1s", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("relay-harness")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert not errors[0].startswith("relay-harness: relay-harness")
    return errors[0]


def test_bad_options_are_refused_before_anything_is_created(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    assert _refused(["--run-dir", str(a_file)], tmp_path) == \
        f"relay-harness: --run-dir {a_file} is a file: pass a folder (it is created if missing)"
    assert a_file.read_text() == "keep me"

    not_yaml = tmp_path / "template.yaml"
    not_yaml.write_text("Resources: [\n  a: {\n")
    line = _refused(["--template", str(not_yaml), "--run-dir", str(tmp_path / "run1")], tmp_path)
    assert line.startswith(f"relay-harness: template {not_yaml} is not YAML: ") and "line 3" in line

    profile = tmp_path / "bad.toml"
    profile.write_text('[[fault]]\nname = "boom"\ntype = "explode"\n')
    line = _refused(["--chaos-profile", str(profile), "--run-dir", str(tmp_path / "run2")], tmp_path)
    assert line.startswith(f"relay-harness: chaos profile {profile}: fault 'boom': 'type' must be one of drop,")
    assert _refused(["--cleanup-wait", "-1"], tmp_path) == \
        "relay-harness: --cleanup-wait -1 must be 0 or more seconds"
    assert _refused(["--sample-interval", "-1"], tmp_path) == \
        "relay-harness: --sample-interval -1 must be 0 (no sampling) or more seconds"
    assert not (tmp_path / "run1").exists() and not (tmp_path / "run2").exists()


def test_a_template_whose_expiries_cannot_be_shortened_is_refused_before_anything_starts(tmp_path):
    template = ROOT / "tests" / "fixtures" / "stack_template.yaml"
    line = _refused(["--template", str(template), "--cleanup-wait", "90", "--run-dir", str(tmp_path / "run")],
                    tmp_path)
    assert line == (f"relay-harness: the local stack cannot shorten the expiries of {template}: it has no Number "
                    "parameter named like an expiry or TTL (its parameters: FixtureLog, StageName); pass --parameter "
                    "NAME=SECONDS for the relay's expiry settings, or leave out --cleanup-wait/--short-expiry")
    assert not (tmp_path / "run").exists()


def test_a_store_that_is_gone_is_reported_unavailable_not_raised(tmp_path):
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait(timeout=30)
    target = LocalTarget(tmp_path, seed=1, profile=None)
    target.stack = {"dynamodb": f"http://127.0.0.1:{_free_port()}", "tables": {"SessionsTable": "s"}}
    target.processes = [exited]
    assert target.scan_store() == {"unavailable": "the local stack had exited (status 0) before the scan"}
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        target.processes = [alive]  # the stack runs but nothing answers on its DynamoDB port
        reason = target.scan_store()["unavailable"]
    finally:
        alive.kill()
        alive.wait()
    assert reason == f"nothing answers at {target.stack['dynamodb']} (Connection refused): the local DynamoDB is gone"


def test_the_cpu_sampler_sees_a_busy_child_of_a_root_process():
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.run([sys.executable, '-c', "
                               "'import time\\nend = time.monotonic() + 4\\nwhile time.monotonic() < end: pass'])"])
    sampler = CpuSampler([parent.pid], interval=0.5).start()
    try:
        wait_until(lambda: (sampler.peak_percent or 0) > 50, timeout=10, what="the busy child's CPU")
    finally:
        sampler.stop()
        parent.wait(timeout=30)

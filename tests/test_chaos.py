"""``relay-harness chaos`` as CI uses it: one command, a profile, a seed, the report's exit status;
bad input refused in one line before anything starts; a cancelled job still gets its report."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.checkers.model import number
from tests.stack_support import wait_until

ROOT = Path(__file__).resolve().parent.parent
CHAOS = [sys.executable, "-m", "harness", "chaos"]


def _faults(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize(("args", "says"), [
    (["--profile", "nope"], "chaos profile 'nope' not found"),
    (["--profile", "smoke", "--target", "http://127.0.0.1:9"], "--target 'http://127.0.0.1:9': give `local`"),
    (["--profile", "smoke", "--target", "ws://127.0.0.1:9", "--template", "t.yaml"], "leave out --target"),
    (["--profile", "smoke", "--users", "many"], "argument --users: invalid int value"),
    (["--profile", "smoke", "--parameter", "Nope=1"], "--parameter Nope: template "),
    (["--profile", "smoke", "--concurrency", "0"], "argument --concurrency: 0 must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, says):
    done = subprocess.run([*CHAOS, *args, "--out", str(tmp_path / "run")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("entry", "says"), [
    ("users = 0", "users must be a whole number from 1 to 10000, not 0"),
    ("duration = \"3m\"", "duration must be a number from 1 to 604800 (seconds), not '3m'"),
    ("session_size = 2.5", 'session_size must be N or "A-B" (e.g. 2 or "2-4"), not 2.5'),
    ("session_size = \"4-2\"", "session size '4-2' must be from 2 to 32 (N or A-B, A <= B)"),
    ("short_expiry = 1", "short_expiry must be true or false, not 1"),
])
def test_a_profile_describing_a_bad_experiment_is_refused(refuse_profile, entry, says):
    refuse_profile(f"{entry}\n", says)


def test_smoke_passes_the_reference_relay_with_every_seam_injected_and_prints_its_replay(tmp_path):
    """The reference relay under every seam at once must pass, with the checkers that need faults
    to have anything to judge (recovery, fan-out, live clean-up, session end) exercised."""
    run_dir = tmp_path / "run"
    done = subprocess.run([*CHAOS, "--profile", "smoke", "--seed", "1", "--out", str(run_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    results = json.loads((run_dir / "results.json").read_text())
    failed = [v["message"] for c in results["checks"] for v in c["violations"]]
    assert (done.returncode, results["verdict"], failed) == (0, "pass", []), done.stderr[-3000:]
    assert "replay: relay-harness chaos --profile smoke --seed 1" in done.stdout
    # The live line, plain in a CI log (harness/progress.py): faults counted while the load runs.
    live = [int(n) for n in re.findall(r"^relay-harness: (?:load|faults quiet) \d+/40 s \| \d+ users \| "
                                       r"violations[^|]+\| faults (\d+)", done.stderr, re.M)]
    assert live and max(live) > 0 and "| verdict pass, 0 violations | faults" in done.stderr, done.stderr[-3000:]
    info = json.loads((run_dir / "run.json").read_text())
    assert (info["seed"], info["session_sizes"]) == (1, [2, 3])
    faults = _faults(run_dir / "faults.jsonl")
    assert {f["seam"] for f in faults} == {"wire", "invocation", "store", "management", "process"}
    assert {f["fault"] for f in faults if f["seam"] == "process"} == {"store_outage", "stream_stall", "clock_skew",
                                                                      "kill"}
    checked = {c["name"]: c["checked"] for c in results["checks"]}
    assert all(checked[name] > 0 for name in ("session_end", "recovery", "live_cleanup", "fanout", "pinned")), checked
    # Relayed messages carry the relay's clock: 90 s ahead, 90 s behind, and right.
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    offsets = {round((number(r["msg"]["time"]) - r["t"]) / 90_000) for r in history
               if r["op"] == "recv" and r["msg"].get("type") == "MESSAGE"}
    assert offsets == {-1, 0, 1}


def test_a_cancelled_job_forwards_one_ctrl_c_and_exits_as_its_report_says(tmp_path):
    """SIGTERM to the command (a CI job cancelled) reaches the run as Ctrl-C: a partial report, and
    the report's status (here inconclusive: nothing listens at the target)."""
    run_dir = tmp_path / "run"
    process = subprocess.Popen([*CHAOS, "--profile", "lossy", "--seed", "2", "--target", "ws://127.0.0.1:1",
                                "--duration", "120", "--users", "2", "--out", str(run_dir)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (run_dir / "run.json").exists(), timeout=60, what="the run to start")
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 3, out[-2000:] + err[-2000:]
    assert "Traceback" not in err
    results = json.loads((run_dir / "results.json").read_text())
    assert results["partial"] is True and results["verdict"] == "inconclusive"
    assert "exit 3; replay: relay-harness chaos --profile lossy --seed 2 --target ws://127.0.0.1:1" in out

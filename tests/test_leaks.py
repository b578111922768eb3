"""The leak checker on synthetic samples (quiet on noise, GC sawtooths, growth that levels off and
restarts; a finding on steady growth of memory or descriptors), its profile table, the sampler on
real processes, and a planted leak caught in a real run."""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.checkers import CORE_CHECKS, leaks
from harness.checkers.model import Run
from harness.local_target import ResourceSampler
from harness.report.build import build_report
from tests.planted import planted_relay
from tests.stack_support import wait_until
from tests.test_report import _lossy_history, _run_folder

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
START = 1_000_000_000  # wall ms of the load's start
DURATION_S = 30 * 60


def _run(rss, fds=lambda t: 100.0, *, role="stack", every_s=2.0, duration_s=DURATION_S, restarts=(), **info) -> Run:
    """A run whose load lasted ``duration_s`` and whose ``role`` was sampled every ``every_s`` with
    rss(t) MB and fds(t) descriptors (t: seconds from the load's start)."""
    samples = [{"t": START + round(1000 * t), "role": role, "rss_bytes": round(rss(t) * MB), "fds": round(fds(t)),
                "cpu": 5.0, "procs": 2} for t in (i * every_s for i in range(int(duration_s / every_s) + 1))]
    history = [{"t": START, "mono": 0.0, "client": "a", "conn": 1, "op": "connect", "phase": "invoke"}]
    return Run(history=history, resources=samples,
               info={"ended_t": START + 1000 * duration_s, "stack": {}, "stack_restarts": list(restarts), **info})


def _noise(seed: int, scale: float):
    rng = random.Random(seed)
    return lambda: rng.gauss(0, scale)


def _check(run: Run):
    result = leaks.check(run)
    return result.status, [v.message for v in result.violations]


def test_flat_with_noise_is_quiet():
    noise = _noise(1, 3.0)
    status, found = _check(_run(lambda t: 150 + noise(), lambda t: 90 + 8 * math.sin(t / 37)))
    assert (status, found) == ("pass", [])


def test_a_gc_sawtooth_is_quiet():
    # 40 MB climbs over each minute, then a collection gives it back.
    assert _check(_run(lambda t: 120 + 40 * ((t % 60) / 60))) == ("pass", [])


def test_steady_linear_growth_is_a_finding_naming_role_metric_growth_and_rate():
    noise = _noise(2, 2.0)
    status, [message] = _check(_run(lambda t: 75 + 7 * t / 60 + noise()))
    assert status == "fail"
    # 28 steady minutes (2 of warm-up left out) at 7 MB/min from ~89 MB.
    assert re.fullmatch(r"stack RSS grew 1\d\d MB \(\+2\d\d%\) over 28 min, ~7(\.\d)? MB/min, and never levelled off "
                        r"\(last third: ~\d(\.\d)? MB/min\)", message), message


def test_growth_that_levels_off_is_quiet():
    # +100 MB over the first 12 minutes (caches filling up), then flat.
    assert _check(_run(lambda t: 100 + 100 * min(t, 720) / 720)) == ("pass", [])


def test_a_descriptor_leak_is_a_finding():
    status, found = _check(_run(lambda t: 150.0, lambda t: 80 + t // 6 + (t % 7)))
    assert status == "fail" and len(found) == 1 and found[0].startswith("stack open fds grew 2"), found


def test_a_restart_resets_the_level_and_its_climb_back_is_quiet():
    # Flat at 200 MB; killed at 15 min, ready 3 s later at 60 MB, climbing back over 2 minutes.
    killed, ready = 900.0, 903.0

    def rss(t):
        if t < killed:
            return 200.0
        return 60 + 140 * min(1.0, (t - ready) / 120) if t >= ready else 30.0

    restarts = [{"rule": "kill", "killed_t": START + 1000 * killed, "ready_t": START + 1000 * ready}]
    result = leaks.check(_run(rss, lambda t: 50 if t < killed else 20 + 30 * min(1, (t - ready) / 120),
                              restarts=restarts))
    assert result.status == "pass", [v.message for v in result.violations]
    assert "1 stack restart(s) left out" in result.notes[0] and result.checked == 840 - 62


def test_a_leak_across_a_restart_is_measured_within_each_segment():
    # 7 MB/min from 75 MB, reset to 60 MB by a kill at 15 min: the drop does not hide the rate.
    killed, ready = 900.0, 903.0
    restarts = [{"rule": "kill", "killed_t": START + 1000 * killed, "ready_t": START + 1000 * ready}]
    status, [message] = _check(_run(lambda t: 75 + 7 * t / 60 if t < killed else 60 + 7 * (t - ready) / 60,
                                    restarts=restarts))
    assert status == "fail" and ", ~7.0 MB/min, and never levelled off" in message, message


def test_too_short_a_steady_span_is_not_exercised_and_says_how_much_it_saw():
    result = leaks.check(_run(lambda t: 100 + t, duration_s=400))
    assert result.status == "not exercised"
    assert result.notes == ["stack: 140 steady sample(s) over 4.6 min, fewer than 30 or shorter than 5.0 min "
                            "(min_samples, min_span_s): not judged; the first 120 s left out (warm-up)"]
    # The profile's thresholds travel in run.json: a short span can be judged on purpose.
    shorter = leaks.check(_run(lambda t: 100 + t, duration_s=400, leaks={"min_span_s": 60}))
    assert shorter.status == "fail" and shorter.checked == 140


def test_a_pass_says_how_much_it_checked():
    result = leaks.check(_run(lambda t: 150.0))
    assert result.checked == 840 and result.notes[0].startswith("stack: 840 samples over 28 min; RSS from 150 MB +0.0")


def test_without_samples_it_is_skipped_and_says_why():
    remote = Run(history=[], info={"stack": None})
    assert leaks.check(remote).skipped == "the relay ran elsewhere (--host): none of its processes was sampled"
    assert leaks.check(Run(history=[], info={"stack": {}})).status == "skipped"


def test_the_store_is_plotted_but_not_judged():
    # Every stream record is kept, as DynamoDB Streams keeps them for 24 h: the store grows with the writes.
    result = leaks.check(_run(lambda t: 90 + 0.2 * t, role="store"))
    assert result.status == "not exercised" and result.notes[0].startswith("store: plotted, not judged")


def test_leaks_is_not_a_core_check():
    assert "leaks" not in CORE_CHECKS


@pytest.mark.parametrize(("table", "says"), [
    ("min_span_s = -1", "[leaks] min_span_s must be a number from 1 to 86,400 (seconds), not -1"),
    ("min_samples = 2.5", "[leaks] min_samples must be a whole number from 3 to 1,000,000, not 2.5"),
    ("still_growing = 2", "[leaks] still_growing must be a number from 0 to 1, not 2"),
    ("span = 3", "[leaks]: unknown key 'span'; known: warmup_s, min_span_s"),
])
def test_a_bad_leaks_table_is_one_line(refuse_profile, table, says):
    refuse_profile(f"[leaks]\n{table}\n", says)


def test_the_sampler_follows_a_role_and_its_children(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import os, sys, time\nfiles = [open(os.devnull) for _ in "
                              "range(50)]\nsys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        pids = [child.pid]
        sampler = ResourceSampler({"stack": lambda: pids, "gone": lambda: []}, tmp_path / "resources.jsonl", 0.05)
        sampler.start()
        wait_until(lambda: len((tmp_path / "resources.jsonl").read_text().splitlines()) >= 2, 10, "two samples")
        sampler.stop()
    finally:
        child.kill()
        child.wait()
    first, second = (json.loads(line) for line in (tmp_path / "resources.jsonl").read_text().splitlines()[:2])
    assert first["role"] == "stack" and first["procs"] == 1 and first["fds"] >= 53 and first["rss_bytes"] > MB
    assert first["cpu"] is None and second["cpu"] is not None and second["t"] >= first["t"]
    started = time.process_time()
    for _ in range(100):
        sampler.sample()
    assert (time.process_time() - started) / 100 < 0.005  # CPU seconds per sample of a small tree


def test_the_report_plots_memory_and_descriptors_per_role_and_sums_them_up(tmp_path):
    history = _lossy_history()  # 0 to 9 s, wall ms 0..9000
    samples = [{"t": 1000 * i, "role": role, "rss_bytes": (100 + 10 * i) * MB if role == "stack" else 40 * MB,
                "fds": 30 + i, "cpu": 1.0, "procs": 1} for i in range(11) for role in ("stack", "proxy")]
    run_dir = _run_folder(tmp_path / "run", history, stack={}, ended_t=9000)
    (run_dir / "resources.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    _, results = build_report(run_dir)
    stack = results["processes"]["roles"]["stack"]
    assert stack["t"][0] == 0.0 and stack["t"][-1] <= 9.0 and stack["rss_mb"][:2] == [100.0, 110.0]
    assert results["processes"]["summary"]["stack"] == {"samples": 10, "rss_start_mb": 100.0, "rss_end_mb": 190.0,
                                                        "rss_peak_mb": 190.0, "fds_start": 30, "fds_end": 39,
                                                        "fds_peak": 39}
    page = (run_dir / "report.html").read_text()
    latency, memory, files = (page.index(title) for title in (
        "Message fan-out latency", "Memory (RSS) of the stack, its store and the proxy", "Open file descriptors"))
    assert latency < memory < files
    summary = (run_dir / "summary.md").read_text()
    assert ("- stack: RSS 100 MB at the start, 190 MB at the end, peak 190 MB; open fds 30 at the start, 39 at the "
            "end, peak 39 (10 samples)") in summary
    [check] = [c for c in results["checks"] if c["name"] == "leaks"]
    assert check["status"] == "not exercised"  # 9 s of samples, all of them warm-up


def test_a_run_against_another_host_says_nothing_was_sampled(tmp_path):
    run_dir = _run_folder(tmp_path / "run", _lossy_history(), stack=None)
    _, results = build_report(run_dir)
    note = "the relay ran elsewhere (--host): only the embedded local stack and its proxy are sampled"
    assert results["processes"] == {"sampled": False, "note": note, "roles": {}, "summary": {}}
    assert f"Processes not sampled: {note}." in (run_dir / "summary.md").read_text()
    assert "Processes not sampled" in (run_dir / "report.html").read_text()
    assert [c["status"] for c in results["checks"] if c["name"] == "leaks"] == ["skipped"]


def test_a_relay_that_keeps_every_event_in_memory_is_caught_in_a_short_run(tmp_path):
    """The planted leak (tests/fixtures/planted_relay/keep_every_event.py: 1 MB kept per invocation of
    the WebSocket function) in an 18 s run whose profile judges 12 s of steady samples. The reference
    relay stays quiet over the soak profile's 10 minutes (README "Soak": the measurement)."""
    template = planted_relay(tmp_path / "relay", "planted_relay", {"WebSocketFunction": "keep_every_event.handler"})
    profile = tmp_path / "leaky.toml"
    # The stack's RSS is summed over ~20 instances, each counting the pages it shares with the fork
    # server, so its level (~2.4 GB) dilutes the relative rule: the leak grew +19% over the span at
    # a rate 1,000x the absolute threshold, and a CI run passed it at the default 20%.
    profile.write_text("[leaks]\nwarmup_s = 4\nmin_span_s = 8\nmin_samples = 10\nrss_percent = 10\n")
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "locust", "-f", "scenarios/relay.py", "--headless", "-u", "12",
                           "-r", "12", "-t", "18s", "--chaos-profile", str(profile), "--seed", "1", "--run-dir",
                           str(run_dir), "--template", str(template), "--sample-interval", "0.5"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    results = json.loads((run_dir / "results.json").read_text())
    failed = {c["name"]: [v["message"] for v in c["violations"]] for c in results["checks"] if c["violations"]}
    assert done.returncode == 1 and list(failed) == ["leaks"], (failed, done.stderr[-2000:])
    [message] = failed["leaks"]
    assert re.match(r"stack RSS grew \d+ MB \(\+\d+%\) over 1\d s, ~\d+ MB/min, and never levelled off", message)
    assert set(results["processes"]["summary"]) == {"stack", "store", "proxy"}
    assert "stack: RSS" in (run_dir / "summary.md").read_text()
    assert "Memory (RSS) of the stack, its store and the proxy" in (run_dir / "report.html").read_text()

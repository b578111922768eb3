"""The scenario's cost per message on the load generator, against a bare Locust + websocket-client
echo loop in the same run, and Locust's CPU share at the local stack's peak rate.

Both loops run headless against benchmarks/fake_relay.py (which answers instantly), so the CPU
measured is the load generator's own. Run: python benchmarks/scenario_benchmark.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.stack.ports import free_port  # noqa: E402


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _locust(user: str, url: str, users: int, seconds: float, pace: float) -> tuple[int, float, float]:
    """(messages, CPU seconds of the Locust process, wall seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "stats"
        before, started = _child_cpu(), time.monotonic()
        subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "benchmarks" / "locust_loops.py"), user,
                        "--headless", "-u", str(users), "-r", str(users), "-t", f"{int(seconds)}s", "--host", url,
                        "--pace", str(pace), "--csv", str(csv), "--only-summary"],
                       cwd=ROOT, check=True, capture_output=True)
        cpu, wall = _child_cpu() - before, time.monotonic() - started
        rows = (Path(tmp) / "stats_stats.csv").read_text().splitlines()
    header = rows[0].split(",")
    for row in rows[1:]:
        fields = dict(zip(header, row.split(","), strict=False))
        if fields["Name"] in ("echo", "message fan-out"):
            return int(fields["Request Count"]), cpu, wall
    raise RuntimeError(f"no message counts in {rows}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--peak-sends", type=float, default=75.0,
                        help="sends/s at the local stack's peak (see stack_benchmark.py: ~143 deliveries/s)")
    args = parser.parse_args()
    port = free_port()
    relay = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "fake_relay.py"), str(port)])
    url = f"ws://127.0.0.1:{port}"
    try:
        time.sleep(1.0)  # a benchmark: let the fake relay bind
        results = {}
        for user in ("BareEcho", "ScenarioLoop"):
            messages, cpu, wall = _locust(user, url, 10, args.seconds, 0.0)
            results[user] = cpu / messages * 1e6
            print(f"{user:<13} {messages:>7} messages  {cpu:6.2f} s CPU  {results[user]:7.0f} us CPU per message")
        print(f"scenario / bare: x{results['ScenarioLoop'] / results['BareEcho']:.2f} CPU per message (target <= 1.3)")
        users = 20
        pace = users / args.peak_sends
        messages, cpu, wall = _locust("ScenarioLoop", url, users, args.seconds, pace)
        print(f"at {messages / wall:.0f} sends/s ({users} users), Locust used {100 * cpu / wall:.0f}% of one core "
              f"(target < 50%)")
    finally:
        relay.terminate()
        relay.wait()


if __name__ == "__main__":
    main()

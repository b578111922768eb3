"""Does a seed replay? Two same-seed runs' fault decisions compared by key, and how often same-seed
runs of a relay with a planted bug find a violation again.

Run: python benchmarks/replay_check.py [--profile lossy] [--seed 7] [--users 10] [--spawn-rate 2]
     [--duration 30] [--fixture-runs 3] [--out DIR] [--lock FILE]
A decision's key is its rule and the proxy's decision key (faults.jsonl ``rule.id`` and
``rule.seq``: connection key, direction, message index). Prints |A|, |B|, the Jaccard share
|A&B|/|A or B| and |A&B|/|A|, the same share keyed by player name and socket number instead of the
whole request target, then k of N same-seed runs of tests/fixtures/naive_relay that failed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.seed_sweep import run_once
from harness.history import read_history
from tests.planted import planted_relay

_CLIENT_CONN = re.compile(r"[?&]client=([^&#]+)&conn=(\d+)")


def naive_template(folder: Path) -> Path:
    """The planted-bug relay of tests/fixtures/naive_relay: the reference relay with a stream handler
    that is not designed for retries."""
    return planted_relay(folder / "naive-relay", "naive_relay/src", {"StreamFunction": "naive_stream.handler"})


def decision_keys(run_dir: Path, by_socket: bool = False) -> set[str]:
    """Every fault decision of a run, as a key. ``by_socket``: name the connection by its player and
    socket number only (query parameters such as a rejoin's memberId, which the relay draws at
    random, left out)."""
    path = run_dir / "faults.jsonl"
    keys = set()
    for fault in read_history(path) if path.exists() else []:
        seq = list(fault["rule"]["seq"]) if isinstance(fault["rule"]["seq"], list) else [fault["rule"]["seq"]]
        if by_socket and seq and isinstance(seq[0], str) and (found := _CLIENT_CONN.search(seq[0])):
            seq[0] = f"{found.group(1)}#{found.group(2)}"
        keys.add(json.dumps([fault["rule"]["id"], seq]))
    return keys


def share(a: set[str], b: set[str]) -> dict[str, float | int]:
    """|A|, |B|, |A&B|, Jaccard |A&B|/|A or B| and |A&B|/|A| (0.0 when empty)."""
    both, either = len(a & b), len(a | b)
    return {"a": len(a), "b": len(b), "both": both, "jaccard": both / either if either else 0.0,
            "of_a": both / len(a) if a else 0.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="lossy")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--spawn-rate", type=float, default=2.0,
                        help="users started per second: spaced arrivals make matchmaking pair the same players")
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--fixture-runs", type=int, default=3, help="same-seed runs of the planted-bug relay (0: none)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--lock", type=Path, default=None, help="hold an flock on this file during each run")
    args = parser.parse_args()
    if not 5 <= args.duration <= 600 or not 0 <= args.fixture_runs <= 20:
        parser.error(f"--duration {args.duration} must be 5-600 s and --fixture-runs {args.fixture_runs} 0-20")
    out = args.out or Path(tempfile.mkdtemp(prefix="replay-check-"))
    runs = []
    for number in (1, 2):
        outcome = run_once(out / f"{args.profile}-{number}", profile=args.profile, seed=args.seed, users=args.users,
                           duration=args.duration, spawn_rate=args.spawn_rate, lock=args.lock)
        print(f"run {number}: {outcome.verdict} in {outcome.seconds:.0f} s ({outcome.run_dir})", flush=True)
        runs.append(Path(outcome.run_dir))
    figures = {"as_logged": share(decision_keys(runs[0]), decision_keys(runs[1])),
               "by_socket": share(decision_keys(runs[0], True), decision_keys(runs[1], True))}
    for name, figure in figures.items():
        print(f"decisions {name}: |A| {figure['a']}, |B| {figure['b']}, shared {figure['both']}: "
              f"Jaccard {figure['jaccard']:.1%}, of A {figure['of_a']:.1%}", flush=True)
    failed = []
    for number in range(1, args.fixture_runs + 1):
        outcome = run_once(out / f"naive-{number}", profile=None, seed=args.seed, users=12, duration=15,
                           extra=("--template", str(naive_template(out)), "--heartbeat-interval", "1"), lock=args.lock)
        failed.append(outcome.verdict == "fail")
        print(f"naive relay run {number}: {outcome.verdict} - {'; '.join(outcome.findings[:2])}", flush=True)
    if failed:
        print(f"naive relay: {sum(failed)} of {len(failed)} same-seed runs found a violation", flush=True)
    (out / "replay.json").write_text(json.dumps({"decisions": figures, "naive_failed": failed}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

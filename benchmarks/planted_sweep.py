"""Misses over many seeds: each built-in profile against a relay with a planted bug it exists to
expose (tests/fixtures/planted_relay), one Locust run per seed, and how many runs caught it.

Run: python benchmarks/planted_sweep.py [--bugs resend_on_retry,...] [--seeds 5] [--duration 12]
     [--users 12] [--profile ci] [--profile-shape] [--out DIR] [--lock FILE]
A run catches its bug when it exits 1 and the checker that names the bug failed. Prints one line
per run as it ends (seconds = start to verdict, stack start-up and report included), then per bug:
seeds run, caught, and the slowest time to a verdict; writes the same to DIR/planted.json.
Exit 0 when every run caught its bug, 1 when any missed, 2 on bad input. Not a test: minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.seed_sweep import _seeds, add_profile_shape, pick, run_once  # noqa: E402
from tests.planted import planted_relay  # noqa: E402


@dataclass(frozen=True)
class PlantedBug:
    """A fixture module swapped in for one function, the profile meant to expose it and the
    checker that must name it."""

    module: str
    function: str
    profile: str
    caught_by: tuple[str, ...]  # any of these checkers failing names the bug
    min_duration: int = 0  # seconds of load the profile needs to reach its fault (outage kills at 30 s)


BUGS = {bug.module: bug for bug in (
    PlantedBug("resend_on_retry", "StreamFunction", "retries", ("notifications",)),
    PlantedBug("join_without_room_condition", "WebSocketFunction", "races", ("membership",)),
    PlantedBug("join_without_retry", "WebSocketFunction", "races", ("health",)),
    # After the kill the members it kept are gone: a rejoin is refused with a 500 (client_errors)
    # or, when the lookup happens on a route other than $connect, fails as KeyError (health).
    PlantedBug("rejoin_from_memory", "WebSocketFunction", "outage", ("client_errors", "health"), min_duration=40),
)}


def _bugs(text: str) -> list[PlantedBug]:
    return [BUGS[name] for name in pick(text, list(BUGS), "planted bug")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bugs", type=_bugs, default=list(BUGS.values()), help=f"comma-separated: {', '.join(BUGS)}")
    parser.add_argument("--seeds", type=_seeds, default=list(range(1, 6)), help="a count (5) or a list (7,10,12)")
    parser.add_argument("--duration", type=int, default=12, help="seconds of load per run (default 12)")
    parser.add_argument("--users", type=int, default=12, help="players per run (default 12)")
    parser.add_argument("--profile", default=None,
                        help="run every bug under this profile instead of its own (e.g. ci)")
    add_profile_shape(parser)
    parser.add_argument("--out", type=Path, default=None, help="folder for the run folders (default: a temp folder)")
    parser.add_argument("--lock", type=Path, default=None, help="hold an flock on this file during each run")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="planted-sweep-"))
    summary: dict[str, dict] = {}
    runs = []
    for bug in args.bugs:
        template = planted_relay(out / bug.module / "relay", "planted_relay", {bug.function: f"{bug.module}.handler"})
        profile = args.profile or bug.profile
        entry = summary.setdefault(bug.module, {"profile": profile, "caught_by": bug.caught_by, "seeds": [],
                                                "caught": [], "missed": [], "slowest_verdict_s": 0.0})
        for seed in args.seeds:
            outcome = run_once(out / bug.module / f"seed-{seed}", profile=profile, seed=seed,
                               users=None if args.profile_shape else args.users,
                               duration=None if args.profile_shape else max(args.duration, bug.min_duration),
                               extra=("--template", str(template)), lock=args.lock)
            failed = {finding.split(":", 1)[0] for finding in outcome.findings}
            caught = outcome.status == 1 and bool(failed & set(bug.caught_by))
            entry["seeds"].append(seed)
            entry["caught" if caught else "missed"].append(seed)
            entry["slowest_verdict_s"] = round(max(entry["slowest_verdict_s"], outcome.seconds), 1)
            runs.append({**asdict(outcome), "bug": bug.module, "caught": caught})
            named = ", ".join(sorted(failed & set(bug.caught_by)))
            print(f"{bug.module:28} {profile:8} seed {seed:3}: exit {outcome.status}, "
                  f"{'caught by ' + named if caught else 'MISSED'} ({outcome.seconds:.0f} s)"
                  + ("" if caught else f"; failed: {', '.join(sorted(failed)) or 'none'}"), flush=True)
    print()
    for name, entry in summary.items():
        print(f"{name}: {entry['profile']}, caught {len(entry['caught'])} of {len(entry['seeds'])} seeds by "
              f"{' or '.join(entry['caught_by'])}, slowest verdict {entry['slowest_verdict_s']} s")
    (out / "planted.json").write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))
    print(f"written: {out / 'planted.json'}")
    return 0 if all(not entry["missed"] for entry in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

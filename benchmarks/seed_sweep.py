"""False alarms over many seeds: each built-in chaos profile against the reference relay, one
Locust run per seed, and how many runs failed (a fail on the reference relay is a false alarm).

Run: python benchmarks/seed_sweep.py [--profiles deploy,lossy,flaky] [--seeds 20] [--duration 40]
     [--users 20] [--profile-shape] [--out DIR] [--lock FILE]
Prints one line per run as it ends, then per profile: seeds run, false alarms, and each failing
run's first findings; writes the same to DIR/sweep.json. Exit 0 with no false alarm, 1 with any,
2 on bad input. Each run is bounded (its duration + 180 s). Not a test: it takes minutes per seed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import run_shape  # noqa: E402
from harness.faults.profile import load_profile  # noqa: E402

PROFILES_DIR = ROOT / "scenarios" / "profiles"
TEARDOWN_S = 180  # start-up, report and teardown allowance on top of the load time


@dataclass
class RunOutcome:
    """One Locust run: its exit status, verdict (None when no results.json was written) and the
    first finding of each failing check."""

    profile: str
    seed: int
    run_dir: str
    status: int
    verdict: str | None
    seconds: float
    findings: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _held(lock: Path | None) -> Iterator[None]:
    if lock is None:
        yield
        return
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_once(run_dir: Path, *, profile: str | None, seed: int, users: int | None, duration: int | None,
             spawn_rate: float | None = None, extra: tuple[str, ...] = (), lock: Path | None = None) -> RunOutcome:
    """One headless run of scenarios/relay.py into ``run_dir`` (``profile`` None: no faults; users
    spawned per second: ``spawn_rate``, default all at once). ``users`` and ``duration`` None: the
    run is ``relay-harness chaos --profile PROFILE``, with the shape the profile carries (players,
    duration, session sizes, clean-up during play), exactly as CI runs it."""
    if users is None or duration is None:
        if not profile:
            raise ValueError("the profile's own shape needs a profile")
        shape = load_profile(profile).run
        command = [sys.executable, "-m", "harness", "chaos", "--profile", profile, "--seed", str(seed),
                   "--out", str(run_dir), *extra]
        duration = round(shape.get("duration", run_shape.DEFAULTS["duration"])
                         + shape.get("cleanup_wait", run_shape.DEFAULTS["cleanup_wait"]))
    else:
        command = [sys.executable, "-m", "locust", "-f", "scenarios/relay.py", "--headless", "-u", str(users),
                   "-r", str(spawn_rate or users), "-t", f"{duration}s", "--seed", str(seed),
                   "--run-dir", str(run_dir), *extra]
        if profile:
            command += ["--chaos-profile", profile]
    with _held(lock):
        started = time.monotonic()
        try:
            status = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                    timeout=duration + TEARDOWN_S).returncode
        except subprocess.TimeoutExpired:
            status = -1
        seconds = time.monotonic() - started
    results_path = run_dir / "results.json"
    if not results_path.exists():
        return RunOutcome(profile or "none", seed, str(run_dir), status, None, seconds)
    results = json.loads(results_path.read_text())
    findings = [f"{check['name']}: {check['violations'][0]['message']}"
                for check in results["checks"] if check.get("violations")]
    return RunOutcome(profile or "none", seed, str(run_dir), status, results["verdict"], seconds, findings)


def _seeds(text: str) -> list[int]:
    """``20`` (seeds 1..20) or ``7,10,12`` (those seeds)."""
    try:
        if "," in text:
            return [int(part) for part in text.split(",") if part.strip()]
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a count (20) or a comma-separated list (7,10,12)") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the count must be at least 1")
    return list(range(1, count + 1))


def pick(text: str, known: list[str], what: str) -> list[str]:
    """Comma-separated names, each one of ``known``; argparse's one-line error otherwise."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown {what}(s) {', '.join(unknown) or '(none given)'}; "
                                         f"known: {', '.join(known)}")
    return names


def add_profile_shape(parser: argparse.ArgumentParser) -> None:
    """``--profile-shape``: each run as ``relay-harness chaos`` makes it (the profile's shape)."""
    parser.add_argument("--profile-shape", action="store_true",
                        help="run each seed as `relay-harness chaos --profile P --seed N` does: the profile's own "
                             "players, duration, session sizes and clean-up (ignores --duration and --users)")


def _profiles(text: str) -> list[str]:
    return pick(text, sorted(p.stem for p in PROFILES_DIR.glob("*.toml")), "profile")


def summarise(outcomes: list[RunOutcome]) -> dict[str, dict]:
    """Per profile: seeds run, false alarms (verdict fail), harness failures (no verdict), and the
    failing runs' seeds with their first findings."""
    summary: dict[str, dict] = {}
    for outcome in outcomes:
        entry = summary.setdefault(outcome.profile, {"seeds": [], "false_alarms": [], "no_verdict": []})
        entry["seeds"].append(outcome.seed)
        if outcome.verdict == "fail":
            entry["false_alarms"].append({"seed": outcome.seed, "run_dir": outcome.run_dir,
                                          "findings": outcome.findings[:3]})
        elif outcome.verdict is None:
            entry["no_verdict"].append({"seed": outcome.seed, "status": outcome.status, "run_dir": outcome.run_dir})
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=_profiles, default=sorted(p.stem for p in PROFILES_DIR.glob("*.toml")),
                        help="comma-separated built-in profiles (default: all)")
    parser.add_argument("--seeds", type=_seeds, default=list(range(1, 21)),
                        help="a count N (seeds 1..N, default 20) or a list 7,10,12")
    parser.add_argument("--duration", type=int, default=40, help="seconds of load per run (default 40)")
    parser.add_argument("--users", type=int, default=20, help="players per run (default 20)")
    add_profile_shape(parser)
    parser.add_argument("--out", type=Path, default=None, help="folder for the run folders (default: a temp folder)")
    parser.add_argument("--lock", type=Path, default=None, help="hold an flock on this file during each run "
                                                                "(machines shared with other load)")
    args = parser.parse_args()
    if not 5 <= args.duration <= 600 or not 1 <= args.users <= 500:
        parser.error(f"--duration {args.duration} must be 5-600 s and --users {args.users} 1-500")
    if args.profile_shape:
        args.duration = args.users = None
    out = args.out or Path(tempfile.mkdtemp(prefix="seed-sweep-"))
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file: pass a folder")
    runs = [(profile, seed) for profile in args.profiles for seed in args.seeds]
    length = "the profile's own length" if args.profile_shape else f"{args.duration} s"
    print(f"seed sweep: {len(runs)} runs of {length} ({', '.join(args.profiles)}; seeds "
          f"{args.seeds[0]}..{args.seeds[-1]}) into {out}", flush=True)
    outcomes = []
    for number, (profile, seed) in enumerate(runs, 1):
        outcome = run_once(out / f"{profile}-seed{seed}", profile=profile, seed=seed, users=args.users,
                           duration=args.duration, lock=args.lock)
        outcomes.append(outcome)
        first = f" - {outcome.findings[0]}" if outcome.findings else ""
        verdict = outcome.verdict or f"no verdict (exit {outcome.status})"
        print(f"[{number}/{len(runs)}] {profile} seed {seed}: {verdict} in {outcome.seconds:.0f} s{first}", flush=True)
    summary = summarise(outcomes)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({"summary": summary, "runs": [asdict(o) for o in outcomes]}, indent=2))
    for profile, entry in summary.items():
        print(f"{profile}: {len(entry['seeds'])} seeds, {len(entry['false_alarms'])} false alarm(s), "
              f"{len(entry['no_verdict'])} without a verdict", flush=True)
        for alarm in entry["false_alarms"]:
            print(f"  seed {alarm['seed']}: {'; '.join(alarm['findings'])}", flush=True)
    return 1 if any(entry["false_alarms"] for entry in summary.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

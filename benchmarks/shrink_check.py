"""Failures that shrink: the protocol state machine (tests/relay_machine.py) against each planted bug
(tests/fixtures/planted_relay) must find it and shrink it to a short script; the reference relay
must pass the same number of examples.

Run: python benchmarks/shrink_check.py [--bugs resend_on_retry,join_without_room_condition]
     [--max-examples 60] [--steps 15] [--reference-examples 20]
Per planted bug it runs the machine twice on one stack: without shrinking (how many examples, how
many seconds and how many steps the first failure took), then with it (the seconds, the steps left
and the script Hypothesis prints, ready to paste into a test). Generation is derandomized, so a
run repeats. Exit 0 when every bug was found and shrank to at most 10 steps and the reference
relay passed; 1 otherwise; 2 on bad input. Not a test: minutes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.seed_sweep import pick  # noqa: E402
from tests.planted import planted_relay  # noqa: E402
from tests.relay_machine import RelayWorld, run_machine  # noqa: E402

BUGS = {"resend_on_retry": "StreamFunction", "join_without_room_condition": "WebSocketFunction"}
MOST_STEPS = 10


def _settings(max_examples: int, steps: int, shrink: bool) -> settings:
    phases = tuple(Phase) if shrink else (Phase.explicit, Phase.reuse, Phase.generate)
    return settings(max_examples=max_examples, stateful_step_count=steps, deadline=None, database=None,
                    derandomize=True, phases=phases, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _bugs(text: str) -> list[str]:
    return pick(text, list(BUGS), "planted bug")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number from 1 up")
    return int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bugs", type=_bugs, default=list(BUGS), help=f"comma-separated: {', '.join(BUGS)}")
    parser.add_argument("--max-examples", type=_positive, default=60, help="examples to find a bug in (60)")
    parser.add_argument("--steps", type=_positive, default=15, help="steps per example (15)")
    parser.add_argument("--reference-examples", type=_positive, default=20,
                        help="examples the reference relay must pass (20)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="shrink-check-"))
    ok = True
    for bug in args.bugs:
        template = planted_relay(folder / bug, "planted_relay", {BUGS[bug]: f"{bug}.handler"})
        world = RelayWorld(template, folder / bug / "logs")
        try:
            found = run_machine(world, _settings(args.max_examples, args.steps, shrink=False))
            shrunk = run_machine(world, _settings(args.max_examples, args.steps, shrink=True)) if found.failed else None
        finally:
            world.stop()
        if shrunk is None or not shrunk.failed:
            print(f"{bug}: NOT FOUND in {found.examples} examples ({found.seconds:.0f} s)", flush=True)
            ok = False
            continue
        ok &= shrunk.steps <= MOST_STEPS
        print(f"{bug}: found after {found.examples} examples in {found.seconds:.0f} s with {found.steps} steps; "
              f"shrunk to {shrunk.steps} steps ({shrunk.examples} examples, {shrunk.seconds:.0f} s):", flush=True)
        print("\n".join("    " + line for line in shrunk.script), flush=True)
        print(f"    -> {shrunk.failed}", flush=True)
    world = RelayWorld(log_dir=folder / "reference" / "logs")
    try:
        reference = run_machine(world, _settings(args.reference_examples, args.steps, shrink=True))
    finally:
        world.stop()
    ok &= not reference.failed
    verdict = ("FAILED:\n" + "\n".join("    " + line for line in [*reference.script, reference.failed])
               if reference.failed else "passed")
    print(f"reference relay: {reference.examples} examples of {args.steps} steps in {reference.seconds:.0f} s, "
          f"{verdict}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

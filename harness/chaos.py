"""``relay-harness chaos``: one command for a CI chaos run -- a profile, a seed, an exit status.

It runs the Locust scenarios headless (``scenarios/relay.py``) with the experiment's shape the
profile describes (``harness/run_shape.py``: players, spawn rate, duration, session sizes,
clean-up during play; options override them), against the embedded local stack and chaos proxy or a
``--target``, and exits as the run's report says: 0 pass, 1 fail (a violation), 2 harness error
or bad input, 3 inconclusive (README "The verdict"). It prints the command that replays the run.

Ctrl-C or SIGTERM (a CI job cancelled) reaches the run once, as Ctrl-C: it runs in its own session
and the signal is forwarded, so the report of what was collected is still written.
"""

from __future__ import annotations

import argparse
import random
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import run_shape
from .cli import UsageError
from .faults.profile import ProfileError, load_profile
from .stack.cli import POSITIVE_INT, check_functions, check_parameters
from .stack.local_stack import DEFAULT_TEMPLATE

LOCUSTFILE = Path(__file__).resolve().parent.parent / "scenarios" / "relay.py"
FORWARDED = (signal.SIGINT, signal.SIGTERM)


def add_parser(sub: Any) -> None:
    chaos = sub.add_parser("chaos", help="one chaos run: profile + seed -> report and exit status",
                           description="One chaos run for CI: a profile and a seed in, a report and the "
                                       "verdict's exit status out (0 pass, 1 fail, 2 error, 3 inconclusive).")
    chaos.add_argument("--profile", required=True, help="chaos profile NAME (scenarios/profiles/) or FILE.toml")
    chaos.add_argument("--seed", type=int, help="seed of every fault decision (default: a random one, printed)")
    chaos.add_argument("--target", default="local",
                       help="`local` (the embedded local stack, the default) or the relay's ws:// or wss:// URL")
    chaos.add_argument("--ping-url", default="", help="with a --target: the relay's GET /ping URL")
    chaos.add_argument("--template", type=Path, help="with --target local: the SAM template of the relay to run")
    chaos.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE",
                       help="with --target local: a template parameter of the local stack (repeatable, as `up`)")
    chaos.add_argument("--function", action="append", default=[], metavar="NAME=URL",
                       help="with --target local: serve function NAME from a Lambda Invoke API endpoint (repeatable)")
    chaos.add_argument("--concurrency", type=POSITIVE_INT,
                       help="with --target local: concurrent invocations per function (as `up`)")
    chaos.add_argument("--out", type=Path, help="the run's folder (default: reports/<time>-...)")
    for key, kind in (("users", int), ("spawn_rate", float), ("duration", float), ("session_size", str),
                      ("cleanup_wait", float)):
        chaos.add_argument(f"--{key.replace('_', '-')}", type=kind, dest=key,
                           help=f"overrides the profile's {key} (default {run_shape.DEFAULTS[key]} when it has none)")
    chaos.add_argument("--short-expiry", action="store_const", const=True, dest="short_expiry",
                       help="the relay's clean-up runs during play (shortest expiries; default: as the profile says)")
    chaos.set_defaults(run=run)


def locust_command(args: argparse.Namespace, shape: dict[str, Any], seed: int) -> list[str]:
    """The headless Locust command line of the run (``shape``: every harness.run_shape key set)."""
    # --only-summary: the live line (harness/progress.py) takes the place of Locust's table every 2 s;
    # Locust's table is still printed once at the end, and kept in the run folder.
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
               "-u", str(int(shape["users"])), "-r", f"{shape['spawn_rate']:g}",
               "-t", f"{max(1, round(shape['duration']))}s", "--session-size", str(shape["session_size"]),
               "--chaos-profile", args.profile, "--seed", str(seed)]
    if shape["short_expiry"]:
        command.append("--short-expiry")
    if shape["cleanup_wait"]:
        command += ["--cleanup-wait", f"{shape['cleanup_wait']:g}"]
    if args.target != "local":
        command += ["--host", args.target]
    if args.ping_url:
        command += ["--ping-url", args.ping_url]
    command += _stack_words(args)
    if args.out:
        command += ["--run-dir", str(args.out)]
    return command


def _stack_words(args: argparse.Namespace) -> list[str]:
    """The local stack's options, as both the Locust run and ``chaos`` spell them."""
    words = ["--template", str(args.template)] if args.template else []
    for option in ("parameter", "function"):
        for value in getattr(args, option):
            words += [f"--{option}", value]
    if args.concurrency is not None:
        words += ["--concurrency", str(args.concurrency)]
    return words


def replay_command(args: argparse.Namespace, seed: int) -> str:
    """The ``relay-harness chaos`` command that repeats this run's fault decisions."""
    words = ["relay-harness", "chaos", "--profile", args.profile, "--seed", str(seed), *_stack_words(args)]
    for option in ("target", "ping_url", "users", "spawn_rate", "duration", "session_size",
                   "cleanup_wait"):
        value = getattr(args, option)
        if value not in (None, "", "local"):
            words += [f"--{option.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else str(value)]
    if args.short_expiry:
        words.append("--short-expiry")
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        raise UsageError(str(exc)) from None
    if args.target != "local" and not args.target.startswith(("ws://", "wss://")):
        raise UsageError(f"--target {args.target!r}: give `local` or the relay's ws:// or wss:// URL")
    if (args.template or args.parameter or args.function or args.concurrency is not None) and args.target != "local":
        raise UsageError("--template, --parameter, --function and --concurrency configure the local stack: "
                         "leave out --target")
    if args.target == "local":  # as `up` checks them, before anything starts
        check_parameters(args.template or DEFAULT_TEMPLATE, args.parameter)
        check_functions(args.function)
    overrides = {key: getattr(args, key) for key in run_shape.DEFAULTS if getattr(args, key) is not None}
    for key, value in overrides.items():  # the profile's own shape was validated as it was loaded
        try:
            run_shape.validate(key, value)
        except run_shape.ShapeError as exc:
            raise UsageError(f"--{key.replace('_', '-')}: {exc}") from None
    shape = {key: overrides.get(key, profile.run.get(key, default)) for key, default in run_shape.DEFAULTS.items()}
    seed = args.seed if args.seed is not None else profile.seed if profile.seed is not None else random.randrange(
        2**31)
    where = "the embedded local stack" if args.target == "local" else args.target
    print(f"relay-harness chaos: profile {profile.name}, seed {seed}: {shape['users']:g} players "
          f"({shape['spawn_rate']:g}/s) for {shape['duration']:g} s in sessions of {shape['session_size']}"
          f"{', clean-up during play' if shape['short_expiry'] or shape['cleanup_wait'] else ''}, against {where}",
          flush=True)
    status = _run_forwarding_signals(locust_command(args, shape, seed))
    print(f"relay-harness chaos: exit {status}; replay: {replay_command(args, seed)}", flush=True)
    return status


def _run_forwarding_signals(command: list[str]) -> int:
    """Run ``command`` in its own session; Ctrl-C / SIGTERM here is passed on as one SIGINT, and the
    run's own handling (its report of what was collected) decides when it ends."""
    process = subprocess.Popen(command, start_new_session=True)

    def forward(_signum: int, _frame: Any) -> None:
        process.send_signal(signal.SIGINT)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        status = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status if status >= 0 else 128 - status

"""``relay-harness``: one entry point, one subcommand per part of the pipeline.

Errors a user can fix (a busy port, a missing template, a bad fault spec) are printed as one
line on stderr with exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__

# Each module defines ``add_parser(subparsers)``, whose parser sets ``run`` (args -> exit status).
SUBCOMMAND_MODULES: tuple[str, ...] = ("harness.stack.cli", "harness.proxy.cli", "harness.report.cli",
                                        "harness.chaos", "harness.faults.fis", "harness.report.compare",
                                        "harness.lambda_faults")


class UsageError(Exception):
    """A problem with what the user asked for, with a one-line message that says how to fix it."""


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line naming the (sub)command, never a usage block; exit status 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subcommands: dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="relay-harness", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"relay-harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    parser.subcommands = sub.choices
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the subcommand's parser, so the message names it
        parser.subcommands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except UsageError as exc:
        print(f"relay-harness {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The `irstdlab` command line.

Each command group lives in its own ``cli_<group>`` module exposing
``register(subparsers)``; every module imports heavy libraries (torch, Ray) only
inside its handlers so that ``irstdlab --help`` and ``irstdlab data ...`` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

# Order = order in `irstdlab --help`.
COMMAND_MODULES = (
    "irstdlab.harness.cli_data",
    "irstdlab.harness.cli_models",
    "irstdlab.harness.cli_train",
    "irstdlab.harness.cli_search",
    "irstdlab.harness.cli_reproduce",
    "irstdlab.harness.cli_leaderboard",
    "irstdlab.harness.cli_dashboard",
)


def package_version() -> str:
    try:
        return metadata.version("irstdlab")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    from irstdlab.harness.cli_args import OneLineParser

    parser = OneLineParser(
        prog="irstdlab",
        description="Search, train and benchmark infrared small target detectors.",
    )
    parser.add_argument("--version", action="version", version=f"irstdlab {package_version()}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks instead of one-line errors"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)  # a missing group is a broken install: raise
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0 if args.command is None else 2
    from irstdlab.harness.errors import user_error_types

    try:
        return int(args.handler(args) or 0)
    except user_error_types() as exc:
        if args.debug:
            raise
        print(f"irstdlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("irstdlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `irstdlab ... | head`: the reader left; nothing to report
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except OSError as exc:  # a path the up-front checks could not foresee (disk full, permissions)
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"irstdlab: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2


def entry() -> None:  # pragma: no cover - thin wrapper for the console script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

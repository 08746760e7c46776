"""Shared argparse pieces: numeric option types with range checks, and a one-line error parser.

A type built here turns a bad value into argparse's ``argument --x: <problem>``; the parser
prints that as one line (exit 2) instead of the usage block, like every other input error.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """``error`` prints one line naming the command and the problem, then exits 2."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())  # argparse messages can span lines
        self.exit(2, f"{self.prog}: error: {text} (see {self.prog} --help)\n")


def _bounds(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    def show(x: float) -> str:
        return str(x) if isinstance(x, int) else f"{x:g}"

    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {show(lo)}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {show(hi)}")
    return " and ".join(parts)


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in [lo, hi] (either bound optional)."""
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be an integer {_bounds(lo, hi, False, False)}, got {text}")
        return value

    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


def float_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                hi_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number within the bounds (open or closed)."""
    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        too_low = lo is not None and (value <= lo if lo_open else value < lo)
        too_high = hi is not None and (value >= hi if hi_open else value > hi)
        if not math.isfinite(value) or too_low or too_high:
            raise argparse.ArgumentTypeError(
                f"must be a finite number {_bounds(lo, hi, lo_open, hi_open)}, got {text}".rstrip())
        return value

    parse.__name__ = "number"
    return parse


def resource_amount(allow_zero: bool) -> Callable[[str], float]:
    """argparse type: a Ray resource request (CPUs or GPUs per worker): finite, at most 1024, and
    a multiple of 0.0001 (Ray's granularity for fractional resources); 0 only if ``allow_zero``."""
    bounded = float_range(0.0, 1024.0, lo_open=not allow_zero)

    def parse(text: str) -> float:
        value = bounded(text)
        if value and (value < RESOURCE_STEP or abs(round(value, 4) - value) > 1e-12):
            raise argparse.ArgumentTypeError(f"must be {'0 or ' if allow_zero else ''}a multiple of "
                                             f"{RESOURCE_STEP:g} (Ray's smallest resource unit), got {text}")
        return value

    parse.__name__ = "number"
    return parse


RESOURCE_STEP = 0.0001
# the options most commands share
POSITIVE_INT = int_range(1)
NON_NEGATIVE_INT = int_range(0)
SEED = int_range(0, 2**32 - 1)  # numpy and Optuna seed ranges
MAX_CPUS = int_range(1, 1 << 16)
WORKERS = int_range(1, 1024)
GPUS = resource_amount(allow_zero=True)
CPUS = resource_amount(allow_zero=False)

__all__ = ["CPUS", "GPUS", "MAX_CPUS", "NON_NEGATIVE_INT", "POSITIVE_INT", "SEED", "WORKERS", "OneLineParser",
           "float_range", "int_range", "resource_amount"]

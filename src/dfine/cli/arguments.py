"""Shared by the command lines: argument types (argparse turns their errors into one ``error:`` line) and the one
way a command reports what went wrong."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

__all__ = ["number_in", "run_reporting_errors", "score_threshold"]


def run_reporting_errors(prog: str, run: Callable[[], int]) -> int:
    """``run()``'s exit status; a mistake in what the user gave (ValueError, OSError) ends as one line
    ``PROG: error: ...`` and status 2, a run that started and cannot go on (NaN, disk full) as one line and status 1.
    """
    from ..engine.trainer import TrainingStopped  # here: train.py's start-up stays light

    try:
        return run()
    except (ValueError, OSError) as err:
        print(f"{prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except TrainingStopped as err:
        print(f"{prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1


def number_in(
    low: float, high: float | None = None, meaning: str = "", whole: bool = False
) -> Callable[[str], float | int]:
    """An argparse ``type``: a number (``whole``: an integer) in ``[low, high]`` (no upper bound when None).

    ``meaning`` ends the out-of-range message, e.g. ``"AP points"``.
    """
    kind = "a whole number" if whole else "a number"
    bounds = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
    unit = f" {meaning}" if meaning else ""

    def parse(text: str) -> float | int:
        try:
            value = int(text) if whole else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind} {bounds}{unit}, got {text!r}") from None
        if not (low <= value and (high is None or value <= high)):
            raise argparse.ArgumentTypeError(f"must be {bounds}{unit}, got {text}")
        return value

    return parse


score_threshold = number_in(0.0, 1.0, "(a score threshold)")
score_threshold.__doc__ = "A ``--conf`` value: a number in [0, 1]."

"""Shared by the command lines: argument types (argparse turns their errors into one ``error:`` line) and the one
way a command reports what went wrong."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

__all__ = ["run_reporting_errors", "score_threshold"]


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


def score_threshold(text: str) -> float:
    """A ``--conf`` value: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1] (a score threshold), got {text}")
    return value

"""Argument types shared by the command lines (argparse turns their errors into one ``error:`` line)."""

from __future__ import annotations

import argparse

__all__ = ["score_threshold"]


def score_threshold(text: str) -> float:
    """A ``--conf`` value: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1] (a score threshold), got {text}")
    return value

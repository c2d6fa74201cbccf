"""The command lines' shared argument types: one line naming the value and the accepted range."""

from __future__ import annotations

import argparse
import re

import pytest

from dfine.cli.arguments import number_in, score_threshold


@pytest.mark.parametrize(
    ("parse", "text", "said"),
    [
        (score_threshold, "1.5", "must be between 0 and 1 (a score threshold), got 1.5"),
        (score_threshold, "high", "must be a number between 0 and 1 (a score threshold), got 'high'"),
        (number_in(1, whole=True, meaning="(images)"), "0", "must be at least 1 (images), got 0"),
        (number_in(1, whole=True), "2.5", "must be a whole number at least 1, got '2.5'"),
        (number_in(0.0, 100.0, "AP points"), "-1", "must be between 0 and 100 AP points, got -1"),
    ],
)
def test_out_of_range_and_non_numbers_are_refused_with_the_range(parse, text, said):
    with pytest.raises(argparse.ArgumentTypeError, match=f"^{re.escape(said)}$"):
        parse(text)


def test_accepted_values_keep_their_type():
    assert score_threshold("0") == 0.0 and score_threshold("1") == 1.0
    whole = number_in(1, whole=True)("12")
    assert whole == 12 and isinstance(whole, int)
    assert number_in(0.0, 100.0)("0.5") == 0.5

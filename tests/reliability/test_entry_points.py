"""Every case of :mod:`tests.reliability.cases` ends clearly: one line naming what, where and the fix."""

from __future__ import annotations

import pytest

from tests.reliability.cases import CASES, extra_problem, run_case
from tests.reliability.conftest import record


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_case_ends_clearly(case, workspace, tmp_path):
    outcome = run_case(case, workspace, tmp_path)
    harm = extra_problem(case, workspace, tmp_path)
    kind = "silent" if harm else outcome.kind
    record(case.id, kind, harm or outcome.message or "(accepted)")
    assert kind == "clear", f"{outcome.kind}: {harm or outcome.message}"

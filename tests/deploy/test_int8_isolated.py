"""Runs ``test_int8.py`` in a pytest process of its own (see ``conftest.py``: in-process it corrupted the heap)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import INT8_CHILD_ENV, REPO_ROOT

pytest.importorskip("nncf")


@pytest.mark.slow
def test_int8_tests_pass_in_their_own_process():
    module = Path(__file__).with_name("test_int8.py")
    env = {**os.environ, INT8_CHILD_ENV: "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout

"""Shared test fixtures: the official-code oracle files live in ``tests/fixtures/official`` (its README says how
they were recorded); ``DFINE_FIXTURES`` points the tests at another copy."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = Path(os.environ.get("DFINE_FIXTURES", REPO_ROOT / "tests" / "fixtures" / "official"))


def _require(path: Path) -> Path:
    """The oracle file, or a FAILED test: the fidelity proof travels with the code and is never skipped."""
    if not path.exists():
        pytest.fail(f"official fixture {path} is missing: restore tests/fixtures/official (or set DFINE_FIXTURES)")
    return path


def pytest_addoption(parser: pytest.Parser) -> None:
    # here, not in tests/reliability/conftest.py: options must be known when pytest starts from the repo root
    parser.addoption("--reliability-table", metavar="PATH", help="write the reliability case table here (Markdown)")


@pytest.fixture(autouse=True)
def _allocator_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI commands called in this process leave glibc's settings alone (tests/test_memory.py runs them)."""
    monkeypatch.setenv("DFINE_KEEP_FREED_MEMORY", "0")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return _require(FIXTURES_DIR)


@pytest.fixture(scope="session")
def fixture_images(fixtures_dir: Path) -> torch.Tensor:
    """The fixed official test input, float [2, 3, 640, 640] in [0, 1]."""
    data = torch.load(fixtures_dir / "fixture_input.pt", weights_only=False)
    return data["images_uint8"].float() / 255


@pytest.fixture(scope="session")
def official_n_weights(fixtures_dir: Path) -> Path:
    return _require(fixtures_dir / "official_n_weights.pth")


@pytest.fixture(scope="session")
def official_n_outputs(fixtures_dir: Path) -> dict:
    return torch.load(_require(fixtures_dir / "official_n_outputs.pt"), weights_only=False)


@pytest.fixture(autouse=True, scope="session")
def _two_threads():
    torch.set_num_threads(2)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # no access log on the test output
        pass


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A fresh folder served over HTTP on 127.0.0.1 (never the internet): (base URL, folder)."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=folder))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()

"""The reliability suite: shared files, the ``reliability`` marker, and the case table.

``pytest tests/reliability --reliability-table PATH`` writes the outcome of every case (entry-point inputs and
injected faults) as a Markdown table for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from dfine.data.synthetic import SynthConfig, generate_synthetic_dataset
from tests.engine.conftest import IMAGE_SIZE, tiny_config
from tests.reliability.cases import Workspace

_OUTCOMES: list[tuple[str, str, str]] = []  # (group: case, kind, message) in the order they ran


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.reliability)


def record(case_id: str, kind: str, message: str) -> None:
    """Keep one case's outcome for the table (tests that are not table cases record themselves too)."""
    _OUTCOMES.append((case_id, kind, message))


_RUN_MODULES = {
    "tests.reliability.test_faults",
    "tests.reliability.test_interrupted_runs",
    "tests.reliability.test_distributed_evaluation",
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Injected faults and kills join the table: the test's docstring, and the line the user read."""
    report = (yield).get_result()
    if report.when != "call" or getattr(item, "module", None) is None or item.module.__name__ not in _RUN_MODULES:
        return
    what = (item.function.__doc__ or item.name).strip().splitlines()[0]
    param = f" [{item.callspec.id}]" if hasattr(item, "callspec") else ""
    said = dict(item.user_properties).get("message", "")
    failure = str(report.longrepr).strip().splitlines()[-1] if report.failed else ""
    record(f"run: {what}{param}", "clear" if report.passed else "FAILED", said if report.passed else failure)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--reliability-table", default=None)
    if not path or not _OUTCOMES:
        return
    counts = Counter(kind for _, kind, _ in _OUTCOMES)
    lines = [
        f"{len(_OUTCOMES)} tried: "
        + ", ".join(f"{counts[k]} {k}" for k in ("clear", "vague", "trace", "silent", "FAILED")),
        "",
        "| case | outcome | what the user reads |",
        "| --- | --- | --- |",
    ]
    for case_id, kind, message in _OUTCOMES:
        shown = re.sub(r"/\S*/(pytest-\d+|reliability\d*|test_\w+?\d*)/", ".../", message).replace("|", "\\|")
        lines.append(f"| {case_id} | {kind} | {shown[:220]} |")
    Path(path).write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reliability_data")
    generate_synthetic_dataset(root, SynthConfig(num_train=6, num_val=3, image_size=IMAGE_SIZE, min_object_size=16))
    return root


@pytest.fixture(scope="module")
def tiny_config_file(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The engine tests' tiny 2-epoch config (its output_dir is replaced by each test's --output-dir)."""
    path = tmp_path_factory.mktemp("config") / "tiny.yml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_data, path.parent / "run")))
    return path


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, official_n_weights: Path) -> Workspace:
    """A tiny COCO set and a trained 1-epoch run of the tiny config (last.pth, best.pth, checkpoint0000.pth)."""
    from dfine.cli.train import main as train_main

    root = tmp_path_factory.mktemp("reliability")
    data = tiny_data
    config = root / "run.yml"
    config.write_text(yaml.safe_dump(tiny_config(data, root / "run", epoches=1)))
    assert train_main(["-c", str(config), "--seed", "0"]) == 0
    return Workspace(data=data, run=root / "run", official_n=official_n_weights)

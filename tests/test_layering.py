"""The package's layering (README, "How we write code"): lower parts never import higher ones."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dfine"

# part -> parts (top-level modules or sub-packages of dfine) it must not import
FORBIDDEN = {
    "ops": {"model", "losses", "engine", "data", "config", "deploy", "cli", "predictor", "loading", "hub"},
    "model": {"data", "losses", "engine", "deploy", "cli", "predictor", "loading", "hub"},
    "losses": {"engine", "data", "deploy", "cli", "predictor", "loading"},
    "config": {"engine", "data", "deploy", "cli", "predictor", "loading"},
    "data": {"engine", "model", "losses", "deploy", "cli", "predictor", "loading"},
    "engine": {"deploy", "cli", "predictor"},
}


def _imported_parts(file: Path) -> set[str]:
    """The top-level parts of ``dfine`` that ``file`` imports (relative and absolute imports)."""
    parts = file.relative_to(PACKAGE).parts
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(parts[:-1])[: len(parts) - node.level] if node.level > 1 else list(parts[:-1])
            target = base + (node.module.split(".") if node.module else [])
            names = [target] if node.module or base else [[alias.name] for alias in node.names]
            found.update(name[0] for name in names if name)
            if not base and not node.module:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dfine."):
            found.add(node.module.split(".")[1])
    return found


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_lower_parts_do_not_import_higher_ones(part):
    offenders = {
        str(file.relative_to(PACKAGE)): sorted(_imported_parts(file) & FORBIDDEN[part])
        for file in (PACKAGE / part).rglob("*.py")
    }
    assert not {name: parts for name, parts in offenders.items() if parts}


def test_dataset_formats_do_not_import_each_other_in_a_circle():
    imports = {name: _imported_parts(PACKAGE / "data" / f"{name}.py") for name in ("coco", "yolo", "voc", "layout")}
    data_modules = {
        name: {
            node.module.split(".")[0]
            for node in ast.walk(ast.parse((PACKAGE / "data" / f"{name}.py").read_text()))
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        }
        for name in imports
    }
    assert not data_modules["coco"] & {"yolo", "voc", "layout"}
    assert not data_modules["yolo"] & {"coco", "voc", "layout"} and not data_modules["voc"] & {"coco", "yolo", "layout"}

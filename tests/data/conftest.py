"""Fixtures of the data tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .coco_helpers import coco_factory


@pytest.fixture
def make_coco(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """A tiny COCO dataset writer rooted in ``tmp_path`` (see :func:`coco_helpers.coco_factory`)."""
    return coco_factory(tmp_path)

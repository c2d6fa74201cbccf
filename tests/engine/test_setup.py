"""Config -> run wiring details."""

from __future__ import annotations

import dataclasses
import json

from dfine.config.schema import TrainConfig
from dfine.engine.setup import _label_map


def _cfg(num_classes: int) -> TrainConfig:
    cfg = TrainConfig()
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=num_classes))


def test_label_map_is_contiguous_unless_num_classes_counts_ids(tmp_path):
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": [
        {"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 5, "name": "c"}]}))  # fmt: skip
    contiguous = _label_map(_cfg(3), str(ann))
    assert contiguous.category_ids == (1, 2, 5)
    identity = _label_map(_cfg(6), str(ann))  # Objects365 style: num_classes = largest id + 1
    assert identity.category_ids == tuple(range(6)) and identity.class_names[5] == "c"

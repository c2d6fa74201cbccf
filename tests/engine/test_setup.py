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


def test_cpu_amp_falls_back_to_fp32_without_native_bf16(tiny_config_file, tmp_path, monkeypatch, caplog):
    import dfine.engine.setup as setup
    from dfine.config.schema import load_train_config

    cfg = dataclasses.replace(load_train_config(tiny_config_file), use_amp=True)
    for native, expected in ((False, False), (True, True)):
        monkeypatch.setattr(setup, "cpu_has_native_bf16", lambda native=native: native)
        caplog.clear()
        with caplog.at_level("INFO", logger="dfine"):
            trainer, _ = setup.build_trainer(
                cfg, setup.RunOptions(device="cpu", output_dir=str(tmp_path / str(native)))
            )
        assert trainer.options.use_amp is expected
        said = "no native bfloat16" in caplog.text
        assert said is not expected

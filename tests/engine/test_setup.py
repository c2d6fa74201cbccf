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


def test_the_trainer_uses_the_training_paths_and_says_its_threads(tiny_config_file, tmp_path, caplog):
    import torch

    import dfine.engine.setup as setup
    from dfine.config.schema import load_train_config
    from dfine.engine.ema import unwrap_model
    from dfine.model.fast_paths import TrainingConvBNAct

    before = torch.get_num_threads()
    try:
        with caplog.at_level("INFO", logger="dfine"):
            trainer, _ = setup.build_trainer(
                load_train_config(tiny_config_file), setup.RunOptions(device="cpu", output_dir=str(tmp_path), threads=1)
            )
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert "CPU threads: 1 intra-op (--threads" in caplog.text
    kinds = {type(m) for m in unwrap_model(trainer.model).modules()}
    assert TrainingConvBNAct in kinds  # the tiny config's B0 uses LAB
    images, _ = next(iter(trainer.train_loader))
    assert images.dtype == torch.uint8  # converted on the device by the trainer


def test_cuda_loaders_pin_and_keep_their_workers_cpu_loaders_start_fresh():
    import torch

    from dfine.config.schema import LoaderConfig
    from dfine.data.epoch_random import EpochSeededDataset
    from dfine.data.schedule import AugmentationSchedule
    from dfine.engine.setup import _loader

    class Items(torch.utils.data.Dataset):
        schedule = AugmentationSchedule()

        def __len__(self) -> int:
            return 4

    config = dataclasses.replace(LoaderConfig(), total_batch_size=2, num_workers=2)
    cuda_train = _loader(Items(), config, True, 0, torch.device("cuda"))  # built, not iterated: no GPU needed
    assert cuda_train.pin_memory and cuda_train.persistent_workers
    assert isinstance(cuda_train.dataset, EpochSeededDataset) and cuda_train.dataset.seed == 0
    sampler = cuda_train.sampler  # an order of (seed, epoch) alone, set each epoch
    assert isinstance(sampler, torch.utils.data.DistributedSampler) and sampler.num_replicas == 1
    assert sampler.shuffle and sampler.seed == 0 and cuda_train.generator is not None
    cuda_val = _loader(Items(), config, False, 0, torch.device("cuda"))
    assert cuda_val.pin_memory and cuda_val.persistent_workers and isinstance(cuda_val.dataset, Items)
    cpu_train = _loader(Items(), config, True, 0, torch.device("cpu"))
    assert not cpu_train.pin_memory and not cpu_train.persistent_workers and isinstance(cpu_train.dataset, Items)
    assert isinstance(cpu_train.sampler, torch.utils.data.RandomSampler) and cpu_train.generator is None
    no_workers = _loader(Items(), dataclasses.replace(config, num_workers=0), True, 0, torch.device("cuda"))
    assert no_workers.pin_memory and not no_workers.persistent_workers

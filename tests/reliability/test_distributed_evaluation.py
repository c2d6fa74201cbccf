"""Distributed evaluation scores each val image once, whatever the set size and world size."""

from __future__ import annotations

import json
import os

NUM_VAL_IMAGES = 7  # not a multiple of the 2 ranks: DistributedSampler pads with image 0


def _ground_truth() -> dict:
    images = [{"id": 10 + i, "file_name": f"{i}.jpg", "width": 100, "height": 100} for i in range(NUM_VAL_IMAGES)]
    annotations = [
        {"id": i + 1, "image_id": 10 + i, "category_id": 1 + i % 2, "bbox": [10.0 + i, 20.0, 30.0, 40.0],
         "area": 1200.0, "iscrowd": 0}
        for i in range(NUM_VAL_IMAGES)
    ]  # fmt: skip
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }


def _result(index: int) -> dict:
    """One near-hit and one miss per image, scores varying by image (so AP is neither 0 nor 1)."""
    import torch

    hit = [10.0 + index + index % 3, 20.0, 40.0 + index, 60.0]
    return {
        "boxes": torch.tensor([hit, [60.0, 60.0, 90.0, 95.0]]),
        "scores": torch.tensor([0.3 + 0.1 * index, 0.9 - 0.1 * index]),
        "labels": torch.tensor([index % 2, (index + 1) % 2]),
    }


def _evaluate_on_rank(rank: int, world_size: int, port: int, out_file: str) -> None:
    import torch.distributed as dist
    from torch.utils.data import DistributedSampler

    from dfine.engine.evaluate import CocoEvaluator

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        evaluator = CocoEvaluator(_ground_truth(), label_to_category=[1, 2])
        for index in DistributedSampler(range(NUM_VAL_IMAGES), num_replicas=world_size, rank=rank, shuffle=False):
            evaluator.update([10 + index], [_result(index)])
        evaluator.gather()
        if rank == 0:
            stats = evaluator.compute(verbose=False).as_list()
            with open(out_file, "w") as handle:
                json.dump({"stats": stats, "detections": len(evaluator.detections)}, handle)
    finally:
        dist.destroy_process_group()


def test_two_rank_evaluation_equals_one_process_on_an_odd_val_set(tmp_path, record_property):
    """2 gloo ranks evaluate 7 val images (the sampler pads with a repeat)"""
    import socket

    import torch.multiprocessing as mp

    from dfine.engine.evaluate import CocoEvaluator

    single = CocoEvaluator(_ground_truth(), label_to_category=[1, 2])
    for index in range(NUM_VAL_IMAGES):
        single.update([10 + index], [_result(index)])
    expected = single.compute(verbose=False).as_list()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out_file = tmp_path / "rank0.json"
    mp.spawn(_evaluate_on_rank, args=(2, port, str(out_file)), nprocs=2, join=True)
    gathered = json.loads(out_file.read_text())
    assert gathered["detections"] == len(single.detections) == 2 * NUM_VAL_IMAGES
    assert gathered["stats"] == expected
    assert 0.0 < expected[0] < 1.0
    record_property("message", f"{gathered['detections']} detections, AP {expected[0]:.4f}: equal to one process")

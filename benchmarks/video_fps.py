"""End-to-end video FPS of detection + tracking on CPU, and the share of each stage.

A 640x360 clip of moving shapes is generated (``--frames`` frames at 25 fps), then read, detected, tracked, drawn and
written back frame by frame (batch 1, as a live stream would be) through the library's own pieces:
``VideoReader`` (decode), ``runtime.preprocess`` (resize + tensor), the backend (model: backbone, encoder, decoder
and the post-processor's top-k inside the deployed graph), ``to_predictions`` (postprocess: threshold, clip, names),
``Tracker.update`` (ByteTrack), ``Prediction.draw`` (draw: boxes, ids, trails) and ``VideoWriter`` (encode). Every
stage is timed with ``perf_counter`` on every frame; the first ``--warmup`` frames are not counted.

Backends: ``torch`` (the checkpoint) and ``openvino`` (IR converted from the ONNX export of the same weights), both
fp32 at 640x640 with ``--threads`` threads. The N model loads the official weights from the test fixtures (COCO
classes: the shapes are scored as whatever COCO class they resemble, which is what a deployed COCO model does).

Usage::

    python benchmarks/video_fps.py --frames 150 --threads 2 [--json out.json]
    python benchmarks/video_fps.py --frames 150 --threads 2 --conf 0.02 --activation 0.02   # many tracks: stress
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from dfine.deploy import OpenVINOBackend, TorchBackend, export_onnx, export_openvino
from dfine.deploy.runtime import BackendDetector, preprocess
from dfine.deploy.video import VideoReader, VideoWriter
from dfine.deploy.wrapper import load_deploy_model
from dfine.prediction import to_predictions
from dfine.predictor import RandomWeightsWarning
from dfine.tracking import Tracker, Trails

WIDTH, HEIGHT, FPS = 640, 360, 25.0
STAGES = ("decode", "preprocess", "model", "postprocess", "tracking", "draw", "encode")
ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "tests" / "fixtures" / "official" / "official_n_weights.pth"
CONFIG = ROOT / "configs" / "dfine" / "dfine_hgnetv2_n_coco.yml"


def write_clip(path: Path, frames: int) -> Path:
    """A 640x360 clip: four shapes (a car-like block, a ball, a person-like bar, a box) crossing a street scene."""
    rng = np.random.default_rng(0)
    shapes = [  # colour, start xy, velocity px/frame, size wh, kind
        ((200, 30, 40), (10, 250), (4.0, 0.0), (150, 60), "rectangle"),
        ((240, 200, 40), (600, 60), (-3.0, 1.0), (50, 50), "ellipse"),
        ((40, 60, 200), (300, 120), (1.0, 0.5), (35, 110), "rectangle"),
        ((90, 160, 70), (450, 220), (-2.0, -1.0), (80, 80), "rectangle"),
    ]
    with VideoWriter(path, FPS, (WIDTH, HEIGHT)) as writer:
        for t in range(frames):
            image = Image.new("RGB", (WIDTH, HEIGHT), (135, 190, 235))
            draw = ImageDraw.Draw(image)
            draw.rectangle((0, 230, WIDTH, HEIGHT), fill=(90, 90, 95))
            for color, (x, y), (vx, vy), (w, h), kind in shapes:
                x0, y0 = (x + vx * t) % (WIDTH + w) - w, y + vy * t
                getattr(draw, kind)((x0, y0, x0 + w, y0 + h), fill=color)
            noise = rng.integers(-6, 7, (HEIGHT, WIDTH, 3))
            writer.write(Image.fromarray(np.clip(np.asarray(image, np.int16) + noise, 0, 255).astype(np.uint8)))
    return path


def run_clip(backend, clip: Path, out: Path, warmup: int, conf: float, activation: float | None) -> dict:
    """Seconds per stage (summed over the counted frames), frames counted, detections and tracks seen."""
    detector = BackendDetector(backend)
    side = detector.image_size
    seconds = dict.fromkeys(STAGES, 0.0)
    counted = detections = 0
    track_ids: set[int] = set()
    with VideoReader(clip) as reader, VideoWriter(out, reader.fps, reader.size) as writer:
        options = (
            {}
            if activation is None
            else {"track_activation_threshold": activation, "high_conf_det_threshold": activation}
        )
        tracker, trails, frames = Tracker("bytetrack", frame_rate=reader.fps, **options), Trails(), iter(reader)
        for index in range(reader.frame_count):
            marks = [time.perf_counter()]
            image = next(frames)
            marks.append(time.perf_counter())
            inputs, sizes = preprocess([image], side)
            marks.append(time.perf_counter())
            outputs = backend(inputs, sizes)
            marks.append(time.perf_counter())
            (prediction,) = to_predictions(outputs, [image], [None], conf, detector.class_names, detector.category_ids)
            marks.append(time.perf_counter())
            tracked = tracker.update(prediction)
            marks.append(time.perf_counter())
            drawn = tracked.draw(trails.update(tracked))
            marks.append(time.perf_counter())
            writer.write(drawn)
            marks.append(time.perf_counter())
            if index >= warmup:
                counted += 1
                detections += len(prediction)
                track_ids.update(tracked.track_ids.tolist())
                for stage, start, end in zip(STAGES, marks, marks[1:]):
                    seconds[stage] += end - start
    return {"seconds": seconds, "frames": counted, "detections": detections, "tracks": len(track_ids)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--conf", type=float, default=0.1, help="detections given to the tracker (dfine track's)")
    parser.add_argument(
        "--activation", type=float, help="ByteTrack's activation and high-score thresholds (default: its 0.7 / 0.6)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        model, metadata = load_deploy_model(CONFIG, WEIGHTS)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        clip = write_clip(work / "clip.mp4", args.frames)
        onnx_file = export_onnx(model, work / "n.onnx", metadata).path
        backends = {
            "torch": TorchBackend(model, metadata, "cpu"),
            "openvino": OpenVINOBackend(export_openvino(onnx_file, work / "n.xml", metadata), threads=args.threads),
        }
        for name, backend in backends.items():
            result = run_clip(backend, clip, work / f"{name}.mp4", args.warmup, args.conf, args.activation)
            total = sum(result["seconds"].values())
            shares = "  ".join(f"{stage} {100 * s / total:4.1f}%" for stage, s in result["seconds"].items())
            print(
                f"{name:9s} {result['frames'] / total:5.2f} FPS ({1e3 * total / result['frames']:.1f} ms/frame, "
                f"{result['detections'] / result['frames']:.1f} det/frame, {result['tracks']} tracks)  {shares}"
            )
            results[name] = result
    info = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "threads": args.threads,
        "load_1min_before_after": [load_before, os.getloadavg()[0]],
        "results": results,
    }
    print(f"load (1 min) before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()

"""``dfine track``: detect and track objects in a video, a folder of frames, a camera or a stream.

Writes ``OUT/<name>.mp4`` (boxes labelled ``#id``, coloured by track, with trails) and ``OUT/<name>.txt`` in MOT
format (``frame,id,x,y,w,h,score,class``, frames from 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from ..config.presets import available_sizes
from ..deploy.video import VideoWriter, is_capture_source, is_video, video_frame_rate
from ..memory import keep_freed_memory
from ..tracking import TRACKERS, Trails, write_mot
from .arguments import score_threshold

__all__ = ["add_track_command"]


def add_track_command(commands: argparse._SubParsersAction) -> None:
    """Register ``dfine track`` on the ``dfine`` sub-command parser."""
    parser = commands.add_parser("track", help="track objects in a video / frames / camera / stream")
    parser.add_argument("--weights", help="checkpoint, HF folder, URL or zoo name; without it: RANDOM weights")
    parser.add_argument(
        "--size", type=str.lower, choices=available_sizes(), help="model size (default: from --weights)"
    )
    parser.add_argument("--source", required=True, help="video file, folder of frames, camera index or stream URL")
    parser.add_argument("--out", type=Path, required=True, help="output folder (annotated video + MOT text)")
    parser.add_argument("--tracker", choices=tuple(TRACKERS), default="bytetrack", help="default: bytetrack")
    parser.add_argument(
        "--conf",
        "--conf-threshold",
        dest="conf",
        type=score_threshold,
        default=0.1,
        help="detections given to the tracker, conf_threshold in DFINE.track (0.1)",
    )
    parser.add_argument("--image-size", type=int, help="model input side, a multiple of 32 (default: the model's)")
    parser.add_argument("--trail", type=int, default=30, help="frames of trail drawn per track (default 30)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if available, else cpu)")
    parser.set_defaults(run=_run_track)


def _run_track(args: argparse.Namespace) -> int:
    from .main import _load_detector  # the predict command's loading (weights or loud random weights)

    source = args.source
    if not is_capture_source(source):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"--source {path} does not exist (a video, a folder of frames, a camera or URL)")
        if path.is_file() and not is_video(path):
            raise ValueError(f"--source {path} is not a video; pass a video, a folder of frames, a camera or URL")
    name = "camera" if str(source).isdigit() else Path(str(source).rstrip("/")).stem or "stream"
    fps = video_frame_rate(source) if is_capture_source(source) or is_video(source) else 25.0
    detector = _load_detector(args)
    if detector.device.type == "cpu":
        print(keep_freed_memory().describe(), file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    video_path, mot_path = args.out / f"{name}.mp4", args.out / f"{name}.txt"
    tracks, frames, start = set(), 0, time.perf_counter()
    trails = Trails(args.trail)
    writer = None
    with mot_path.open("w") as mot, tqdm(unit="frame", desc=name) as bar:
        for prediction in detector.track(source, args.tracker, args.conf, args.image_size, frame_rate=fps):
            write_mot(mot, prediction)
            tracks.update(prediction.track_ids.tolist())
            frame = prediction.draw(trails.update(prediction))
            writer = writer or VideoWriter(video_path, fps, frame.size)
            writer.write(frame if frame.size == writer.size else frame.resize(writer.size))
            frames += 1
            bar.update(1)
    if writer is not None:
        writer.close()
    if frames == 0:
        raise ValueError(f"--source {source}: no frames were read")
    seconds = time.perf_counter() - start
    print(f"{name}: {frames} frames, {len(tracks)} tracks, {frames / seconds:.1f} frames/s -> {video_path}, {mot_path}")
    return 0

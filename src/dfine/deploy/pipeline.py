"""Run a detector over images, folders and videos; write annotated copies and COCO-style JSON.

Used by ``dfine predict`` and the ``tools/inference/*_inf.py`` scripts, whatever the backend. Inputs are image
and video files, folders of them, glob patterns (``"shots/**/*.jpg"``) and ``http(s)`` image URLs (downloaded
into memory as they are reached; the annotated copy takes the URL's file name). Output folder layout::

    OUT/<image name>          annotated copy of each image (names made unique)
    OUT/<video stem>.mp4      annotated copy of each video
    OUT/predictions.json      one COCO results entry per detection: image_id, category_id,
                              bbox [x, y, w, h] in pixels, score (plus label, names, file / frame)
    OUT/image_ids.json        the image_id given to each file (and video frame), when no
                              annotation file supplied them

``category_id`` is the dataset's category id of the label, as stored with the model (a dfine
checkpoint's category map; COCO's ids for the 80 COCO classes of the official models).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ..data.images import (
    IMAGE_EXTENSIONS,
    ResizeMode,
    check_resize,
    glob_files,
    is_glob,
    is_url,
    read_url_image,
)
from ..drawing import resolve_style
from .runtime import BackendDetector
from .video import VIDEO_EXTENSIONS, VideoReader, VideoWriter, is_video

__all__ = [
    "InferenceRun",
    "check_inputs",
    "image_ids_from_annotations",
    "collect_sources",
    "run_inference",
    "unique_path",
]

RESULTS_FILE = "predictions.json"
IMAGE_IDS_FILE = "image_ids.json"


ImageSource = Path | str  # an image file, or the http(s) URL of one


def check_inputs(sources: Sequence[str | Path], out_dir: str | Path) -> tuple[list[ImageSource], list[Path]]:
    """:func:`collect_sources`, refusing an output folder that holds an input (it would be overwritten)."""
    image_files, video_files = collect_sources(sources)
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"the output folder {out_dir} is a file; choose a folder for the results (--out)")
    for path in (*image_files, *video_files):
        if isinstance(path, Path) and path.resolve().parent == out_dir:
            raise ValueError(f"the output folder {out_dir} holds the input {path}; choose another output folder")
    return image_files, video_files


def image_ids_from_annotations(ann_file: str | Path) -> dict[str, int]:
    """``file name -> image id`` of a COCO annotation file (its ``images[].file_name`` / ``id``).

    Keys are the base names, so any folder layout of the images matches.

    Raises:
        FileNotFoundError / ValueError: a missing or unreadable file, or one without ``images``.
    """
    path = Path(ann_file)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        images = json.loads(path.read_text())["images"]
        return {Path(str(image["file_name"])).name: int(image["id"]) for image in images}
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"{path}: not a COCO annotation file with images[].file_name and images[].id ({type(err).__name__}: "
            f"{err}); pass the dataset's instances_*.json"
        ) from None


@dataclass
class InferenceRun:
    """What :func:`run_inference` wrote.

    Attributes:
        out_dir: the output folder.
        outputs: the annotated files, in input order.
        images: images processed; frames: video frames processed.
        detections: detections written to ``predictions.json``.
    """

    out_dir: Path
    outputs: list[Path] = field(default_factory=list)
    images: int = 0
    frames: int = 0
    detections: int = 0

    @property
    def results_file(self) -> Path:
        return self.out_dir / RESULTS_FILE


def collect_sources(sources: Sequence[str | Path]) -> tuple[list[ImageSource], list[Path]]:
    """Split files, folders, glob patterns and image URLs into (images, videos); a folder gives its image and video
    files, sorted, and a pattern the files it matches, sorted (URLs stay strings, downloaded when reached).

    Raises:
        FileNotFoundError: a path that does not exist, or a pattern that matches no file.
        ValueError: a file that is neither an image nor a video, or a folder with neither.
    """
    images: list[ImageSource] = []
    videos: list[Path] = []
    known = (*IMAGE_EXTENSIONS, *VIDEO_EXTENSIONS)
    for source in sources:
        if is_url(source):
            images.append(str(source))
            continue
        path = Path(source)
        if is_glob(source):
            files = [file for file in glob_files(str(source)) if file.suffix.lower() in known]
            if not files:
                raise ValueError(f"the pattern {source!r} matches no images or videos (looked for {', '.join(known)})")
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in known)
            if not files:
                raise ValueError(f"no images or videos found in {path} (looked for {', '.join(known)})")
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(f"input not found: {path}")
        for file in files:
            (videos if is_video(file) else images).append(file)
    if not images and not videos:
        raise ValueError("no inputs given; pass image files, folders or videos")
    return images, videos


def unique_path(out_dir: Path, name: str, taken: set[str]) -> Path:
    """``out_dir / name``, suffixed ``_1``, ``_2``... until unique (case-insensitively) among ``taken``."""
    stem, suffix = Path(name).stem, Path(name).suffix
    counter = 1
    while name.lower() in taken:
        name = f"{stem}_{counter}{suffix}"
        counter += 1
    taken.add(name.lower())
    return out_dir / name


def source_file_name(source: ImageSource) -> str:
    """The file name of an image file or URL (a URL without one is ``image.jpg``; one without an image extension
    gets ``.jpg``, the annotated copy's format)."""
    if isinstance(source, Path):
        return source.name
    name = Path(urllib.parse.urlparse(source).path).name or "image.jpg"
    return name if Path(name).suffix.lower() in IMAGE_EXTENSIONS else f"{name}.jpg"


def _images(sources: Iterable[ImageSource]) -> Iterator[Path | Image.Image]:
    """Files as they are; URLs downloaded one at a time, as the detector reaches them."""
    for source in sources:
        yield read_url_image(source) if isinstance(source, str) else source


def _frames(reader: VideoReader, bar: tqdm) -> Iterator:
    for frame in reader:
        bar.update(1)
        yield frame


def _predict_video(
    detector: BackendDetector,
    video: Path,
    target: Path,
    run: InferenceRun,
    records: list[dict],
    numbering: dict[str, int],
    progress: bool,
    options: dict,
    draw_style: str,
) -> None:
    """Every frame of ``video`` detected, drawn into ``target`` and added to ``records`` (frames numbered on)."""
    with (
        VideoReader(video) as reader,
        VideoWriter(target, reader.fps, reader.size) as writer,
        tqdm(total=reader.frame_count or None, unit="frame", desc=video.name, disable=not progress) as bar,
    ):
        predictions = detector.iter_predict(_frames(reader, bar), **options)
        for frame_index, prediction in enumerate(predictions):
            writer.write(prediction.draw(style=draw_style))
            image_id = run.images + run.frames
            numbering[f"{video}#{frame_index}"] = image_id
            records.extend(prediction.to_coco(image_id, video_file=str(video), frame=frame_index))
            run.frames += 1


def _write_results(run: InferenceRun, records: list[dict], numbering: dict[str, int] | None) -> None:
    run.detections = len(records)
    run.results_file.write_text(json.dumps(records, indent=1))
    if numbering is not None:
        (run.out_dir / IMAGE_IDS_FILE).write_text(json.dumps(numbering, indent=1))


def run_inference(
    detector: BackendDetector,
    sources: Sequence[str | Path],
    out_dir: str | Path,
    *,
    conf_threshold: float = 0.25,
    batch_size: int = 8,
    image_size: int | None = None,
    image_ids: Mapping[str, int] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    resize: ResizeMode = "squash",
    draw_style: str = "auto",
) -> InferenceRun:
    """Detect objects in images, folders and videos; write annotated copies and ``predictions.json``.

    Args:
        detector: any backend's detector.
        sources: image files, video files and folders of them.
        out_dir: output folder (created); it must not be the folder of an input.
        conf_threshold: keep detections scoring at least this.
        batch_size: images (or frames) per model call.
        image_size: model input side (None: the model's own; others on the torch backend only).
        image_ids: ``file name -> image id`` (:func:`image_ids_from_annotations`) so the results
            score against that annotation file; None numbers images in input order and writes the
            numbering to ``image_ids.json``.
        progress: show progress bars (stderr).
        log: where the per-file lines go.
        resize: ``"squash"`` (the official resize) or ``"letterbox"`` (aspect kept, boxes mapped back).
        draw_style: the drawer of the annotated copies (:func:`dfine.drawing.resolve_style`).
    """
    image_files, video_files = check_inputs(sources, out_dir)
    check_resize(resize)
    resolve_style(draw_style)
    out_dir = Path(out_dir).resolve()
    if image_ids is not None:
        unknown = [name for name in map(source_file_name, image_files) if name not in image_ids]
        if unknown or video_files:
            what = f"{unknown[0]} is not in the annotation file" if unknown else "videos have no annotation ids"
            raise ValueError(f"--ann-file: {what}; pass only the images it lists, or drop --ann-file")
    out_dir.mkdir(parents=True, exist_ok=True)
    run = InferenceRun(out_dir)
    records: list[dict] = []
    numbering: dict[str, int] = {}
    taken: set[str] = set()
    try:
        with tqdm(total=len(image_files), unit="img", desc="images", disable=not progress or not image_files) as bar:
            predictions = detector.iter_predict(
                _images(image_files), conf_threshold, batch_size, image_size, resize=resize
            )
            for index, (source, prediction) in enumerate(zip(image_files, predictions)):
                name = source_file_name(source)
                image_id = image_ids[name] if image_ids is not None else index
                numbering[str(source)] = image_id
                annotated = prediction.save(unique_path(out_dir, name, taken), style=draw_style)
                run.outputs.append(annotated)
                log(f"{source}: {len(prediction)} detections -> {annotated}")
                records.extend(prediction.to_coco(image_id, image_file=str(source)))
                run.images += 1
                bar.update(1)
        for video in video_files:
            frames_before = run.frames
            target = unique_path(out_dir, f"{video.stem}.mp4", taken)
            _predict_video(detector, video, target, run, records, numbering, progress,
                           dict(conf_threshold=conf_threshold, batch_size=batch_size, image_size=image_size,
                                resize=resize), draw_style)  # fmt: skip
            run.outputs.append(target)
            log(f"{video}: {run.frames - frames_before} frames -> {target}")
    except (ValueError, OSError) as err:  # keep what was done: the results of every input before the failing one
        _write_results(run, records, numbering if image_ids is None else None)
        done = f"{run.images} image(s) and {run.frames} frame(s)"
        raise type(err)(f"{err} (the results of the {done} before it are in {run.results_file})") from None
    _write_results(run, records, numbering if image_ids is None else None)
    return run

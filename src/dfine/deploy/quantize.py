"""INT8 post-training quantization of the OpenVINO IR with NNCF, for CPU inference.

``dfine export --format openvino --int8 [--calibration DATA]`` writes ``STEM_int8.xml`` beside the
fp32 IR; it runs through :class:`~dfine.deploy.openvino.OpenVINOBackend` like any IR and keeps the
model's metadata (class names, input size). ``--check`` then scores both on a validation set
(:mod:`dfine.deploy.accuracy`) and refuses an INT8 model that loses more than ``--max-ap-drop``.

Calibration: NNCF runs the fp32 model on a few hundred images to choose each quantizer's range. The
images are a dataset folder's training split, a folder of images or a text file listing them, or,
when none is given, generated scenes (:mod:`dfine.data.synthetic`: good for the shapes demo, not for
photos). They are pre-processed exactly as at inference (squash resize, [0, 1]).

Settings, chosen by measurement (``benchmarks/int8_accuracy.py``, numbers in ``benchmarks/RESULTS.md``,
"INT8 on the CPU"). Accuracy: the README quick start's D-FINE-N (shapes, 256 px), 300 calibration
images, 100 val images, fp32 AP 67.5. Latency: D-FINE-N at 640, batch 1, 2 threads, fp32 IR 54 ms.

* ``model_type=TRANSFORMER``: NNCF's default CNN scheme loses 1.6 AP points (it also quantizes the
  box arithmetic of the decoder and post-processor); the transformer scheme (SmoothQuant on the
  matmuls, no quantizers on softmax / layer-norm / box arithmetic) loses 0.2-0.6 and runs as fast
  (29 ms either way). Keeping the decoder in fp32 with the CNN scheme (an ignored scope) loses 0.5-0.8
  and is no faster, so nothing is ignored.
* preset ``mixed`` (asymmetric activations) by default: 0.3 AP point closer to fp32 than
  ``performance`` (symmetric) at the same speed (28.0 vs 27.9 ms); ``--int8-preset performance``.
* 300 calibration images (NNCF's default subset): within 0.3 AP point of 30 or 100.
* not onnxruntime static quantization (QDQ, per-channel): as accurate (0.2-0.8 point), but its INT8
  graph runs in 45 ms, 1.6x OpenVINO's.

NNCF runs in the calling process; the log levels it would change for the whole process are put back
afterwards. The INT8 model is an ordinary IR file that :class:`~dfine.deploy.openvino.OpenVINOBackend` runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.coco import CocoDetection
from ..data.images import IMAGE_EXTENSIONS, list_images, load_image
from ..data.layout import find_dataset
from ..data.synthetic import SynthConfig, render_image
from ..optional import import_optional
from .accuracy import DEFAULT_MAX_AP_DROP, AccuracyCheck, AccuracyDropError, check_accuracy, require_ap_drop
from .metadata import ModelMetadata
from .openvino import OpenVINOBackend, move_ir, remove_ir, save_openvino_model
from .runtime import preprocess

__all__ = [
    "CALIBRATION_IMAGES",
    "INT8_PRESETS",
    "CalibrationSet",
    "Int8Export",
    "calibration_set",
    "export_int8",
    "int8_path",
    "quantize_openvino",
    "require_nncf",
]

INT8_PRESETS = ("mixed", "performance")  # NNCF QuantizationPreset values offered; the first is the default
CALIBRATION_IMAGES = 300  # NNCF's default subset size; measured 0.3 AP point above 100 (module docstring)
_SUBSET_SEED = 0  # which images of a larger set calibrate: a fixed random choice
_SCENE_SEED = 1  # the generated scenes (0 makes the --check scenes of dfine.deploy.verify)
_SCENE_SIZE = 640  # generated scenes are drawn at 640 px and resized to the model's input like any image
_SCENE_MAX_OBJECTS = 8
INT8_SUFFIX = "_int8"  # model.xml -> model_int8.xml
_FIX = "pass a dataset folder, a folder of images or a text file listing image paths"


def _nncf():
    extension_log = logging.getLogger("torch.utils.cpp_extension")  # nncf's import warns "no CUDA runtime"
    extension_level = extension_log.level
    extension_log.setLevel(logging.ERROR)
    try:
        return import_optional("nncf", extra="int8", purpose="INT8 quantization (dfine export --int8)")
    finally:
        extension_log.setLevel(extension_level)


def require_nncf() -> None:
    """Fail now, naming ``pip install dfine[int8]``, when nncf is missing (before a slow export, not after it).

    Raises:
        MissingDependencyError: nncf is not installed.
    """
    _nncf()


def int8_path(xml_path: str | Path) -> Path:
    """Where the INT8 IR of ``xml_path`` goes: ``model.xml`` -> ``model_int8.xml``."""
    xml_path = Path(xml_path)
    return xml_path.with_name(xml_path.stem + INT8_SUFFIX + ".xml")


@dataclass(frozen=True)
class CalibrationSet:
    """The images NNCF calibrates on: image files, or (with none) ``count`` generated scenes.

    ``calibration[i]`` is an RGB image, read or drawn when asked (hundreds of 640 px images would
    otherwise sit in memory).

    Attributes:
        files: the image files; empty for generated scenes.
        count: images in the set.
        description: where the images come from, for the export's report.
        dataset: the dataset whose training split they are, when they are (its val split can check the result).
    """

    files: tuple[Path, ...]
    count: int
    description: str
    dataset: Path | None = None

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Image.Image:
        if not 0 <= index < self.count:
            raise IndexError(f"calibration image {index} of {self.count}")
        if self.files:
            return load_image(self.files[index])
        rng = np.random.default_rng((_SCENE_SEED, index))
        scene, _ = render_image(rng, SynthConfig(image_size=_SCENE_SIZE, max_objects=_SCENE_MAX_OBJECTS), False)
        return scene


def _listed_files(list_file: Path) -> list[Path]:
    """The image paths of a text file, one per line (relative to the file's folder; ``#`` starts a comment)."""
    files = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            path = Path(entry) if Path(entry).is_absolute() else list_file.parent / entry
            if not path.is_file():
                raise FileNotFoundError(f"{list_file}: listed calibration image not found: {path}")
            files.append(path)
    return files


def _source_files(source: str | Path) -> tuple[list[Path], str, Path | None]:
    """The image files of one calibration source, how it was read, and the dataset it is (or None)."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"calibration data not found: {path}; {_FIX}")
    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        return [path], "1 image file", None
    if path.is_file() and path.suffix.lower() not in (".json", ".yaml", ".yml"):
        return _listed_files(path), f"the images listed in {path}", None
    if path.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir()):
        return list_images(path), f"the images in {path}", None
    try:
        train = find_dataset(path).train  # a dataset: its training split (the val split is for --check)
    except FileNotFoundError:
        raise ValueError(f"calibration data {path} holds no images and is not a dataset; {_FIX}") from None
    return list_images(train.img_folder), f"the training images of {path}", path


def calibration_set(
    source: str | Path | Sequence[str | Path] | None, count: int = CALIBRATION_IMAGES
) -> CalibrationSet:
    """The calibration images: up to ``count`` of ``source``, chosen at random with a fixed seed.

    Args:
        source: a dataset folder, YOLO data YAML or COCO json (its training split), a folder of images, a
            text file listing image paths, a list of image files, or None for ``count`` generated scenes.
        count: at most this many images.

    Raises:
        FileNotFoundError: ``source`` (or a listed image) does not exist.
        ValueError: ``count`` below 1, or a source without images.
    """
    if count < 1:
        raise ValueError(f"the calibration needs at least 1 image, got {count}")
    if source is None:
        return CalibrationSet((), count, f"{count} generated scenes (pass calibration images of your data)")
    dataset = None
    if isinstance(source, str | Path):
        files, description, dataset = _source_files(source)
    else:
        files = [path for item in source for path in _source_files(item)[0]]
        description = f"{len(source)} given image sources"
    if not files:
        raise ValueError(f"calibration data {source}: no images; {_FIX}")
    if len(files) > count:
        chosen = np.random.default_rng(_SUBSET_SEED).choice(len(files), count, replace=False)
        files = [files[i] for i in sorted(chosen)]
    return CalibrationSet(tuple(files), len(files), f"{len(files)} of {description}", dataset)


@dataclass(frozen=True)
class Int8Export:
    """What :func:`quantize_openvino` / :func:`export_int8` wrote.

    Attributes:
        path: the INT8 ``.xml`` (its ``.bin`` beside it).
        calibration: where the calibration images came from.
        images: calibration images used.
        seconds: wall time of the quantization.
        check: fp32 vs INT8 AP, when it was measured.
    """

    path: Path
    calibration: str
    images: int
    seconds: float
    check: AccuracyCheck | None = None


def quantize_openvino(
    xml_path: str | Path,
    out_path: str | Path,
    metadata: ModelMetadata,
    calibration: CalibrationSet,
    *,
    preset: str = INT8_PRESETS[0],
) -> Int8Export:
    """Quantize an fp32 IR to INT8 with NNCF post-training quantization (settings: module docstring).

    Args:
        xml_path: the fp32 IR written by :func:`~dfine.deploy.openvino.export_openvino`.
        out_path: the INT8 IR to write (the finished file only: an interrupted run leaves none).
        metadata: stored in the INT8 IR, as in the fp32 one.
        calibration: the images (:func:`calibration_set`).
        preset: ``mixed`` (asymmetric activations, the default) or ``performance`` (symmetric).

    Raises:
        MissingDependencyError: nncf is not installed (``pip install dfine[int8]``).
    """
    _check_quantize_inputs(xml_path, preset)
    nncf = _nncf()
    ov = import_optional("openvino", extra="openvino", purpose="OpenVINO export and inference")
    model = ov.Core().read_model(str(xml_path))
    image_size = metadata.image_size

    def model_inputs(index: int) -> dict[str, np.ndarray]:
        images, sizes = preprocess([calibration[index]], image_size)
        return {"images": images.numpy(), "orig_target_sizes": sizes.numpy()}

    start = time.perf_counter()
    nncf_level = nncf.nncf_logger.level
    nncf.set_log_level(logging.WARNING)  # NNCF logs every op it leaves unquantized at INFO
    try:
        quantized = nncf.quantize(
            model,
            nncf.Dataset(range(len(calibration)), model_inputs),
            preset=nncf.QuantizationPreset(preset),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(calibration),
        )
    finally:
        nncf.set_log_level(nncf_level)
    seconds = time.perf_counter() - start
    save_openvino_model(quantized, out_path, metadata)
    return Int8Export(Path(out_path), calibration.description, len(calibration), seconds)


def _check_quantize_inputs(xml_path: str | Path, preset: str) -> None:
    if preset not in INT8_PRESETS:
        raise ValueError(f"unknown INT8 preset {preset!r}; choose {' or '.join(INT8_PRESETS)}")
    require_nncf()
    if not Path(xml_path).is_file():
        raise FileNotFoundError(f"OpenVINO model not found: {xml_path}")


def export_int8(
    xml_path: str | Path,
    metadata: ModelMetadata,
    calibration: CalibrationSet,
    *,
    check_data: CocoDetection | None = None,
    max_ap_drop: float = DEFAULT_MAX_AP_DROP,
    preset: str = INT8_PRESETS[0],
) -> Int8Export:
    """Quantize ``xml_path`` to ``STEM_int8.xml``; with ``check_data``, only keep it if it keeps its AP.

    With a check, the INT8 IR is written as ``STEM_int8.unchecked.xml``, both models are scored on
    ``check_data`` (:func:`~dfine.deploy.accuracy.check_accuracy`), and the file becomes
    ``STEM_int8.xml`` when AP drops by at most ``max_ap_drop`` points, else ``STEM_int8.rejected.xml``.
    An earlier ``STEM_int8.xml`` is removed first: it belongs to another export.

    Raises:
        AccuracyDropError: the INT8 model loses more than ``max_ap_drop`` AP points (the message has
            both APs and where the rejected file is).
    """
    require_ap_drop(max_ap_drop)  # before the (slow) quantization
    final = int8_path(xml_path)
    remove_ir(final)
    if check_data is None:
        return quantize_openvino(xml_path, final, metadata, calibration, preset=preset)
    unchecked = final.with_name(final.stem + ".unchecked.xml")
    result = quantize_openvino(xml_path, unchecked, metadata, calibration, preset=preset)
    fp32_model, int8_model = partial(OpenVINOBackend, Path(xml_path)), partial(OpenVINOBackend, unchecked)
    check = check_accuracy(fp32_model, int8_model, check_data, max_ap_drop=max_ap_drop)  # one compiled at a time
    if not check.passed:
        rejected = move_ir(unchecked, final.with_name(final.stem + ".rejected.xml"))
        raise AccuracyDropError(
            f"the INT8 model loses too much accuracy on {check_data.source}: {check.describe()}; not written "
            f"as {final.name} (kept as {rejected} for inspection); calibrate on images of this data "
            "(--calibration), calibrate on more of them (--calibration-images), or allow a larger drop (--max-ap-drop)"
        )
    return replace(result, path=move_ir(unchecked, final), check=check)

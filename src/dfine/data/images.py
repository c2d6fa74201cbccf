"""Image loading for inference: files, folders, PIL images, numpy arrays and tensors to 8-bit RGB.

Every input becomes an RGB ``PIL.Image`` with 8 bits per channel, the form the official inference
(``tools/inference/torch_inf.py``: ``Image.open(f).convert("RGB")``) feeds to the model. The rules:

* Files get their EXIF orientation applied (``ImageOps.exif_transpose``), so boxes match the image
  as a viewer shows it. PIL images passed in are transposed the same way (a no-op when already done).
* Alpha (RGBA, LA, PA, palette transparency) is dropped: the stored colour values are kept, not
  composited over a background, the same as ``convert("RGB")`` in the official loader.
* Grayscale (1, L, LA) is repeated over three channels; palette (P) and CMYK use PIL's conversion.
* 16-bit data (PIL ``I;16*`` / ``I`` modes, uint16 arrays) is scaled linearly, 0..65535 to 0..255
  (``round(v / 257)``), not clipped at 255. PIL's 32-bit ``I`` mode is read as 16-bit, since that is
  how PIL opens 16-bit PNG and TIFF files; values outside 0..65535 are clipped.
* Float data must lie in [0, 1] and is rounded to 0..255.
* Arrays are RGB(A) in ``HxW`` / ``HxWxC`` layout; tensors are ``CxHxW`` (or ``HxWxC`` / ``HxW``).
* Strings may also be an ``http(s)://`` URL of an image, downloaded into memory (never written to disk; its
  :class:`~dfine.Prediction` has no ``source`` and keeps the image), or a glob pattern (``*``, ``?``, ``[``)
  that names files, read in sorted order. A string that names an existing path is always that path.
* A file whose header claims more than twice PIL's ``Image.MAX_IMAGE_PIXELS`` (a decompression bomb,
  or a genuinely huge image) is refused with its pixel count and the limit; raise the limit with the
  environment variable ``DFINE_MAX_IMAGE_PIXELS`` (read when ``dfine`` is imported) or by setting
  ``PIL.Image.MAX_IMAGE_PIXELS``. Training replaces such a file with another image (with a warning);
  ``dfine data check`` reports it per file.
"""

from __future__ import annotations

import glob
import http.client
import io
import os
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, get_args

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms import InterpolationMode

__all__ = [
    "IMAGE_EXTENSIONS",
    "LETTERBOX_FILL",
    "MAX_PIXELS_ENV",
    "RESIZE_MODES",
    "URL_TIMEOUT_S",
    "LetterboxGeometry",
    "ResizeMode",
    "check_channels",
    "check_resize",
    "glob_files",
    "is_glob",
    "is_url",
    "letterbox_geometry",
    "letterbox_image",
    "letterbox_boxes_to_image",
    "read_url_image",
    "oversized_image_message",
    "ImageInput",
    "list_images",
    "expand_sources",
    "load_image",
    "to_rgb",
    "array_to_image",
    "tensor_to_image",
    "to_model_input",
]

MAX_PIXELS_ENV = "DFINE_MAX_IMAGE_PIXELS"
if os.environ.get(MAX_PIXELS_ENV, "").strip().isdigit():  # the documented way to accept huge genuine images
    Image.MAX_IMAGE_PIXELS = int(os.environ[MAX_PIXELS_ENV])


def oversized_image_message(path: str | Path, err: Exception) -> str:
    """One line for PIL's ``DecompressionBombError``: the pixel count, the limit, and how to raise it."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    pixels = int(found.group(1)) if found else None
    size = f"{pixels:,} pixels" if pixels else "too many pixels"
    return (
        f"{path}: {size}, over PIL's decompression-bomb limit of {2 * (Image.MAX_IMAGE_PIXELS or 0):,} "
        f"(2 x Image.MAX_IMAGE_PIXELS); if the file is genuine, raise the limit with {MAX_PIXELS_ENV}="
        f"{pixels or 'N'} or PIL.Image.MAX_IMAGE_PIXELS"
    )


# Extensions that PIL both reads and writes with its standard wheels (annotated copies are saved
# under the source's own name).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

ImageInput = str | Path | Image.Image | np.ndarray | torch.Tensor

# "squash": the official resize to S x S (aspect ratio lost); "letterbox": aspect kept, the rest padded
ResizeMode = Literal["squash", "letterbox"]
RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)
LETTERBOX_FILL = 114  # the pad gray of YOLO letterboxing (ultralytics), 114/255 after ToTensor
URL_TIMEOUT_S = 30.0  # seconds a URL may stay silent (connect or read) before its download fails
_URL_PREFIXES = ("http://", "https://")
_GLOB_CHARS = re.compile(r"[*?\[]")

_UINT16_TO_UINT8 = 65535 / 255  # = 257: maps 0..65535 linearly onto 0..255
_CHANNEL_COUNTS = (1, 2, 3, 4)  # gray, gray+alpha, RGB, RGBA
_ARRAY_HELP = (
    "expected HxW (gray), HxWx1, HxWx2 (gray+alpha), HxWx3 (RGB) or HxWx4 (RGBA); "
    "for a CxHxW array use array.transpose(1, 2, 0), for OpenCV's BGR use array[..., ::-1]"
)


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name.

    Files count as images by extension (:data:`IMAGE_EXTENSIONS`, any letter case); sub-folders are
    not searched.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: ``folder`` is not a folder, or holds no image files.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; pass a folder of images or one image file")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise ValueError(
            f"no images found in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)}, any case, "
            "not in sub-folders); point to the folder that holds the image files"
        )
    return paths


def expand_sources(source: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """One entry per image: folders become their sorted image files, lists are flattened.

    A 4-D tensor ``[B, C, H, W]`` or array ``[B, H, W, C]`` is split into its ``B`` images. Paths are checked here, so a
    missing file fails before any image is processed. A string that is not an existing path may be an ``http(s)``
    URL, downloaded and decoded here (:func:`read_url_image`, an in-memory PIL image), or a glob pattern (``*``,
    ``?``, ``[``; ``**`` crosses folders) whose matching files are taken in sorted order (folders it matches are
    skipped; narrow it, e.g. ``*.jpg``, to leave other files out).

    Raises:
        FileNotFoundError: a path that does not exist, or a pattern that matches no file.
        ValueError: an empty list, a folder without images, or a URL that cannot be downloaded or decoded.
    """
    if isinstance(source, (list, tuple)):
        items = [item for entry in source for item in expand_sources(entry)]
        if not items:
            raise ValueError("no images given: the source list is empty")
        return items
    if is_url(source):
        return [read_url_image(source)]
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            return list(list_images(path))
        if is_glob(source):
            return glob_files(source)
        if not path.exists():
            raise FileNotFoundError(f"image not found: {path}")
        return [path]
    if isinstance(source, torch.Tensor | np.ndarray) and source.ndim == 4:
        return list(source)
    return [source]


def is_url(source: object) -> bool:
    """An ``http(s)://`` address (of an image to download)."""
    return isinstance(source, str) and source.lower().startswith(_URL_PREFIXES)


def is_glob(source: object) -> bool:
    """A string with wildcards (``*``, ``?``, ``[``) that is not itself an existing path."""
    return isinstance(source, str) and bool(_GLOB_CHARS.search(source)) and not Path(source).exists()


def glob_files(pattern: str) -> list[Path]:
    """The files ``pattern`` matches, sorted by path."""
    files = sorted(Path(match) for match in glob.glob(pattern, recursive=True) if Path(match).is_file())
    if not files:
        raise FileNotFoundError(f"no files match the pattern {pattern!r}; check the folder and the wildcards")
    return files


def read_url_image(url: str, timeout: float = URL_TIMEOUT_S) -> Image.Image:
    """Download an image from an ``http(s)`` URL into memory and decode it (EXIF applied, 8-bit RGB).

    Args:
        url: the image's address; redirects are followed.
        timeout: seconds the server may stay silent (connecting or sending) before the download fails.

    Raises:
        ValueError: naming the URL and the HTTP status or network reason, or saying the reply is no image.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "dfine"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read()
            content_type = response.headers.get_content_type()
    except urllib.error.HTTPError as err:
        raise ValueError(f"cannot download the image {url}: HTTP {err.code} {err.reason}; check the URL") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:  # OSError covers timeouts
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        raise ValueError(
            f"cannot download the image {url}: {reason or type(err).__name__}; check the URL and the network"
        ) from None
    fix = (
        f"the server sent {content_type} ({len(data):,} bytes); check that the URL points at the image file "
        "itself, not a web page"
    )
    return _decode(io.BytesIO(data), url, fix)


def load_image(source: ImageInput, channels: str = "rgb") -> Image.Image:
    """An 8-bit RGB PIL image from a path, PIL image, numpy array or tensor (rules: module docstring).

    ``channels`` is the order of a 3- or 4-channel array or tensor: ``"rgb"``, or ``"bgr"`` for OpenCV's
    ``cv2.imread`` arrays. Files and PIL images are decoded as RGB whatever it says.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a file that cannot be decoded, or an array/tensor of unsupported shape or values.
        TypeError: any other kind of input.
    """
    check_channels(channels)
    if isinstance(source, (str, Path)):
        return _open(Path(source))
    if isinstance(source, Image.Image):
        return to_rgb(ImageOps.exif_transpose(source))
    if isinstance(source, np.ndarray):
        return array_to_image(source, channels)
    if isinstance(source, torch.Tensor):
        return tensor_to_image(source, channels)
    raise TypeError(
        f"cannot read an image from {type(source).__name__}; pass a file path, a folder, a PIL image, "
        "a numpy array or a torch tensor"
    )


def _open(path: Path) -> Image.Image:
    """Decode a file fully (so truncated files fail here) and apply its EXIF orientation."""
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; pass an image file (a folder is read with list_images)")
    fix = (
        f"check that it is a complete image file ({', '.join(IMAGE_EXTENSIONS)}) and re-export it, "
        "or remove it from the input"
    )
    return _decode(path, str(path), fix)


def _decode(file: Path | BinaryIO, name: str, fix: str) -> Image.Image:
    """Decode ``file`` fully as 8-bit RGB with its EXIF orientation; errors start with ``name`` and end with ``fix``."""
    try:
        with Image.open(file) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)  # a copy, so it outlives the open file
    except Image.DecompressionBombError as err:
        raise ValueError(oversized_image_message(name, err)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        in_memory = not isinstance(file, Path)  # PIL would name it by its object repr: say what it means instead
        reason = "no format PIL reads" if in_memory and isinstance(err, UnidentifiedImageError) else err
        raise ValueError(f"{name}: cannot be decoded as an image ({reason}); {fix}") from None
    try:
        return to_rgb(upright)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB: 16-bit modes scaled, alpha dropped, gray/palette/CMYK converted."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I"):  # I;16, I;16B, ... and PIL's 32-bit "I" (how 16-bit files open)
        return array_to_image(np.clip(np.asarray(image), 0, 65535).astype(np.uint16))
    if image.mode == "F":  # 32-bit float: the [0, 1] rule
        return array_to_image(np.asarray(image))
    if image.mode in ("P", "PA"):
        # palette transparency must go through RGBA (PIL refuses P -> RGB for byte transparency)
        image = image.convert("RGBA")
    try:
        return image.convert("RGB")
    except ValueError as err:
        raise ValueError(f"cannot convert a {image.mode} image to RGB ({err}); save it as RGB first") from None


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Pixel values as uint8: uint16 scaled from 0..65535, floats from [0, 1], bool to 0/255."""
    kind, nbytes = array.dtype.kind, array.dtype.itemsize
    if kind == "u" and nbytes == 1:
        return array.astype(np.uint8, copy=False)
    if kind == "b":
        return array.astype(np.uint8) * 255
    if kind == "u" and nbytes == 2:  # any byte order (PIL's I;16B gives big-endian)
        return np.round(array / _UINT16_TO_UINT8).astype(np.uint8)
    if kind == "f":
        low, high = float(np.min(array)), float(np.max(array))
        if not (np.isfinite(low) and np.isfinite(high)) or low < 0.0 or high > 1.0:
            raise ValueError(
                f"float image values must lie in [0, 1], found {low:g}..{high:g}; "
                "divide 0..255 data by 255 (or pass it as uint8)"
            )
        return np.round(array.astype(np.float32) * 255).astype(np.uint8)
    raise ValueError(
        f"unsupported image dtype {array.dtype}; pass uint8 (0..255), uint16 (0..65535) or float in [0, 1]"
    )


def array_to_image(array: np.ndarray, channels: str = "rgb") -> Image.Image:
    """An RGB PIL image from an ``HxW`` or ``HxWxC`` array (C = 1, 2, 3, 4; ``channels`` order, alpha dropped)."""
    if array.ndim == 3 and array.shape[2] in _CHANNEL_COUNTS:
        # gray(+alpha) keeps channel 0, RGB(A) keeps channels 0..2, BGR(A) is reversed to RGB
        array = array[:, :, :1] if array.shape[2] <= 2 else array[:, :, 2::-1] if channels == "bgr" else array[:, :, :3]
    elif array.ndim == 2:
        array = array[:, :, None]
    else:
        raise ValueError(f"unsupported image array shape {tuple(array.shape)}; {_ARRAY_HELP}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"empty image array of shape {tuple(array.shape)}")
    rgb = np.broadcast_to(_to_uint8(array), (*array.shape[:2], 3))
    return Image.fromarray(np.ascontiguousarray(rgb))


def tensor_to_image(tensor: torch.Tensor, channels: str = "rgb") -> Image.Image:
    """An RGB PIL image from a ``CxHxW`` (preferred when ambiguous), ``HxWxC`` or ``HxW`` tensor.

    uint8 tensors hold 0..255, floating tensors [0, 1]; C = 1, 2, 3, 4 as in :func:`array_to_image`.
    """
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point():
        tensor = tensor.float()  # numpy has no bfloat16
    if tensor.ndim == 3 and tensor.shape[0] in _CHANNEL_COUNTS:
        tensor = tensor.permute(1, 2, 0)
    elif not (tensor.ndim == 2 or (tensor.ndim == 3 and tensor.shape[2] in _CHANNEL_COUNTS)):
        raise ValueError(
            f"unsupported image tensor shape {list(tensor.shape)}; expected [C, H, W], [H, W, C] or [H, W] "
            "with C = 1, 2, 3 or 4 (a batch [B, C, H, W] is split into images by DFINE.predict)"
        )
    return array_to_image(tensor.numpy(), channels)


def check_channels(channels: str) -> str:
    """``channels`` if it is ``"rgb"`` or ``"bgr"``, else a ValueError naming the parameter and the choices."""
    if channels not in ("rgb", "bgr"):
        raise ValueError(f"channels must be 'rgb' or 'bgr' (OpenCV arrays), got {channels!r}")
    return channels


def check_resize(resize: str) -> str:
    """``resize`` if it is one of :data:`RESIZE_MODES`, else a ValueError naming the parameter and the choices."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {', '.join(map(repr, RESIZE_MODES))}, got {resize!r}")
    return resize


@dataclass(frozen=True)
class LetterboxGeometry:
    """Where an image lands inside the square letterboxed model input (all in integer pixels).

    Attributes:
        original: the image's ``(width, height)``.
        resized: its ``(width, height)`` after the aspect-keeping resize.
        offset: ``(left, top)`` padding before it, in model-input pixels.
    """

    original: tuple[int, int]
    resized: tuple[int, int]
    offset: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """Model-input pixels per image pixel along x and y (``resized / original``; equal up to rounding)."""
        return self.resized[0] / self.original[0], self.resized[1] / self.original[1]


def letterbox_geometry(width: int, height: int, image_size: int) -> LetterboxGeometry:
    """The letterbox of a ``width x height`` image in an ``image_size`` square: longer side to ``image_size``.

    The shorter side is scaled by the same factor and rounded to whole pixels (at least 1); the image is centred,
    the odd pixel of padding going right / below.
    """
    if width <= 0 or height <= 0 or image_size <= 0:
        raise ValueError(f"letterbox needs positive sizes, got {width}x{height} into {image_size}")
    longer = max(width, height)
    # round(side * image_size / longer) in integers, so no float rounding decides a pixel
    resized = tuple(max(1, (2 * side * image_size + longer) // (2 * longer)) for side in (width, height))
    offset = tuple((image_size - side) // 2 for side in resized)
    return LetterboxGeometry((width, height), resized, offset)


def letterbox_image(image: Image.Image, image_size: int) -> Image.Image:
    """``image`` resized with its aspect ratio kept (PIL bilinear) and centred on a :data:`LETTERBOX_FILL` square."""
    geometry = letterbox_geometry(*image.size, image_size)
    width, height = geometry.resized
    canvas = Image.new("RGB", (image_size, image_size), (LETTERBOX_FILL,) * 3)
    canvas.paste(TF.resize(image, [height, width], interpolation=InterpolationMode.BILINEAR), geometry.offset)
    return canvas


def letterbox_boxes_to_image(boxes_xyxy_input: torch.Tensor, geometry: LetterboxGeometry) -> torch.Tensor:
    """Map boxes from letterboxed model-input pixels back to original-image pixels (not clipped).

    ``x_image = (x_input - left) * width / resized_width`` (and alike for y), computed in float64 so that a square
    image, whose letterbox is the squash, gets the squash's boxes to the last bit.

    Args:
        boxes_xyxy_input: ``[..., 4]`` xyxy in pixels of the ``image_size`` square model input.
        geometry: the image's :func:`letterbox_geometry`.

    Returns:
        ``[..., 4]`` xyxy in original-image pixels, in the dtype of ``boxes_xyxy_input``.
    """
    (width, height), (resized_w, resized_h), (left, top) = geometry.original, geometry.resized, geometry.offset
    offset = torch.tensor([left, top, left, top], dtype=torch.float64, device=boxes_xyxy_input.device)
    original = torch.tensor([width, height, width, height], dtype=torch.float64, device=boxes_xyxy_input.device)
    resized = torch.tensor([resized_w, resized_h, resized_w, resized_h], dtype=torch.float64, device=offset.device)
    return ((boxes_xyxy_input.to(torch.float64) - offset) * original / resized).to(boxes_xyxy_input.dtype)


def to_model_input(images: Sequence[Image.Image], image_size: int, resize: ResizeMode = "squash") -> torch.Tensor:
    """Batch RGB images for the model: squash-resized as the official inference does, or letterboxed.

    ``"squash"`` resizes each image to ``image_size x image_size`` (PIL bilinear, i.e. ``T.Resize``);
    ``"letterbox"`` keeps the aspect ratio (:func:`letterbox_image`). Then float in [0, 1] (``T.ToTensor``).

    Returns:
        ``[B, 3, image_size, image_size]`` float32.
    """
    if check_resize(resize) == "letterbox":
        return torch.stack([TF.to_tensor(letterbox_image(image, image_size)) for image in images])
    size = [image_size, image_size]
    return torch.stack(
        [TF.to_tensor(TF.resize(image, size, interpolation=InterpolationMode.BILINEAR)) for image in images]
    )

"""Video files in and out, frame by frame, through OpenCV (``pip install dfine[video]``).

Frames come out as 8-bit RGB PIL images (OpenCV decodes to BGR), so videos go through the same
pre-processing as image files; annotated frames are written as an MP4 (``mp4v``) at the source's
frame rate. A phone video's rotation (the MP4 display matrix) is applied by OpenCV's FFmpeg reader, and the reader's
``size`` is that of the upright frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from ..optional import import_optional

__all__ = [
    "VIDEO_EXTENSIONS", "VideoReader", "VideoWriter", "is_capture_source", "is_video", "video_frame_rate",
]  # fmt: skip

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
_DEFAULT_FPS = 25.0  # when a file does not state its frame rate
_FOURCC = "mp4v"  # MPEG-4 part 2: written by every OpenCV wheel without extra codecs


def _cv2():
    return import_optional("cv2", extra="video", purpose="reading and writing videos", package="opencv-python-headless")


def is_video(path: str | Path) -> bool:
    """True for a file whose extension is a video format (:data:`VIDEO_EXTENSIONS`, any case)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


_STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


def is_capture_source(source: object) -> bool:
    """A camera index (int, or a string of digits) or a stream URL, which OpenCV opens instead of a file."""
    if isinstance(source, int) and not isinstance(source, bool):
        return True
    return isinstance(source, str) and (source.isdigit() or source.lower().startswith(_STREAM_SCHEMES))


def video_frame_rate(source: str | Path | int) -> float:
    """Frames per second of a video file, camera or stream (25 when it does not say)."""
    with VideoReader(source) as reader:
        return reader.fps


class VideoReader:
    """The frames of a video file, camera (index) or stream (URL) as RGB PIL images.

    Attributes:
        fps: frames per second (25 when the file does not say).
        frame_count: frames the container announces (may be 0 or approximate).
        size: ``(width, height)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: OpenCV cannot open or decode it.
    """

    def __init__(self, path: str | Path | int) -> None:
        cv2 = _cv2()
        capture = is_capture_source(path)
        self.path = Path(str(path)) if not capture else str(path)
        if not capture and not self.path.is_file():
            raise FileNotFoundError(f"video not found: {self.path}")
        opened = int(path) if capture and str(path).isdigit() else str(path)
        self._capture = cv2.VideoCapture(opened)
        if not self._capture.isOpened():
            if capture:
                raise ValueError(
                    f"{path}: cannot be opened as a camera or stream; check the index or URL, and that nothing "
                    "else uses it"
                )
            raise ValueError(
                f"{self.path}: cannot be opened as a video (unsupported or damaged file); "
                "check that it plays, or convert it to H.264 MP4"
            )
        self.fps = float(self._capture.get(cv2.CAP_PROP_FPS)) or _DEFAULT_FPS
        self.frame_count = max(0, int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)))
        self.size = (
            int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
        self._cv2 = cv2

    def __iter__(self) -> Iterator[Image.Image]:
        index = 0
        while True:
            ok, frame = self._capture.read()
            if not ok:
                break
            index += 1
            yield Image.fromarray(self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2RGB))
        if index == 0:
            raise ValueError(f"{self.path}: no frame could be decoded; the video is empty or damaged")

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoWriter:
    """Write RGB PIL frames of one size to an MP4 file.

    Args:
        path: the file to write (folders are created).
        fps: frames per second.
        size: ``(width, height)`` of every frame.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        cv2 = _cv2()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = tuple(size)
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*_FOURCC), fps, size)
        if not self._writer.isOpened():
            raise ValueError(f"{self.path}: OpenCV cannot write an {_FOURCC} video here; try another output folder")
        self._cv2 = cv2

    def write(self, frame: Image.Image) -> None:
        """Append one frame; it must have the writer's ``size`` (OpenCV would drop it without a word)."""
        if frame.size != self.size:
            raise ValueError(
                f"{self.path}: frame of {frame.size[0]}x{frame.size[1]} for a {self.size[0]}x{self.size[1]} video; "
                "resize frames to the size the writer was opened with"
            )
        self._writer.write(self._cv2.cvtColor(np.asarray(frame.convert("RGB")), self._cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._writer.release()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Video files in and out (:mod:`dfine.deploy.video`): rotation metadata, frame rate, frame sizes."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from PIL import Image

from dfine.deploy.video import VideoReader, VideoWriter

ROTATE_90 = (0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)  # an MP4 display matrix (16.16 / 2.30 fixed point)


def _clip(path: Path, size=(160, 96), frames: int = 6, fps: float = 12.0) -> Path:
    with VideoWriter(path, fps, size) as writer:
        for _ in range(frames):
            frame = Image.new("RGB", size, (30, 30, 30))
            frame.paste((230, 200, 40), (0, 0, 40, 20))  # a yellow block in the top-left corner
            writer.write(frame)
    return path


def _set_display_matrix(path: Path, matrix: tuple[int, ...]) -> None:
    """Write ``matrix`` into the video track header (``tkhd``, version 0), as a phone records its rotation."""
    data = bytearray(path.read_bytes())
    start = data.find(b"tkhd") + 4
    assert data[start] == 0, "version 0 tkhd expected"
    offset = start + 4 + 5 * 4 + 8 + 4 * 2  # version/flags, times/id/reserved/duration, reserved, layer..volume
    data[offset : offset + 36] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))


def test_a_rotated_phone_video_is_read_upright(tmp_path):
    clip = _clip(tmp_path / "phone.mp4")
    _set_display_matrix(clip, ROTATE_90)
    with VideoReader(clip) as reader:
        frames = list(reader)
        assert reader.size == (96, 160) and reader.fps == pytest.approx(12.0)
    assert len(frames) == 6 and all(frame.size == (96, 160) for frame in frames)
    red, green, blue = frames[0].getpixel((90, 5))  # the block turned 90 degrees clockwise: now top-right
    assert red > 150 and blue < 100
    copy = tmp_path / "copy.mp4"
    with VideoWriter(copy, reader.fps, reader.size) as writer:  # what predict / track write for it
        for frame in frames:
            writer.write(frame)
    with VideoReader(copy) as again:
        assert again.size == (96, 160) and sum(1 for _ in again) == 6


def test_a_frame_of_another_size_is_refused_not_dropped(tmp_path):
    with (
        VideoWriter(tmp_path / "out.mp4", 10.0, (64, 48)) as writer,
        pytest.raises(ValueError, match="frame of 48x64 for a 64x48 video"),
    ):
        writer.write(Image.new("RGB", (48, 64)))

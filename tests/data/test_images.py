"""Image loading: every PIL mode, arrays and tensors to 8-bit RGB; EXIF; folders; the input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from dfine.data.images import expand_sources, list_images, load_image, to_model_input

RED, BLUE = (255, 0, 0), (0, 0, 255)
EXIF_ORIENTATION = 0x0112


def _pixel(image: Image.Image, x: int = 0, y: int = 0) -> tuple[int, ...]:
    assert image.mode == "RGB", f"expected an RGB image, got {image.mode}"
    return image.getpixel((x, y))


def _halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image


# ---------------------------------------------------------------- files and EXIF


def test_exif_rotated_jpeg_is_shown_upright(tmp_path):
    # stored landscape 40x20 (red left); orientation 6 = "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    _halves(40, 20).save(path, exif=exif, quality=95)
    image = load_image(path)
    assert image.size == (20, 40)  # portrait after the rotation
    top, bottom = np.asarray(image)[5, 10], np.asarray(image)[35, 10]
    np.testing.assert_allclose(top, RED, atol=30)  # the stored left side is now the top
    np.testing.assert_allclose(bottom, BLUE, atol=30)


def test_exif_is_applied_to_pil_input_too(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 3  # upside down
    _halves(40, 20).save(path, exif=exif, quality=95)
    with Image.open(path) as opened:
        image = load_image(opened)
    np.testing.assert_allclose(np.asarray(image)[10, 5], BLUE, atol=30)  # left and right swapped
    assert image.size == (40, 20)


def test_png_roundtrip_is_exact(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "a.png")), pixels)


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    levels = np.array([[0, 257 * 100, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(levels).save(path)
    with Image.open(path) as opened:
        assert opened.mode in ("I;16", "I")  # PIL opens 16-bit gray PNGs in a 16/32-bit mode
    image = load_image(path)
    assert [_pixel(image, x)[0] for x in range(4)] == [0, 100, 128, 255]
    assert _pixel(image, 1) == (100, 100, 100)


def test_pil_I_mode_reads_as_16_bit():
    image = load_image(Image.new("I", (2, 2), 40000))
    assert _pixel(image) == (156, 156, 156)  # round(40000 / 257)


# ---------------------------------------------------------------- PIL modes


def test_gray_L_and_bilevel():
    assert _pixel(load_image(Image.new("L", (3, 2), 77))) == (77, 77, 77)
    assert _pixel(load_image(Image.new("1", (3, 2), 1))) == (255, 255, 255)


def test_LA_drops_alpha():
    assert _pixel(load_image(Image.new("LA", (3, 2), (90, 0)))) == (90, 90, 90)


def test_RGBA_drops_alpha_and_keeps_stored_colour():
    # documented choice: no compositing, even a fully transparent pixel keeps its colour
    assert _pixel(load_image(Image.new("RGBA", (3, 2), (10, 20, 30, 0)))) == (10, 20, 30)


def test_palette_with_and_without_transparency():
    palette_image = Image.new("P", (4, 1), 2)
    palette_image.putpalette([0, 0, 0, 9, 9, 9, 0, 200, 0] + [0] * 759)
    assert _pixel(load_image(palette_image)) == (0, 200, 0)
    palette_image.info["transparency"] = bytes([255, 255, 0] + [255] * 253)  # index 2 fully transparent
    assert _pixel(load_image(palette_image)) == (0, 200, 0)


def test_palette_png_with_transparency_from_file(tmp_path):
    image = Image.new("P", (3, 3), 1)
    image.putpalette([0, 0, 0, 250, 120, 10] + [0] * 762)
    image.save(tmp_path / "p.png", transparency=1)
    assert _pixel(load_image(tmp_path / "p.png")) == (250, 120, 10)


def test_cmyk(tmp_path):
    assert _pixel(load_image(Image.new("CMYK", (2, 2), (0, 255, 255, 0)))) == RED
    Image.new("CMYK", (2, 2), (255, 255, 0, 0)).save(tmp_path / "c.tif")
    assert _pixel(load_image(tmp_path / "c.tif")) == BLUE


# ---------------------------------------------------------------- numpy arrays and tensors


def test_numpy_layouts_and_dtypes():
    gray = np.full((4, 5), 60, dtype=np.uint8)
    assert load_image(gray).size == (5, 4)
    assert _pixel(load_image(gray)) == (60, 60, 60)
    assert _pixel(load_image(gray[:, :, None])) == (60, 60, 60)
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., :3] = (1, 2, 3)
    assert _pixel(load_image(rgba)) == (1, 2, 3)
    assert _pixel(load_image(np.full((2, 2, 3), 0.5, dtype=np.float32))) == (128, 128, 128)
    assert _pixel(load_image(np.full((2, 2, 3), 257 * 9, dtype=np.uint16))) == (9, 9, 9)
    assert _pixel(load_image(np.ones((2, 2), dtype=bool))) == (255, 255, 255)


def test_numpy_rgb_order_is_kept():
    pixels = np.zeros((2, 2, 3), dtype=np.uint8)
    pixels[..., 0] = 255
    assert _pixel(load_image(pixels)) == RED


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((3, 8, 8), dtype=np.uint8), r"shape \(3, 8, 8\).*transpose\(1, 2, 0\)"),
        (np.zeros((2, 2, 2, 3), dtype=np.uint8), "unsupported image array shape"),
        (np.full((2, 2, 3), 255.0, dtype=np.float32), r"float image values must lie in \[0, 1\].*255"),
        (np.full((2, 2, 3), np.nan, dtype=np.float32), r"\[0, 1\]"),
        (np.zeros((2, 2, 3), dtype=np.int64), "unsupported image dtype int64"),
        (np.zeros((0, 4, 3), dtype=np.uint8), "empty image"),
    ],
)
def test_bad_arrays_are_explained(array, message):
    with pytest.raises(ValueError, match=message):
        load_image(array)


def test_tensor_layouts():
    chw = torch.zeros(3, 5, 6, dtype=torch.uint8)
    chw[2] = 255
    assert load_image(chw).size == (6, 5)
    assert _pixel(load_image(chw)) == BLUE
    assert _pixel(load_image(chw.permute(1, 2, 0))) == BLUE  # HWC
    assert _pixel(load_image(torch.full((3, 4, 6), 0.2))) == (51, 51, 51)  # float CHW
    assert _pixel(load_image(torch.full((5, 6), 0.2, dtype=torch.bfloat16))) == (51, 51, 51)
    # [4, 6, 3] could be RGBA CHW or RGB HWC: the torch convention (CHW) wins
    assert load_image(torch.zeros(4, 6, 3)).size == (3, 6)


def test_bad_tensor_shape_is_explained():
    with pytest.raises(ValueError, match=r"unsupported image tensor shape \[5, 7, 9\]"):
        load_image(torch.zeros(5, 7, 9))


def test_unsupported_type():
    with pytest.raises(TypeError, match="cannot read an image from int"):
        load_image(3)


# ---------------------------------------------------------------- bad files and folders


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="image not found: .*nope.jpg"):
        load_image(tmp_path / "nope.jpg")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image")
    with pytest.raises(ValueError, match=r"notes.jpg: cannot be decoded as an image"):
        load_image(path)


def test_truncated_jpeg(tmp_path):
    full = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[:600])
    with pytest.raises(ValueError, match=r"(?i)cut.jpg: cannot be decoded.*truncated"):
        load_image(cut)


def test_folder_given_as_image(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        load_image(tmp_path)


def test_list_images_sorted_case_insensitive(tmp_path):
    for name in ["b.PNG", "a.jpg", "c.JpEg", "notes.txt", "d.tiff"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.jpg").write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.JpEg", "d.tiff"]


def test_list_images_errors(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no images found in .*point to the folder"):
        list_images(tmp_path)
    with pytest.raises(FileNotFoundError, match="folder not found"):
        list_images(tmp_path / "missing")
    with pytest.raises(ValueError, match="is not a folder"):
        list_images(tmp_path / "readme.txt")


def test_expand_sources(tmp_path):
    for name in ["b.png", "a.png"]:
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    batch = torch.zeros(2, 3, 8, 8)
    items = expand_sources([tmp_path, str(tmp_path / "a.png"), batch])
    assert [getattr(i, "name", None) for i in items[:3]] == ["a.png", "b.png", "a.png"]
    assert len(items) == 5 and items[3].shape == (3, 8, 8)
    with pytest.raises(ValueError, match="source list is empty"):
        expand_sources([])
    with pytest.raises(FileNotFoundError, match="image not found"):
        expand_sources([tmp_path / "a.png", tmp_path / "gone.png"])


def test_to_model_input_matches_the_official_transform():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    official = T.Compose([T.Resize((64, 64)), T.ToTensor()])  # tools/inference/torch_inf.py
    batch = to_model_input([image, image], 64)
    assert batch.shape == (2, 3, 64, 64) and batch.dtype == torch.float32
    assert torch.equal(batch[1], official(image))


def test_a_decompression_bomb_is_one_clear_line_everywhere(tmp_path, monkeypatch):
    from dfine.data.check import probe_image

    path = tmp_path / "huge.png"
    Image.new("RGB", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels > 2 x 1000: PIL refuses the header
    with pytest.raises(ValueError, match=r"huge\.png: 10,000 pixels, over PIL's decompression-bomb limit of 2,000 .*"
                       r"DFINE_MAX_IMAGE_PIXELS=10000"):  # fmt: skip
        load_image(path)
    _, _, issue = probe_image(path, "decode")
    assert issue.kind == "oversized_image" and "DFINE_MAX_IMAGE_PIXELS" in issue.detail
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20000)  # the documented way out
    assert load_image(path).size == (100, 100)

"""Image loading: every PIL mode, arrays and tensors to 8-bit RGB; EXIF; folders, globs and URLs; letterbox
geometry; the input errors."""

from __future__ import annotations

import re
import socket

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from dfine.data.images import (
    LETTERBOX_FILL,
    LetterboxGeometry,
    check_resize,
    expand_sources,
    letterbox_boxes_to_image,
    letterbox_geometry,
    letterbox_image,
    list_images,
    load_image,
    read_url_image,
    to_model_input,
)

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


# ---------------------------------------------------------------- glob patterns and URLs


def _names(items: list) -> list[str]:
    return [item.name for item in items]


def test_glob_patterns_give_the_sorted_matching_files(tmp_path):
    for name in ["b.png", "a.png", "c.jpg", "sub/d.png"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    (tmp_path / "folder.png").mkdir()  # a folder the pattern matches is skipped
    assert _names(expand_sources(str(tmp_path / "*.png"))) == ["a.png", "b.png"]
    assert _names(expand_sources(str(tmp_path / "?.*"))) == ["a.png", "b.png", "c.jpg"]
    assert _names(expand_sources(str(tmp_path / "[bc].*"))) == ["b.png", "c.jpg"]
    assert _names(expand_sources(str(tmp_path / "**" / "*.png"))) == ["a.png", "b.png", "d.png"]
    assert _names(expand_sources([str(tmp_path / "c.*"), tmp_path / "a.png"])) == ["c.jpg", "a.png"]
    with pytest.raises(FileNotFoundError, match=r"no files match the pattern '.*\*\.gif'"):
        expand_sources(str(tmp_path / "*.gif"))


def test_an_existing_path_with_glob_characters_is_that_path(tmp_path):
    path = tmp_path / "shot[1].png"
    Image.new("RGB", (4, 4)).save(path)
    assert expand_sources(str(path)) == [path]
    with pytest.raises(FileNotFoundError, match="image not found"):  # a Path is never a pattern
        expand_sources(tmp_path / "*.png")


def test_url_image_is_downloaded_into_memory(http_folder):
    base, folder = http_folder
    pixels = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "cat.png")
    Image.new("RGB", (4, 4)).save(folder / "dog.png")
    image, path = expand_sources([f"{base}/cat.png", folder / "dog.png"])
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), pixels)
    assert path == folder / "dog.png"
    assert sorted(p.name for p in folder.iterdir()) == ["cat.png", "dog.png"]  # nothing written beside


def test_url_errors_name_the_url_and_the_reason(http_folder):
    base, folder = http_folder
    missing = f"{base}/missing.jpg"
    with pytest.raises(ValueError, match=rf"cannot download the image {re.escape(missing)}: HTTP 404 .*check the URL"):
        expand_sources(missing)
    (folder / "page.html").write_text("<html><body>not an image</body></html>")
    page = f"{base}/page.html"
    with pytest.raises(ValueError, match=rf"{re.escape(page)}: cannot be decoded as an image .*sent text/html"):
        expand_sources(page)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{closed.getsockname()[1]}/a.png"  # bound, not listening: refused
        with pytest.raises(ValueError, match=rf"cannot download the image {re.escape(refused)}: .*the network"):
            expand_sources(refused)


def test_a_silent_server_times_out():
    with socket.socket() as silent:  # accepts the connection (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/a.png"
        with pytest.raises(ValueError, match=rf"cannot download the image {re.escape(url)}: .*timed out"):
            read_url_image(url, timeout=0.2)


# ---------------------------------------------------------------- letterbox


@pytest.mark.parametrize(
    ("size", "image_size", "geometry"),
    [
        ((1000, 500), 640, LetterboxGeometry((1000, 500), (640, 320), (0, 160))),  # wide
        ((300, 600), 256, LetterboxGeometry((300, 600), (128, 256), (64, 0))),  # tall
        ((640, 321), 640, LetterboxGeometry((640, 321), (640, 321), (0, 159))),  # odd padding: 159 above, 160 below
        ((1001, 500), 640, LetterboxGeometry((1001, 500), (640, 320), (0, 160))),  # 319.68 rounds to 320
        ((300, 300), 256, LetterboxGeometry((300, 300), (256, 256), (0, 0))),  # square: the squash
    ],
)
def test_letterbox_geometry(size, image_size, geometry):
    assert letterbox_geometry(*size, image_size) == geometry


def test_letterbox_boxes_map_back_to_original_pixels():
    # wide 1000x500 in 640: scale 0.64, 160 px of padding above
    wide = letterbox_geometry(1000, 500, 640)
    boxes = torch.tensor([[64.0, 192.0, 320.0, 352.0], [0.0, 160.0, 640.0, 480.0]])
    expected = torch.tensor([[100.0, 50.0, 500.0, 300.0], [0.0, 0.0, 1000.0, 500.0]])
    assert torch.equal(letterbox_boxes_to_image(boxes, wide), expected)
    # tall 300x600 in 256: scale 256/600, 64 px of padding left
    tall = letterbox_geometry(300, 600, 256)
    boxes = torch.tensor([[96.0, 32.0, 128.0, 64.0], [64.0, 0.0, 192.0, 256.0]])
    expected = torch.tensor([[75.0, 75.0, 150.0, 150.0], [0.0, 0.0, 300.0, 600.0]])
    assert torch.equal(letterbox_boxes_to_image(boxes, tall), expected)
    # the rounded side maps back with its own scale: 1001x500 -> 640x320 (x: 640/1001, y: 320/500)
    rounded = letterbox_geometry(1001, 500, 640)
    back = letterbox_boxes_to_image(torch.tensor([[[0.0, 160.0, 640.0, 480.0]]], dtype=torch.float64), rounded)
    assert back.dtype == torch.float64 and back.tolist() == [[[0.0, 0.0, 1001.0, 500.0]]]


def test_letterbox_image_is_centred_on_gray():
    red = (255, 0, 0)
    wide = np.asarray(letterbox_image(Image.new("RGB", (40, 20), red), 32))  # 32x16 at y = 8
    assert wide.shape == (32, 32, 3)
    assert (wide[:8] == LETTERBOX_FILL).all() and (wide[24:] == LETTERBOX_FILL).all()
    assert (wide[8:24] == red).all()
    tall = np.asarray(letterbox_image(Image.new("RGB", (10, 40), red), 32))  # 8x32 at x = 12
    assert (tall[:, :12] == LETTERBOX_FILL).all() and (tall[:, 20:] == LETTERBOX_FILL).all()
    assert (tall[:, 12:20] == red).all()
    assert to_model_input([Image.new("RGB", (40, 20), red)], 32, "letterbox")[0, 0, 0, 0] == LETTERBOX_FILL / 255


def test_letterbox_of_a_square_image_is_the_squash():
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (50, 50, 3), dtype=np.uint8))
    assert torch.equal(to_model_input([image], 64, "letterbox"), to_model_input([image], 64))


def test_unknown_resize_names_the_parameter_and_the_choices():
    assert check_resize("letterbox") == "letterbox"
    with pytest.raises(ValueError, match="resize must be one of 'squash', 'letterbox', got 'crop'"):
        to_model_input([Image.new("RGB", (4, 4))], 32, "crop")

"""High-level DFINE: building, size inference, predict on every input kind, draw/save."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.ops import clip_boxes_to_image

import dfine
from dfine.data.coco_classes import COCO_CLASS_NAMES
from dfine.engine.checkpoint import CheckpointError, infer_model_size
from dfine.predictor import RandomWeightsWarning, resolve_device

# The conditioned official N weights score at most ~0.1 on noise images: a low threshold keeps some.
LOW_CONF = 0.05
SMALL = 256  # the smallest multiple of 32 with >= 300 encoder positions for N: fast tests


@pytest.fixture(scope="module")
def detector(official_n_weights):
    return dfine.DFINE.from_checkpoint(official_n_weights, device="cpu")


def _noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# ---------------------------------------------------------------- building


def test_from_checkpoint_infers_size_and_coco_names(detector):
    assert detector.num_classes == 80
    assert detector.class_names == list(COCO_CLASS_NAMES)
    assert detector.device == torch.device("cpu")
    assert not detector.model.training


@pytest.mark.parametrize("size", ["n", "s", "m", "l", "x"])
def test_infer_model_size_from_official_layouts(fixtures_dir, size):
    keys = json.loads((fixtures_dir / f"official_keys_{size}.json").read_text())
    state = {key: torch.empty(shape, device="meta") for key, shape in keys.items()}
    assert infer_model_size(state) == size


def test_infer_model_size_unknown_layout():
    assert infer_model_size({"backbone.stem.stem1.conv.weight": torch.zeros(1)}) is None
    state = dfine.build_model("n", decoder={"num_layers": 4}).state_dict()
    assert infer_model_size(state) is None


def test_custom_class_count_comes_from_the_checkpoint(tmp_path):
    path = tmp_path / "three.pth"
    torch.save({"model": dfine.build_model("n", num_classes=3).state_dict()}, path)
    detector = dfine.DFINE.from_checkpoint(path, device="cpu")
    assert detector.class_names == ["class_0", "class_1", "class_2"]
    named = dfine.DFINE.from_checkpoint(path, class_names=["cat", "dog", "bird"], device="cpu")
    assert named.class_names == ["cat", "dog", "bird"]
    with pytest.raises(ValueError, match="class_names has 2 names but the model has 3 classes"):
        dfine.DFINE.from_checkpoint(path, class_names=["cat", "dog"], device="cpu")


def test_from_checkpoint_errors(tmp_path, official_n_weights):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        dfine.DFINE.from_checkpoint(tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="looks like D-FINE-N"):
        dfine.DFINE.from_checkpoint(official_n_weights, size="s")
    odd = tmp_path / "odd.pth"
    torch.save(dfine.build_model("n", decoder={"num_layers": 4}).state_dict(), odd)
    with pytest.raises(CheckpointError, match="match no D-FINE size.*pass size="):
        dfine.DFINE.from_checkpoint(odd)


def test_size_build_warns_random_weights():
    with pytest.warns(RandomWeightsWarning, match="RANDOM weights"):
        detector = dfine.DFINE("n", class_names=["a", "b"], device="cpu")
    assert detector.num_classes == 2


def test_wrapping_a_built_model_keeps_it(official_n_weights):
    model = dfine.build_model("n")
    dfine.load_checkpoint(model, official_n_weights)
    detector = dfine.DFINE(model, device="cpu")
    assert detector.model is model and not model.training
    with pytest.raises(TypeError, match="a size .* or a dfine.DFINEModel"):
        dfine.DFINE(torch.nn.Linear(2, 2))


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


# ---------------------------------------------------------------- predict


def test_predict_equals_model_and_postprocessor_by_hand(detector):
    image = _noise_image(320, 200)  # non-square, so a (w, h) swap would show
    (prediction,) = detector.predict(image, conf_threshold=LOW_CONF)

    inputs = T.Compose([T.Resize((640, 640)), T.ToTensor()])(image).unsqueeze(0)  # official torch_inf.py
    with torch.no_grad():
        (found,) = dfine.PostProcessor()(detector.model(inputs), torch.tensor([[320, 200]]))
    keep = found["scores"] >= LOW_CONF
    assert keep.any(), "the threshold should keep some detections for this test to mean something"
    torch.testing.assert_close(prediction.scores, found["scores"][keep], rtol=0, atol=0)
    torch.testing.assert_close(prediction.labels, found["labels"][keep], rtol=0, atol=0)
    torch.testing.assert_close(prediction.boxes, clip_boxes_to_image(found["boxes"][keep], (200, 320)), rtol=0, atol=0)


def test_predictions_are_in_original_pixels(detector):
    (prediction,) = detector.predict(_noise_image(320, 200), conf_threshold=0.0, image_size=SMALL)
    assert len(prediction) == 300 and prediction.image_size == (320, 200)
    boxes = prediction.boxes
    assert boxes.dtype == torch.float32 and boxes.shape == (300, 4)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 320).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= 200).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert boxes[:, 2].max() > 200  # x reaches past the height: widths are scaled by w, not h
    assert prediction.labels.dtype == torch.int64
    assert prediction.names == [COCO_CLASS_NAMES[i] for i in prediction.labels.tolist()]
    assert (prediction.scores[:-1] >= prediction.scores[1:]).all()


def test_threshold_filters(detector):
    image = _noise_image(160, 128)
    (everything,) = detector.predict(image, conf_threshold=0.0, image_size=SMALL)
    (kept,) = detector.predict(image, conf_threshold=LOW_CONF, image_size=SMALL)
    assert len(kept) == int((everything.scores >= LOW_CONF).sum())
    (none,) = detector.predict(image, conf_threshold=1.0, image_size=SMALL)
    assert len(none) == 0 and none.boxes.shape == (0, 4) and none.names == []


def test_every_input_kind_and_batching(detector, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    _noise_image(96, 64, seed=1).save(folder / "b.png")
    _noise_image(64, 96, seed=2).save(folder / "a.jpg")
    pil = _noise_image(80, 80, seed=3)
    array = np.asarray(_noise_image(50, 70, seed=4))
    tensor_batch = torch.rand(2, 3, 40, 60)
    sources = [folder, str(folder / "b.png"), pil, array, tensor_batch]

    one_batch = detector.predict(sources, conf_threshold=0.0, image_size=SMALL, batch_size=16)
    small_batches = detector.predict(sources, conf_threshold=0.0, image_size=SMALL, batch_size=3)
    sizes = [(64, 96), (96, 64), (96, 64), (80, 80), (50, 70), (60, 40), (60, 40)]
    assert [p.image_size for p in one_batch] == sizes
    assert [p.source.name if p.source else None for p in one_batch] == ["a.jpg", "b.png", "b.png"] + [None] * 4
    assert one_batch[2].image is None and one_batch[3].image is not None
    for batched, alone in zip(one_batch, small_batches):
        torch.testing.assert_close(batched.scores, alone.scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(one_batch[1].boxes, one_batch[2].boxes)  # same file twice


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"conf_threshold": 1.5}, r"conf_threshold must be in \[0, 1\]"),
        ({"image_size": 600}, "image_size must be a positive multiple of 32"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"channels": "hsv"}, "channels must be 'rgb' or 'bgr'"),
    ],
)
def test_bad_predict_arguments(detector, kwargs, message):
    with pytest.raises(ValueError, match=message):
        detector.predict(_noise_image(32, 32), **kwargs)


def test_bgr_arrays_give_the_rgb_boxes(detector, fixture_images):
    """OpenCV's BGR arrays with channels="bgr" are the RGB image; read as RGB they are another image."""
    rgb = (fixture_images[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()  # HxWx3
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    (reference,) = detector.predict(rgb, conf_threshold=LOW_CONF, image_size=SMALL)
    (from_bgr,) = detector.predict(bgr, conf_threshold=LOW_CONF, image_size=SMALL, channels="bgr")
    assert len(reference) > 0 and reference.names == from_bgr.names
    assert torch.equal(from_bgr.boxes, reference.boxes) and torch.equal(from_bgr.scores, reference.scores)
    (swapped,) = detector.predict(bgr, conf_threshold=LOW_CONF, image_size=SMALL)  # the mistake the option prevents
    assert len(swapped) != len(reference) or not torch.allclose(swapped.scores, reference.scores, atol=1e-3)
    # a 4-D array is a batch, like a 4-D tensor
    batch = detector.predict(np.stack([bgr, bgr]), conf_threshold=LOW_CONF, image_size=SMALL, channels="bgr")
    assert len(batch) == 2 and torch.allclose(batch[1].boxes, reference.boxes, atol=1e-3)


def test_empty_folder(detector, tmp_path):
    with pytest.raises(ValueError, match="no images found"):
        detector.predict(tmp_path)


# ---------------------------------------------------------------- draw / save


def test_draw_and_save(detector, tmp_path):
    image = Image.new("RGB", (200, 120), (255, 255, 255))
    image.save(tmp_path / "white.png")
    (from_file,) = detector.predict(tmp_path / "white.png", conf_threshold=0.0, image_size=SMALL)
    (in_memory,) = detector.predict(image, conf_threshold=0.0, image_size=SMALL)
    drawn = from_file.draw()
    assert drawn.size == (200, 120) and drawn.mode == "RGB"
    assert np.asarray(drawn).min() < 255  # something was drawn on the white image
    assert np.array_equal(np.asarray(drawn), np.asarray(in_memory.draw()))  # deterministic colours
    assert np.asarray(image).min() == 255  # the input image is not drawn on

    saved = in_memory.save(tmp_path / "out" / "annotated.png")
    with Image.open(saved) as reread:
        assert np.array_equal(np.asarray(reread), np.asarray(drawn))


def test_draw_without_image_or_source():
    empty = torch.zeros(0, 4)
    prediction = dfine.Prediction(empty, empty[:, 0], empty[:, 0].long(), [], image_size=(8, 8))
    with pytest.raises(ValueError, match="neither an image nor a source"):
        prediction.draw()


def test_dfine_training_checkpoint_brings_its_config_and_names(tmp_path):
    import dataclasses

    import dfine
    from dfine.config.presets import model_config

    cfg = model_config("n", num_classes=3, eval_spatial_size=(320, 320), num_queries=100)
    model = dfine.DFINEModel.from_config(cfg)
    path = tmp_path / "best.pth"
    meta = {"class_names": ["circle", "square", "star"], "model": dataclasses.asdict(cfg)}
    torch.save({"model": model.state_dict(), "dfine": meta}, path)
    detector = dfine.DFINE.from_checkpoint(path, device="cpu")
    assert detector.class_names == ["circle", "square", "star"]
    assert detector.input_size == 320 and detector.model.decoder.num_queries == 100
    (prediction,) = detector.predict(torch.rand(3, 200, 300), conf_threshold=0.0)
    assert prediction.image_size == (300, 200) and len(prediction) <= 100 * 3  # top-K over (query, class)


def _rss_mb() -> float:
    """This process's resident memory (Linux /proc)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_stream_mode_reads_a_video_lazily_with_flat_memory(tmp_path, monkeypatch):
    """500 frames streamed: frames are decoded batch by batch and memory does not grow with the frame count."""
    pytest.importorskip("cv2")  # dfine[video]
    from dfine.deploy import video

    path = tmp_path / "clip.avi"
    base = np.asarray(_noise_image(320, 180, seed=5))
    with video.VideoWriter(path, 25.0, (320, 180)) as writer:
        for k in range(500):
            writer.write(Image.fromarray(np.roll(base, 2 * k, axis=1)))
    decoded = []
    frames_of = video.VideoReader.__iter__

    def counting(reader):
        for frame in frames_of(reader):
            decoded.append(1)
            yield frame

    monkeypatch.setattr(video.VideoReader, "__iter__", counting)
    tiny = dfine.DFINE(dfine.build_model("n", num_queries=20, eval_spatial_size=(64, 64)), device="cpu")  # fast
    stream = tiny.predict(path, conf_threshold=0.5, batch_size=4, stream=True)
    first = next(stream)
    assert first.source == path and first.frame == 0 and first.image.size == (320, 180)
    assert len(decoded) <= 5  # one batch (and the frame that ends it), not the video
    rss = {}
    for prediction in stream:
        if prediction.frame in (100, 499):
            rss[prediction.frame] = _rss_mb()
    assert prediction.frame == 499 and len(decoded) == 500
    # 400 frames held in memory would be ~70 MB (320x180 RGB); streamed, the process stays where it was
    assert rss[499] - rss[100] < 25, rss

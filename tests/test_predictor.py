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
from dfine.categories import COCO_CLASS_NAMES
from dfine.data.images import LETTERBOX_FILL, letterbox_boxes_to_image, letterbox_geometry, letterbox_image
from dfine.deploy import Backend, BackendDetector, ModelMetadata
from dfine.deploy.runtime import preprocess
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


def test_loaded_weights_predict_with_the_fast_paths_and_exact_keeps_the_official_ones(official_n_weights):
    fast = dfine.DFINE.from_pretrained(official_n_weights, device="cpu")
    exact = dfine.DFINE.from_pretrained(official_n_weights, device="cpu", exact=True)
    fast_kinds = {type(m).__name__ for m in fast.model.modules()}
    exact_kinds = {type(m).__name__ for m in exact.model.modules()}
    assert "GatherDeformableAttention" in fast_kinds and "GatherDeformableAttention" not in exact_kinds
    assert fast.model.backbone.stem.stem1.folded_weight is not None
    assert exact.model.backbone.stem.stem1.folded_weight is None
    assert fast.model.backbone.stem.stem1.conv.weight.is_contiguous(memory_format=torch.channels_last)
    image = _noise_image(320, 200)
    (a,) = fast.predict(image, conf_threshold=LOW_CONF)
    (b,) = exact.predict(image, conf_threshold=LOW_CONF)
    assert len(a) == len(b) > 0
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-4)
    torch.testing.assert_close(a.boxes, b.boxes, rtol=0, atol=1e-2)  # pixels
    assert torch.equal(a.labels, b.labels)


def test_torch_backend_converts_only_when_asked(official_n_weights):
    from dfine.deploy.backend import TorchBackend
    from dfine.deploy.wrapper import load_deploy_model

    exact, metadata = load_deploy_model(checkpoint=official_n_weights)
    TorchBackend(exact, metadata, "cpu")
    assert exact.model.backbone.stem.stem1.folded_weight is None
    fast, metadata = load_deploy_model(checkpoint=official_n_weights)
    TorchBackend(fast, metadata, "cpu", fast=True)
    assert fast.model.backbone.stem.stem1.folded_weight is not None


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
        ({"resize": "crop"}, "resize must be one of 'squash', 'letterbox', got 'crop'"),
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


def test_predict_reads_urls_and_glob_patterns(detector, http_folder):
    base, folder = http_folder
    _noise_image(96, 64, seed=6).save(folder / "a.png")
    _noise_image(64, 96, seed=7).save(folder / "b.png")
    from_url, *from_files = detector.predict(
        [f"{base}/a.png", str(folder / "*.png")], conf_threshold=0.0, image_size=SMALL
    )
    assert from_url.source is None and from_url.image is not None  # in memory, kept for drawing
    assert [p.source.name for p in from_files] == ["a.png", "b.png"]
    assert torch.equal(from_url.boxes, from_files[0].boxes) and torch.equal(from_url.scores, from_files[0].scores)


# ---------------------------------------------------------------- letterbox


def _scene(fixture_images: torch.Tensor, width: int, height: int) -> Image.Image:
    """The first official fixture image resized to ``width x height``: content the N weights find things in."""
    rgb = (fixture_images[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(rgb).resize((width, height), Image.BILINEAR)


def test_letterbox_of_a_square_image_is_the_squash(detector, fixture_images):
    image = _scene(fixture_images, 300, 300)
    side = SMALL + 32  # not a power of two, so boxes in input pixels would be rounded (see preprocess)
    (squash,) = detector.predict(image, conf_threshold=LOW_CONF, image_size=side)
    (letterbox,) = detector.predict(image, conf_threshold=LOW_CONF, image_size=side, resize="letterbox")
    assert len(squash) > 0
    for name in ("boxes", "scores", "labels"):
        assert torch.equal(getattr(letterbox, name), getattr(squash, name)), name


def test_letterbox_boxes_are_the_model_boxes_mapped_back(detector, fixture_images):
    """A tall image: the model on the letterboxed input by hand, boxes mapped back with the pure geometry."""
    image = _scene(fixture_images, 200, 400)
    (prediction,) = detector.predict(image, conf_threshold=LOW_CONF, image_size=SMALL, resize="letterbox")
    inputs = T.ToTensor()(letterbox_image(image, SMALL)).unsqueeze(0)
    with torch.no_grad():
        (found,) = dfine.PostProcessor()(detector.model(inputs), torch.tensor([[SMALL, SMALL]]))  # input pixels
    keep = found["scores"] >= LOW_CONF
    boxes = letterbox_boxes_to_image(found["boxes"][keep], letterbox_geometry(200, 400, SMALL))
    assert len(prediction) > 0 and prediction.image_size == (200, 400)
    torch.testing.assert_close(prediction.scores, found["scores"][keep], rtol=0, atol=0)
    torch.testing.assert_close(prediction.boxes, clip_boxes_to_image(boxes, (400, 200)), rtol=0, atol=1e-4)
    assert (prediction.boxes >= 0).all() and (prediction.boxes[:, 0::2] <= 200).all()
    assert (prediction.boxes[:, 1::2] <= 400).all()


def test_letterbox_of_a_wide_image_equals_the_squash_of_it_padded_square(detector, fixture_images):
    """A 512x256 image letterboxed into 256 is the same model input as its 512x512 gray-padded square squashed
    into 256; the letterbox boxes are then the square's boxes moved up by the 128 px of padding."""
    content = _scene(fixture_images, 384, 192)
    wide = Image.new("RGB", (512, 256), (LETTERBOX_FILL,) * 3)
    wide.paste(content, (64, 32))  # gray all round, so the resize blends gray into gray at the edges
    square = Image.new("RGB", (512, 512), (LETTERBOX_FILL,) * 3)
    square.paste(content, (64, 32 + 128))
    assert torch.equal(preprocess([wide], SMALL, "letterbox")[0], preprocess([square], SMALL)[0])

    (letterbox,) = detector.predict(wide, conf_threshold=LOW_CONF, image_size=SMALL, resize="letterbox")
    (squash,) = detector.predict(square, conf_threshold=LOW_CONF, image_size=SMALL)
    assert len(letterbox) > 0 and torch.equal(letterbox.labels, squash.labels)
    assert torch.equal(letterbox.scores, squash.scores)
    moved = clip_boxes_to_image(squash.boxes - torch.tensor([0.0, 128.0, 0.0, 128.0]), (256, 512))
    torch.testing.assert_close(letterbox.boxes, moved, rtol=0, atol=1e-3)  # well inside 0.5 px: fp32 rounding only


class _ContentBox(Backend):
    """A fake static-batch runtime that "detects" the white part of each input: what every backend returns."""

    name = "fake"

    def __init__(self) -> None:
        super().__init__(ModelMetadata(("white",), image_size=64, num_top_queries=1), fixed_batch=2)

    def _run(self, images, orig_target_sizes):
        boxes = []
        for white in (images > 0.9).all(dim=1):  # [S, S]
            ys, xs = white.nonzero(as_tuple=True)
            boxes.append(torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float() / white.shape[-1])
        boxes = torch.stack(boxes) * orig_target_sizes.repeat(1, 2).float()  # the graph's decoding
        count = len(images)
        return torch.zeros(count, 1, dtype=torch.int64), boxes[:, None], torch.ones(count, 1)


@pytest.mark.parametrize("resize", ["squash", "letterbox"])
def test_every_backend_maps_letterbox_boxes_back_in_padded_batches(resize):
    images = [Image.new("RGB", size, (255, 255, 255)) for size in [(100, 50), (30, 90), (64, 64)]]
    predictions = BackendDetector(_ContentBox()).detect(images, [None] * 3, conf_threshold=0.0, resize=resize)
    assert [p.boxes.tolist() for p in predictions] == [[[0.0, 0.0, 100.0, 50.0]], [[0.0, 0.0, 30.0, 90.0]],
                                                       [[0.0, 0.0, 64.0, 64.0]]]  # fmt: skip


def test_resize_is_checked_before_any_image_is_read(detector, tmp_path):
    with pytest.raises(ValueError, match="resize must be one of"):
        detector.predict(tmp_path / "missing.png", resize="Letterbox")


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


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_compile_runs_the_compiled_graph_with_the_eager_results():
    """torch.compile (inductor, frozen weights) at the input size; ~1 min of compiling on 2 cores."""
    torch.manual_seed(0)
    model = dfine.build_model("n", num_classes=3, decoder={"num_layers": 1}, eval_spatial_size=(256, 256))
    detector = dfine.DFINE(model, device="cpu")
    images = [_noise_image(300, 200, seed) for seed in range(2)]
    eager = detector.predict(images[0], conf_threshold=0.0) + detector.predict(images, conf_threshold=0.0)
    seconds = detector.compile(batch_size=1)
    assert seconds > 0 and detector.detector.backend._compiled_shape == (1, 3, 256, 256)
    calls = []
    compiled = detector.detector.backend._compiled
    detector.detector.backend._compiled = lambda *a: calls.append(1) or compiled(*a)
    again = detector.predict(images[0], conf_threshold=0.0) + detector.predict(images, conf_threshold=0.0)
    assert calls == [1]  # batch 1 ran the compiled graph, batch 2 the eager model
    for a, b in zip(eager, again):  # random weights: near-tied scores may swap places, so boxes pair by distance
        torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-4)
        assert torch.cdist(a.boxes, b.boxes).min(dim=1).values.max() < 0.5  # pixels

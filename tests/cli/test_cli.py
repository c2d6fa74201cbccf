"""The ``dfine`` command (info, predict, one-line errors) and the official-style YAML reader behind ``-c``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dfine import DFINE
from dfine.builders import build_model
from dfine.categories import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from dfine.cli.main import main
from dfine.config.presets import model_config
from dfine.config.yaml_model import load_model_config

REPO_ROOT = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------- official-style YAML files

# Laid out like the official configs/ tree: a size file that includes dataset, runtime and base files.
BASE_YAML = """\
task: detection
model: DFINE
criterion: DFINECriterion
postprocessor: DFINEPostProcessor
use_focal_loss: True
eval_spatial_size: [640, 640] # h w

DFINE:
  backbone: HGNetv2
  encoder: HybridEncoder
  decoder: DFINETransformer

HGNetv2:
  pretrained: True
  local_model_dir: weight/hgnetv2/

HybridEncoder:
  in_channels: [512, 1024, 2048]
  feat_strides: [8, 16, 32]
  hidden_dim: 256
  use_encoder_idx: [2]
  num_encoder_layers: 1
  nhead: 8
  dim_feedforward: 1024
  dropout: 0.
  enc_act: 'gelu'
  expansion: 1.0
  depth_mult: 1
  act: 'silu'

DFINETransformer:
  feat_channels: [256, 256, 256]
  feat_strides: [8, 16, 32]
  hidden_dim: 256
  num_levels: 3
  num_layers: 6
  eval_idx: -1
  num_queries: 300
  num_denoising: 100
  label_noise_ratio: 0.5
  box_noise_scale: 1.0
  reg_max: 32
  reg_scale: 4
  layer_scale: 1
  num_points: [3, 6, 3]
  cross_attn_method: default
  query_select_method: default

DFINEPostProcessor:
  num_top_queries: 300
"""

DATASET_YAML = """\
task: detection
evaluator:
  type: CocoEvaluator
  iou_types: ['bbox']
num_classes: 80
remap_mscoco_category: True
train_dataloader:
  type: DataLoader
  dataset:
    type: CocoDetection
    img_folder: /data/COCO2017/train2017/
"""

N_YAML = """\
__include__: [
  '../dataset/coco_detection.yml',
  '../runtime.yml',
  '../base/dfine_hgnetv2.yml',
]

output_dir: ./output/dfine_hgnetv2_n_coco

DFINE:
  backbone: HGNetv2

HGNetv2:
  name: 'B0'
  return_idx: [2, 3]
  freeze_at: -1
  freeze_norm: False
  use_lab: True

HybridEncoder:
  in_channels: [512, 1024]
  feat_strides: [16, 32]
  hidden_dim: 128
  use_encoder_idx: [1]
  dim_feedforward: 512
  expansion: 0.34
  depth_mult: 0.5

DFINETransformer:
  feat_channels: [128, 128]
  feat_strides: [16, 32]
  hidden_dim: 128
  num_levels: 2
  num_layers: 3
  eval_idx: -1
  num_points: [6, 6]

optimizer:
  type: AdamW
  lr: 0.0008
"""

X_YAML = """\
__include__: ['../dataset/coco_detection.yml', '../base/dfine_hgnetv2.yml']

HGNetv2:
  name: 'B5'
  return_idx: [1, 2, 3]
  freeze_stem_only: True
  freeze_at: 0
  freeze_norm: True

HybridEncoder:
  hidden_dim: 384
  dim_feedforward: 2048

DFINETransformer:
  feat_channels: [384, 384, 384]
  reg_scale: 8
"""


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    """A configs/ tree with the base, dataset, runtime, N and X files; returns its root."""
    files = {
        "base/dfine_hgnetv2.yml": BASE_YAML,
        "dataset/coco_detection.yml": DATASET_YAML,
        "runtime.yml": "use_amp: False\nuse_ema: True\nema:\n  type: ModelEMA\n  decay: 0.9999\n",
        "dfine/dfine_hgnetv2_n_coco.yml": N_YAML,
        "dfine/dfine_hgnetv2_x_coco.yml": X_YAML,
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_official_n_config_equals_the_preset(configs):
    assert load_model_config(configs / "dfine/dfine_hgnetv2_n_coco.yml") == model_config("n")


def test_official_x_config_equals_the_preset(configs):
    assert load_model_config(configs / "dfine/dfine_hgnetv2_x_coco.yml") == model_config("x")


def test_loads_share_no_state(configs):
    # the official loader's mutable default merged every config loaded into the next one
    n_path, x_path = configs / "dfine/dfine_hgnetv2_n_coco.yml", configs / "dfine/dfine_hgnetv2_x_coco.yml"
    assert load_model_config(x_path) == model_config("x")
    assert load_model_config(n_path) == model_config("n")
    assert load_model_config(x_path) == model_config("x")


@pytest.mark.parametrize("size", ["n", "s", "m", "l", "x"])
def test_repository_configs_equal_the_presets(size):
    path = REPO_ROOT / "configs" / "dfine" / f"dfine_hgnetv2_{size}_coco.yml"
    if not path.is_file():
        pytest.skip(f"{path} not in this checkout")
    assert load_model_config(path) == model_config(size)


def test_short_model_only_file_starts_from_the_inferred_preset(tmp_path):
    path = tmp_path / "short.yml"
    path.write_text(
        "num_classes: 3\nHGNetv2:\n  name: B0\n  return_idx: [2, 3]\nDFINETransformer:\n  eps: 1e-2\n  num_layers: 3\n"
    )
    cfg = load_model_config(path)
    assert cfg == model_config("n", num_classes=3)
    assert isinstance(cfg.decoder.eps, float)  # YAML 1.1 reads 1e-2 as a string
    path.write_text("HGNetv2:\n  name: B0\n  return_idx: [1, 2, 3]\n")  # B0 with three levels: S
    assert load_model_config(path) == model_config("s")
    path.write_text("HGNetv2:\n  name: B2\n  pretrained: False\n  local_model_dir: w/\n")
    assert load_model_config(path) == model_config("m")


def test_later_includes_and_the_file_itself_win(configs):
    (configs / "a.yml").write_text("num_classes: 5\nDFINETransformer:\n  num_queries: 100\n  eval_idx: -2\n")
    (configs / "b.yml").write_text("num_classes: 7\nDFINETransformer:\n  num_queries: 200\n")
    (configs / "custom.yml").write_text(
        "__include__: ['dfine/dfine_hgnetv2_n_coco.yml', 'a.yml', 'b.yml']\n"
        "eval_spatial_size: [320, 320]\nDFINETransformer:\n  eval_idx: -1\n"
    )
    cfg = load_model_config(configs / "custom.yml")
    assert cfg.num_classes == 7
    assert cfg.decoder.num_queries == 200  # b over a, nested keys merged one by one
    assert cfg.decoder.eval_idx == -1  # the including file over its includes
    assert cfg.encoder.eval_spatial_size == cfg.decoder.eval_spatial_size == (320, 320)
    assert cfg.encoder.hidden_dim == 128  # still the N values from the first include


def test_unknown_key_names_file_key_and_closest(configs):
    (configs / "typo.yml").write_text(
        "__include__: ['dfine/dfine_hgnetv2_n_coco.yml']\nHybridEncoder:\n  hiden_dim: 64\n"
    )
    with pytest.raises(ValueError, match=r"typo.yml .*unknown key HybridEncoder.hiden_dim; did you mean 'hidden_dim'"):
        load_model_config(configs / "typo.yml")


def test_missing_include_is_explained(configs):
    (configs / "broken.yml").write_text("__include__: ['nowhere.yml']\n")
    with pytest.raises(ValueError, match=r"broken.yml.*'nowhere.yml' not found"):
        load_model_config(configs / "broken.yml")


# ---------------------------------------------------------------- dfine info


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_info_size(capsys):
    status, out, _ = _run(capsys, "info", "--size", "N")
    assert status == 0
    assert "D-FINE-N (HGNetv2-B0, 80 classes)" in out
    assert "3,782,693 (train), 3,753,799 (deploy)" in out
    assert "GFLOPs:     7.3 at 640x640" in out


def test_info_all_sizes_table(capsys):
    # builds and deploys all five sizes (~4 s on 2 idle cores); a small input keeps the FLOP count fast
    status, out, _ = _run(capsys, "info", "--size", "all", "--image-size", "256")
    assert status == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:2] == ["size", "backbone"] and len(lines) == 6
    deploy_params = {line.split()[0]: line.split()[3] for line in lines[1:]}
    assert deploy_params == {
        "N": "3,753,799", "S": "10,237,491", "M": "19,248,189", "L": "30,724,195", "X": "61,601,635"
    }  # fmt: skip


def test_info_config(capsys, configs):
    config = str(configs / "dfine/dfine_hgnetv2_n_coco.yml")
    status, out, _ = _run(capsys, "info", "-c", config, "--image-size", "256")
    assert status == 0
    assert "D-FINE-N layout, HGNetv2-B0, 80 classes" in out
    assert "3,782,693 (train), 3,753,799 (deploy)" in out and "at 256x256" in out


# ---------------------------------------------------------------- dfine predict


def _write_images(folder: Path) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)).save(folder / "wide.jpg")
    Image.fromarray(rng.integers(0, 256, (120, 64, 3), dtype=np.uint8)).save(folder / "tall.png")


def test_predict_folder_with_weights(capsys, tmp_path, official_n_weights):
    _write_images(tmp_path / "images")
    out_dir = tmp_path / "out"
    status, out, err = _run(
        capsys, "predict", "--weights", str(official_n_weights), "--source", str(tmp_path / "images"),
        "--out", str(out_dir), "--conf", "0.05", "--device", "cpu", "--image-size", "256",
    )  # fmt: skip
    assert status == 0, err
    assert "WARNING" not in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["image_ids.json", "predictions.json", "tall.png", "wide.jpg"]
    with Image.open(out_dir / "wide.jpg") as annotated:
        assert annotated.size == (160, 96)
    records = json.loads((out_dir / "predictions.json").read_text())
    assert records, "the 0.05 threshold keeps some detections of the official N weights"
    sizes = {"tall.png": (64, 120), "wide.jpg": (160, 96)}
    for record in records:
        name = Path(record["image_file"]).name
        x, y, w, h = record["bbox"]
        width, height = sizes[name]
        assert min(x, y, w, h) >= 0
        assert x + w <= width + 0.01 and y + h <= height + 0.01
        assert record["score"] >= 0.05
        assert record["category_name"] == COCO_CLASS_NAMES[record["label"]]
        assert record["category_id"] == COCO_CATEGORY_IDS[record["label"]]
        assert record["image_id"] == {"tall.png": 0, "wide.jpg": 1}[name]  # sorted file order
    assert "tall.png:" in out and "wide.jpg:" in out


def test_predict_reads_urls_and_globs_and_letterboxes(capsys, tmp_path, official_n_weights, http_folder):
    base, served = http_folder
    _write_images(tmp_path / "images")
    (served / "wide.jpg").write_bytes((tmp_path / "images" / "wide.jpg").read_bytes())
    out_dir = tmp_path / "out"
    status, out, err = _run(
        capsys, "predict", "--weights", str(official_n_weights), "--source", f"{base}/wide.jpg",
        str(tmp_path / "images" / "*.png"), "--out", str(out_dir), "--conf", "0.05", "--device", "cpu",
        "--image-size", "256", "--resize", "letterbox", "--draw-style", "dfine",
    )  # fmt: skip
    assert status == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["image_ids.json", "predictions.json", "tall.png", "wide.jpg"]
    records = json.loads((out_dir / "predictions.json").read_text())
    by_file = {name: [r for r in records if r["image_file"] == name] for name in {r["image_file"] for r in records}}
    assert set(by_file) == {f"{base}/wide.jpg", str(tmp_path / "images" / "tall.png")}
    detector = DFINE.from_pretrained(official_n_weights, device="cpu")
    (expected,) = detector.predict(
        tmp_path / "images" / "wide.jpg", conf_threshold=0.05, image_size=256, resize="letterbox"
    )
    got = sorted(by_file[f"{base}/wide.jpg"], key=lambda r: -r["score"])
    assert len(got) == len(expected)
    for record, detection in zip(got, expected):  # the letterboxed boxes of the Python API, from a URL
        x0, y0, x1, y1 = detection.box
        assert record["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=0.01)
    assert json.loads((out_dir / "image_ids.json").read_text())[f"{base}/wide.jpg"] == 0
    status, _, err = _run(capsys, "predict", "--weights", str(official_n_weights), "--source",
                          str(tmp_path / "images" / "*.gif"), "--out", str(out_dir))  # fmt: skip
    _assert_one_line_error(status, err, "no files match the pattern")


def test_predict_demo_without_weights_warns_loudly(capsys, tmp_path):
    status, out, err = _run(capsys, "predict", "--size", "n", "--demo", "--out", str(tmp_path / "demo"))
    assert status == 0
    assert "WARNING: no --weights given" in err and "RANDOM weights" in err
    assert (tmp_path / "demo" / "demo.jpg").is_file()
    assert isinstance(json.loads((tmp_path / "demo" / "predictions.json").read_text()), list)


def _assert_one_line_error(status: int, err: str, message: str) -> None:
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dfine: error: ") and message in lines[0]
    assert "Traceback" not in err


def test_error_missing_weights(capsys, tmp_path):
    status, _, err = _run(
        capsys, "predict", "--weights", str(tmp_path / "nope.pth"), "--demo", "--out", str(tmp_path / "o")
    )
    _assert_one_line_error(status, err, "checkpoint not found")


def test_error_unknown_size(capsys):
    status, _, err = _run(capsys, "info", "--size", "q")
    _assert_one_line_error(status, err, "invalid choice: 'q'")


def test_error_empty_folder(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    status, _, err = _run(
        capsys, "predict", "--size", "n", "--source", str(tmp_path / "empty"), "--out", str(tmp_path / "o")
    )
    _assert_one_line_error(status, err, "no images or videos found")


def test_error_no_weights_and_no_size(capsys, tmp_path):
    status, _, err = _run(capsys, "predict", "--demo", "--out", str(tmp_path / "o"))
    _assert_one_line_error(status, err, "pass --weights CHECKPOINT, or --size")


def test_error_output_folder_is_the_input_folder(capsys, tmp_path):
    _write_images(tmp_path / "images")
    folder = str(tmp_path / "images")
    status, _, err = _run(capsys, "predict", "--size", "n", "--source", folder, "--out", folder)
    _assert_one_line_error(status, err, "choose another output folder")


def test_error_bad_config_key(capsys, configs):
    (configs / "typo.yml").write_text("DFINETransformer:\n  num_layer: 3\n")
    status, _, err = _run(capsys, "info", "-c", str(configs / "typo.yml"))
    _assert_one_line_error(status, err, "did you mean 'num_layers'")


def test_error_missing_subcommand(capsys):
    status, _, err = _run(capsys)
    _assert_one_line_error(status, err, "required")


@pytest.mark.parametrize(
    ("name", "backend"), [("model.onnx", "onnx"), ("model.xml", "openvino"), ("m.engine", "tensorrt")]
)
def test_predict_with_an_exported_model_on_the_torch_backend_names_the_backend_flag(tmp_path, capsys, name, backend):
    weights = tmp_path / name
    weights.write_bytes(b"exported")
    status = main(["predict", "--weights", str(weights), "--source", str(tmp_path), "--out", str(tmp_path / "o")])
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{weights} is an exported model, not PyTorch weights: add --backend {backend}")
    assert "Traceback" not in err


def test_info_weights_lists_the_zoo(capsys):
    status, out, _ = _run(capsys, "info", "--weights")
    assert status == 0
    for name in ("dfine-n-coco", "dfine-x-obj2coco", "dfine-l-obj365", "hgnetv2-b6", "dfine-s-coco-hf"):
        assert name in out


def test_predict_with_weights_of_no_preset_advises_flags_predict_has(capsys, tmp_path):
    state = build_model("n").state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("decoder.decoder.layers.2.")}  # a 2-layer decoder
    torch.save(state, tmp_path / "custom.pth")
    _write_images(tmp_path / "images")
    status, _, err = _run(capsys, "predict", "--weights", str(tmp_path / "custom.pth"),
                          "--source", str(tmp_path / "images"), "--out", str(tmp_path / "out"))  # fmt: skip
    _assert_one_line_error(status, err, "--size")
    assert " -c " not in err.replace("dfine export -c", "")


def test_one_vocabulary_for_the_threshold_and_the_version(capsys):
    from dfine.cli.main import _build_parser

    args = _build_parser().parse_args(["predict", "--size", "n", "--demo", "--out", "x", "--conf-threshold", "0.4"])
    assert args.conf == 0.4  # --conf-threshold is the API's conf_threshold; --conf stays
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("dfine ")


def test_a_failing_input_keeps_the_results_before_it(capsys, tmp_path, official_n_weights, http_folder):
    base, _ = http_folder
    _write_images(tmp_path / "images")
    out_dir = tmp_path / "out"
    status, _, err = _run(
        capsys, "predict", "--weights", str(official_n_weights), "--source", str(tmp_path / "images" / "wide.jpg"),
        f"{base}/gone.jpg", "--out", str(out_dir), "--conf", "0.05", "--device", "cpu", "--image-size", "256",
        "--batch-size", "1",
    )  # fmt: skip
    last = err.strip().splitlines()[-1]  # after the progress bar
    assert status == 2 and last.startswith("dfine: error: ") and "HTTP 404" in last and "Traceback" not in err
    assert "the results of the 1 image(s) and 0 frame(s) before it are in" in last
    records = json.loads((out_dir / "predictions.json").read_text())
    assert records and {Path(r["image_file"]).name for r in records} == {"wide.jpg"}

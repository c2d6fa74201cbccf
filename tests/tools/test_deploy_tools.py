"""The seed README's deployment, inference, benchmark and visualization command lines, run as written.

Each tool runs in-process with ``runpy`` (as ``python tools/...py``) from a folder laid out like the
repository (``configs``/``tools`` linked in), so the README's relative paths work unchanged and
outputs land in a tmp folder. Tools that need TensorRT, a GPU or FiftyOne must fail with one clear
error where those are absent.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import runpy
import sys
from pathlib import Path

import pytest
import torch

from dfine.deploy.verify import check_images
from tests.conftest import REPO_ROOT

N_CONFIG = "configs/dfine/dfine_hgnetv2_n_coco.yml"
HAS_TRT_GPU = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
HAS_FIFTYONE = importlib.util.find_spec("fiftyone") is not None


def _tool(cwd: Path, script: str, *args: str) -> tuple[int, str, str]:
    """``python SCRIPT ARGS`` run in ``cwd``: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    argv, previous = sys.argv, os.getcwd()
    sys.argv = [script, *args]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as done:
            runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = argv
        os.chdir(previous)
    return done.value.code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, official_n_weights) -> Path:
    """A folder shaped like the repository root, with the N weights as ``model.pth`` and test inputs."""
    root = tmp_path_factory.mktemp("repo")
    for name in ("configs", "tools"):
        (root / name).symlink_to(REPO_ROOT / name)
    (root / "model.pth").symlink_to(official_n_weights)
    scenes = check_images()
    scenes[0].save(root / "image.jpg")
    (root / "COCO2017").mkdir()
    for index, scene in enumerate(scenes):
        scene.save(root / "COCO2017" / f"{index:012d}.jpg")
    return root


@pytest.fixture(scope="module")
def exported(workdir) -> tuple[Path, str]:
    """``python tools/deployment/export_onnx.py --check -c CONFIG -r model.pth`` (seed README, step 2)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    status, out, err = _tool(workdir, "tools/deployment/export_onnx.py", "--check", "-c", N_CONFIG, "-r", "model.pth")
    assert status == 0, err
    return workdir / "model.onnx", out


def test_export_onnx_check(exported):
    path, out = exported
    assert path.is_file()  # beside the checkpoint, same stem
    assert "opset 17" in out and "dynamic batch" in out
    assert "check: ONNX checker passed; onnxruntime vs PyTorch" in out and "0 unpaired" in out


def test_onnx_inf(exported, workdir):
    status, out, _ = _tool(
        workdir, "tools/inference/onnx_inf.py", "--onnx-file", "model.onnx", "--im-file", "image.jpg"
    )
    assert status == 0 and "onnx: 1 image(s)" in out
    assert (workdir / "onnx_results" / "image.jpg").is_file()
    assert isinstance(json.loads((workdir / "onnx_results" / "predictions.json").read_text()), list)


def test_torch_inf(workdir):
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    status, out, _ = _tool(
        workdir, "tools/inference/torch_inf.py", "-c", N_CONFIG, "-r", "model.pth", "--im-file", "image.jpg",
        "--device", device,
    )  # fmt: skip
    assert status == 0 and "torch: 1 image(s)" in out
    assert (workdir / "torch_results" / "image.jpg").is_file()


def test_openvino_inf_on_a_video(exported, workdir):
    pytest.importorskip("openvino")
    pytest.importorskip("cv2")
    from dfine.deploy.video import VideoWriter

    with VideoWriter(workdir / "video.mp4", 5.0, (640, 480)) as writer:
        for scene in check_images()[:1] * 2:
            writer.write(scene)
    status, out, _ = _tool(
        workdir, "tools/inference/openvino_inf.py", "--ov-file", "model.onnx", "--im-file", "video.mp4"
    )
    assert status == 0 and "2 video frame(s)" in out
    assert (workdir / "openvino_results" / "video.mp4").is_file()


def test_trt_inf(exported, workdir):
    if HAS_TRT_GPU:
        from dfine.deploy import build_engine

        build_engine(exported[0], workdir / "model.trt")
    status, out, err = _tool(workdir, "tools/inference/trt_inf.py", "--trt-file", "model.trt", "--im-file", "image.jpg")
    if HAS_TRT_GPU:
        assert status == 0 and "tensorrt: 1 image(s)" in out
    else:
        assert status == 2 and err.count("\n") == 1
        assert "trt_inf.py: error:" in err and ("pip install dfine[tensorrt]" in err or "NVIDIA GPU" in err)


def test_get_info(workdir):
    status, out, _ = _tool(workdir, "tools/benchmark/get_info.py", "-c", N_CONFIG)
    assert status == 0
    assert "D-FINE-N, HGNetv2-B0, 80 classes" in out
    assert "Params: 3.754 M (3,753,799 deployed" in out
    assert "MACs:   3.6" in out and "FLOPs:  7.3" in out


def test_trt_benchmark(workdir):
    if HAS_TRT_GPU:
        pytest.skip("TensorRT and a GPU are present: timing a real engine belongs to a benchmark run")
    status, _, err = _tool(
        workdir, "tools/benchmark/trt_benchmark.py", "--COCO_dir", "COCO2017", "--engine_dir", "model.engine"
    )
    assert status == 2 and "trt_benchmark.py: error:" in err and err.count("\n") == 1


def test_fiftyone_vis(workdir):
    if HAS_FIFTYONE:
        pytest.skip("FiftyOne is installed: its app is not started in tests")
    status, _, err = _tool(workdir, "tools/visualization/fiftyone_vis.py", "-c", N_CONFIG, "-r", "model.pth")
    assert status == 2 and "pip install dfine[viz]" in err and err.count("\n") == 1


def test_requirements_files_name_what_the_tools_import():
    inference = (REPO_ROOT / "tools" / "inference" / "requirements.txt").read_text()
    benchmark = (REPO_ROOT / "tools" / "benchmark" / "requirements.txt").read_text()
    for package in ("onnxruntime", "openvino", "opencv-python-headless"):
        assert package in inference
    assert "-e ." in inference and "-e ." in benchmark

"""OpenVINO IR converted from the ONNX export: agrees with PyTorch like onnxruntime (see test_onnx.py)."""

from __future__ import annotations

import sys

import pytest
import torch

from dfine.categories import COCO_CLASS_NAMES
from dfine.deploy import MissingDependencyError, compare_detections

ov = pytest.importorskip("openvino")

SCORE_TOL = 2e-5
BOX_TOL_FRACTION = 2e-5  # of the larger original-image side; measured <= 6.3e-6 (0.008 px at 1280)


@pytest.fixture(scope="module")
def ov_backend(n_exports):
    from dfine.deploy import OpenVINOBackend

    return OpenVINOBackend(n_exports["openvino"], threads=2)


def test_ir_files_and_metadata(n_exports, ov_backend):
    xml = n_exports["openvino"]
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert ov_backend.metadata.class_names == COCO_CLASS_NAMES
    assert ov_backend.image_size == 640 and ov_backend.fixed_batch is None
    assert ov_backend.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32  # not bf16


@pytest.mark.parametrize("batch", [1, 3])
def test_openvino_matches_pytorch(ov_backend, n_reference, batches, batch):
    images, sizes = batches[batch]
    exported = ov_backend(images, sizes)
    assert [t.dtype for t in exported] == [torch.int64, torch.float32, torch.float32]
    diff = compare_detections(n_reference(images, sizes), exported, score_tol=1e-4)
    assert diff.unpaired == 0 and diff.paired == 300 * batch, diff.describe()
    assert diff.max_score_diff <= SCORE_TOL, diff.describe()
    assert diff.max_box_diff <= BOX_TOL_FRACTION * int(sizes.max()), diff.describe()


def test_openvino_reads_the_onnx_file_too(n_exports, batches):
    from dfine.deploy import OnnxRuntimeBackend, OpenVINOBackend

    pytest.importorskip("onnxruntime")
    images, sizes = batches[1]
    diff = compare_detections(
        OnnxRuntimeBackend(n_exports["onnx"])(images, sizes), OpenVINOBackend(n_exports["onnx"])(images, sizes)
    )
    assert diff.within(SCORE_TOL, BOX_TOL_FRACTION * 640), diff.describe()


def test_missing_openvino_names_the_extra(monkeypatch, n_exports):
    from dfine.deploy import OpenVINOBackend

    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependencyError, match=r"pip install dfine\[openvino\]"):
        OpenVINOBackend(n_exports["openvino"])


def test_unknown_device(n_exports):
    from dfine.deploy import OpenVINOBackend

    with pytest.raises(ValueError, match="OpenVINO device 'NPU9' is not available"):
        OpenVINOBackend(n_exports["openvino"], device="npu9")

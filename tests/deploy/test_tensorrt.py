"""TensorRT engines and CUDA inference: skipped, saying why, where TensorRT or a GPU is absent."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from dfine.deploy import MissingDependencyError, compare_detections

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
HAS_CUDA = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine")
needs_tensorrt = pytest.mark.skipif(
    not (HAS_TENSORRT and HAS_CUDA),
    reason=f"TensorRT engine tests need TensorRT and a GPU (tensorrt installed: {HAS_TENSORRT}, CUDA: {HAS_CUDA})",
)


def test_without_tensorrt_or_gpu_the_error_says_what_is_missing(tmp_path):
    from dfine.deploy import TensorRTBackend

    if HAS_TENSORRT and HAS_CUDA:
        pytest.skip("TensorRT and a GPU are present: the engine tests below run instead")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0")
    expected = (ValueError, MissingDependencyError)
    with pytest.raises(expected, match=r"pip install dfine\[tensorrt\]|needs an NVIDIA GPU"):
        TensorRTBackend(engine)


@needs_gpu
def test_cuda_torch_backend_matches_cpu(n_checkpoint, n_reference, batches, monkeypatch):
    from dfine.deploy import TorchBackend, load_deploy_model
    from tests.deploy.conftest import N_CONFIG

    # fp32 parity: TF32 convolutions (cuDNN's default) move scores by ~2e-3 (measured on an H200), which
    # re-orders near-tied detections; that precision choice is the user's, the numerics are checked here
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)

    model, metadata = load_deploy_model(N_CONFIG, n_checkpoint)
    cuda = TorchBackend(model, metadata, "cuda")
    images, sizes = batches[3]
    diff = compare_detections(n_reference(images, sizes), cuda(images, sizes), score_tol=1e-3)
    assert diff.unpaired == 0 and diff.max_box_diff < 0.05, diff.describe()


@needs_tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_tensorrt_engine_matches_pytorch(n_exports, n_reference, batches, tmp_path, fp16):
    from dfine.deploy import TensorRTBackend, build_engine

    engine = build_engine(n_exports["onnx"], tmp_path / "n.engine", n_reference.metadata, fp16=fp16, max_batch=4)
    backend = TensorRTBackend(engine)
    assert backend.metadata == n_reference.metadata  # read back from n.engine.json
    for batch in (1, 3):
        images, sizes = batches[batch]
        reference, exported = n_reference(images, sizes), backend(images, sizes)
        if not fp16:  # TF32 convolutions: looser than onnxruntime, still tight
            diff = compare_detections(reference, exported, score_tol=1e-3)
            assert diff.unpaired == 0 and diff.max_box_diff <= 1e-3 * int(sizes.max()), diff.describe()
        else:  # the fp16 LayerNorm overflow returned NaN / no boxes; now the best detections survive
            assert torch.isfinite(exported[1]).all() and torch.isfinite(exported[2]).all()
            assert (exported[2][:, 0] - reference[2][:, 0]).abs().max() < 2e-2
            for image in range(batch):
                assert reference[0][image, 0] in exported[0][image, :10]

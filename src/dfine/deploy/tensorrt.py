"""TensorRT: an engine built from the exported ONNX file with TensorRT's Python API, and its backend.

``build_engine`` does what ``trtexec --onnx=model.onnx --saveEngine=model.engine [--fp16]`` does,
plus an optimization profile for a dynamic batch. With ``fp16``, the normalization layers are kept
in fp32 (TensorRT's own advice for LayerNorm after attention), on top of the opset >= 17 export that
gives TensorRT a real normalization layer instead of a decomposed, overflowing one.

TensorRT 8.6 or newer (the name-based tensor API), an NVIDIA GPU and a CUDA build of PyTorch are
needed; device memory is handled with torch tensors, so pycuda is not. Engines are specific to the
GPU model and TensorRT version that built them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..model_info import resolve_device
from ..optional import import_optional
from .backend import Backend, Outputs
from .metadata import ModelMetadata
from .wrapper import INPUT_NAMES, OUTPUT_NAMES

__all__ = ["TensorRTBackend", "build_engine", "metadata_path"]

_GIB = 1 << 30


def _tensorrt():
    return import_optional("tensorrt", extra="tensorrt", purpose="TensorRT engines")


def _require_cuda() -> None:
    if not torch.cuda.is_available():
        raise ValueError("TensorRT needs an NVIDIA GPU with CUDA, and none is available here (torch.cuda)")


def metadata_path(engine_path: str | Path) -> Path:
    """The ``<engine>.json`` file holding an engine's :class:`ModelMetadata`."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def _parse_onnx(trt, builder, logger, onnx_path: Path):
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    return network, parser


def _keep_normalization_fp32(trt, network, config) -> None:
    """Run LayerNorm in fp32 inside an fp16 engine (its variance overflows fp16)."""
    if not hasattr(trt.LayerType, "NORMALIZATION"):
        return
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type == trt.LayerType.NORMALIZATION:
            layer.precision = trt.float32
            layer.set_output_type(0, trt.float32)
    config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    metadata: ModelMetadata | None = None,
    *,
    fp16: bool = False,
    workspace_gib: float = 4.0,
    max_batch: int = 32,
    opt_batch: int = 1,
) -> Path:
    """Build a serialized TensorRT engine from an ONNX export.

    Args:
        onnx_path: the exported ONNX file (dynamic or static batch).
        engine_path: the engine to write; its metadata goes to ``<engine>.json``.
        metadata: class names etc. to store beside the engine.
        fp16: allow fp16 kernels (normalization layers stay fp32).
        workspace_gib: builder workspace limit in GiB.
        max_batch: largest batch a dynamic-batch engine accepts.
        opt_batch: the batch size TensorRT tunes a dynamic-batch engine for.
    """
    trt = _tensorrt()
    _require_cuda()
    if not 1 <= opt_batch <= max_batch:
        raise ValueError(f"need 1 <= opt batch ({opt_batch}) <= max batch ({max_batch})")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse_onnx(trt, builder, logger, Path(onnx_path))  # the parser owns the weights
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * _GIB))
    if fp16:
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise ValueError("this TensorRT has no FP16 builder flag (strongly typed networks only)")
        config.set_flag(trt.BuilderFlag.FP16)
        _keep_normalization_fp32(trt, network, config)
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    if any(tensor.shape[0] == -1 for tensor in inputs):
        profile = builder.create_optimization_profile()
        for tensor in inputs:
            rest = tuple(tensor.shape)[1:]
            profile.set_shape(tensor.name, (1, *rest), (opt_batch, *rest), (max_batch, *rest))
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ValueError(f"TensorRT could not build an engine from {onnx_path} (see its log above)")
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    if metadata is not None:
        metadata_path(engine_path).write_text(json.dumps(metadata.to_strings(), indent=1))
    return engine_path


class TensorRTBackend(Backend):
    """A serialized TensorRT engine on one GPU.

    Args:
        path: the engine (``.engine`` / ``.trt``), from :func:`build_engine` or ``trtexec``.
        device: ``cuda`` or ``cuda:N`` (default ``cuda``).
    """

    name = "tensorrt"

    def __init__(self, path: str | Path, device: str | None = None) -> None:
        trt = _tensorrt()
        _require_cuda()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"TensorRT engine not found: {path}")
        self.device = resolve_device(device or "cuda")
        if self.device.type != "cuda":
            raise ValueError(f"TensorRT runs on CUDA devices only, not {device!r}; use cuda or cuda:N")
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(self._logger)  # must outlive the engine
            self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if self.engine is None:
                raise ValueError(
                    f"{path}: TensorRT cannot load this engine (built by another TensorRT version or for "
                    "another GPU?); rebuild it here from the ONNX file"
                )
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if not set(INPUT_NAMES) | set(OUTPUT_NAMES) <= set(names):
            raise ValueError(f"{path}: not a D-FINE engine (tensors {names})")
        shape = tuple(self.engine.get_tensor_shape("images"))
        stored = None
        if metadata_path(path).is_file():
            stored = ModelMetadata.from_strings(json.loads(metadata_path(path).read_text()))
        super().__init__(stored or ModelMetadata.for_classes(80, shape[2]), None if shape[0] == -1 else shape[0])
        self.path = path

    def _torch_dtype(self, name: str) -> torch.dtype:
        trt = self._trt
        table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32}
        if hasattr(trt, "int64"):
            table[trt.int64] = torch.int64
        return table[self.engine.get_tensor_dtype(name)]

    def _run(self, images: torch.Tensor, orig_target_sizes: torch.Tensor) -> Outputs:
        feeds = {"images": images, "orig_target_sizes": orig_target_sizes}
        with torch.cuda.device(self.device):
            stream = torch.cuda.current_stream(self.device)
            tensors = {}
            for name, value in feeds.items():  # TensorRT 8 turns int64 inputs into int32
                tensors[name] = value.to(self.device, self._torch_dtype(name)).contiguous()
                self.context.set_input_shape(name, tuple(tensors[name].shape))
                self.context.set_tensor_address(name, tensors[name].data_ptr())
            for name in OUTPUT_NAMES:
                shape = tuple(self.context.get_tensor_shape(name))
                tensors[name] = torch.empty(shape, dtype=self._torch_dtype(name), device=self.device)
                self.context.set_tensor_address(name, tensors[name].data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"TensorRT failed to run {self.path}")
            stream.synchronize()
        labels, boxes, scores = (tensors[name].cpu() for name in OUTPUT_NAMES)
        return labels.long(), boxes.float(), scores.float()

"""OpenVINO IR export (from the ONNX file) and the OpenVINO backend.

The IR is converted from the exported ONNX file, so both formats hold the same graph, inputs and
outputs. Weights stay fp32 unless asked (``ov.save_model`` would halve them by default). At run time
the CPU plugin is asked for fp32 arithmetic: on CPUs with bf16 support it otherwise runs in bf16,
which moves scores by ~1e-2 and reorders detections.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..optional import import_optional
from .backend import Backend, Outputs
from .metadata import METADATA_KEYS, METADATA_PREFIX, ModelMetadata
from .wrapper import INPUT_NAMES, OUTPUT_NAMES

__all__ = ["OpenVINOBackend", "export_openvino", "move_ir", "remove_ir", "save_openvino_model", "PRECISIONS"]

PRECISIONS = ("f32", "bf16", "f16")  # INFERENCE_PRECISION_HINT values offered
_RT_INFO_SECTION = METADATA_PREFIX.rstrip(".")  # rt_info path ["dfine", key]


def _openvino():
    return import_optional("openvino", extra="openvino", purpose="OpenVINO export and inference")


def export_openvino(
    onnx_path: str | Path, xml_path: str | Path, metadata: ModelMetadata, *, fp16_weights: bool = False
) -> Path:
    """Convert an exported ONNX file to OpenVINO IR (``.xml`` + ``.bin``); returns the ``.xml`` path.

    Args:
        onnx_path: the file written by :func:`dfine.deploy.onnx.export_onnx`.
        xml_path: the IR to write; the ``.bin`` goes beside it.
        metadata: stored in the IR's ``rt_info``.
        fp16_weights: store the weights in fp16 (half the file; computation precision is chosen at
            load time).
    """
    model = _openvino().convert_model(str(onnx_path))
    return save_openvino_model(model, xml_path, metadata, fp16_weights=fp16_weights)


def save_openvino_model(model, xml_path: str | Path, metadata: ModelMetadata, *, fp16_weights: bool = False) -> Path:
    """Write an ``openvino.Model`` as IR with ``metadata`` in its ``rt_info``; returns the ``.xml`` path.

    The IR is written under a temporary name and then renamed, so ``xml_path`` only ever holds a
    finished model (an interrupted export leaves no half-written file that would load).
    """
    ov = _openvino()
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    for key, value in metadata.to_strings().items():
        model.set_rt_info(value, [_RT_INFO_SECTION, key[len(METADATA_PREFIX) :]])
    partial = xml_path.with_name(f".{xml_path.stem}.partial.xml")
    try:
        ov.save_model(model, str(partial), compress_to_fp16=fp16_weights)
        move_ir(partial, xml_path)
    finally:
        remove_ir(partial)
    return xml_path


def move_ir(xml_from: Path, xml_to: Path) -> Path:
    """Rename an IR (``.xml`` and its ``.bin``); returns the new ``.xml`` path."""
    xml_from.with_suffix(".bin").replace(xml_to.with_suffix(".bin"))
    xml_from.replace(xml_to)
    return xml_to


def remove_ir(xml_path: Path) -> None:
    """Delete an IR (``.xml`` and its ``.bin``) where it exists."""
    xml_path.unlink(missing_ok=True)
    xml_path.with_suffix(".bin").unlink(missing_ok=True)


def _read_metadata(model) -> ModelMetadata | None:
    values = {}
    for key in METADATA_KEYS:
        if model.has_rt_info([_RT_INFO_SECTION, key]):
            values[METADATA_PREFIX + key] = model.get_rt_info([_RT_INFO_SECTION, key]).astype(str)
    return ModelMetadata.from_strings(values)


class OpenVINOBackend(Backend):
    """An OpenVINO IR (``.xml``) or an ONNX file, compiled by OpenVINO.

    Args:
        path: ``model.xml`` (with its ``.bin``) or ``model.onnx``.
        device: an OpenVINO device name (``CPU``, ``GPU``, ``AUTO``); ``cpu`` works too. Default CPU.
        threads: inference threads; None lets OpenVINO choose.
        precision: ``f32`` (default, agrees with PyTorch), ``bf16`` or ``f16`` (faster where supported).

    In a long-lived process, do not keep the fp32 and the INT8 model of one network compiled side by side:
    with OpenVINO 2026.4 that corrupted the process's heap (a crash minutes later, in unrelated code);
    release one (``del``) before opening the other, as :func:`~dfine.deploy.accuracy.check_accuracy` does.
    """

    name = "openvino"

    def __init__(
        self, path: str | Path, device: str | None = None, threads: int | None = None, precision: str = "f32"
    ) -> None:
        ov = _openvino()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"OpenVINO model not found: {path}")
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        device = (device or "CPU").upper()
        core = ov.Core()
        if device not in ("AUTO", *core.available_devices) and not device.startswith(("AUTO:", "MULTI:", "HETERO:")):
            raise ValueError(f"OpenVINO device {device!r} is not available here; available: {core.available_devices}")
        try:
            model = core.read_model(str(path))
        except RuntimeError as err:
            raise ValueError(f"{path}: OpenVINO cannot read it: {str(err).strip().splitlines()[0]}") from None
        inputs = {port.get_any_name(): port.get_partial_shape() for port in model.inputs}
        outputs = {port.get_any_name() for port in model.outputs}
        if set(inputs) != set(INPUT_NAMES) or not set(OUTPUT_NAMES) <= outputs:
            raise ValueError(
                f"{path}: not a D-FINE export (inputs {sorted(inputs)}, outputs {sorted(outputs)}; expected "
                f"inputs {list(INPUT_NAMES)} and outputs {list(OUTPUT_NAMES)})"
            )
        config = {"INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(model, device, config)
        self.request = self.compiled.create_infer_request()
        shape = inputs["images"]
        image_size = shape[2].get_length() if shape[2].is_static else 640
        batch = shape[0].get_length() if shape[0].is_static else None
        super().__init__(_read_metadata(model) or ModelMetadata.for_classes(80, image_size), batch)
        self.path = path

    def _run(self, images: torch.Tensor, orig_target_sizes: torch.Tensor) -> Outputs:
        results = self.request.infer({"images": images.numpy(), "orig_target_sizes": orig_target_sizes.numpy()})
        labels, boxes, scores = (torch.from_numpy(results[self.compiled.output(name)].copy()) for name in OUTPUT_NAMES)
        return labels.long(), boxes, scores

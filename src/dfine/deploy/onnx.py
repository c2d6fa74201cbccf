"""ONNX export of :class:`~dfine.deploy.wrapper.DeployModel` and the onnxruntime backend.

Opset: 17 or newer. Below 17 ONNX has no ``LayerNormalization``, so exporters spell it out as
ReduceMean/Sub/Pow/Sqrt; TensorRT then runs that variance in fp16, where it overflows, and fp16
engines return no boxes. From 17 on, TensorRT maps the op to its normalization layer.

Exporters: torch's dynamo exporter (``torch.export``, needs onnxscript) writes opset 18 and converts
from there; for this model it cannot convert down to 17 ("No Adapter To Version 17 for Pad"). Opset
17 therefore goes through torch's TorchScript exporter (``dynamo=False``, deprecated by torch but
supported up to opset 20), and 18 or newer through dynamo; ``exporter="auto"`` picks so.

A dynamic batch is traced with 2 images by dynamo (``torch.export`` would specialize a batch of 1
into the graph) and 1 by the TorchScript tracer; the tests run one file at batch 1 and 3.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..optional import import_optional
from .backend import Backend, Outputs
from .metadata import ModelMetadata
from .wrapper import INPUT_NAMES, OUTPUT_NAMES, DeployModel

__all__ = [
    "DEFAULT_OPSET",
    "EXPORTERS",
    "MIN_OPSET",
    "OnnxExport",
    "OnnxRuntimeBackend",
    "SIMPLIFIERS",
    "check_onnx_model",
    "export_onnx",
    "validate_opset",
]

MIN_OPSET = 17  # first opset with LayerNormalization (see the module docstring)
DEFAULT_OPSET = 17  # the oldest opset without the fp16 LayerNorm problem: the widest runtime support
DYNAMO_OPSET = 18  # the opset torch's dynamo exporter writes before converting
LEGACY_MAX_OPSET = 20  # the newest opset torch's TorchScript exporter writes
TORCH_MAX_OPSET = 23  # the newest opset torch.onnx knows (torch.onnx._constants.ONNX_MAX_OPSET, torch 2.14)
EXPORTERS = ("auto", "dynamo", "legacy")
SIMPLIFIERS = ("auto", "onnxslim", "onnxsim", "none")
# Images traced for a dynamic batch: torch.export specializes a batch of 1 into the graph, so dynamo
# gets 2; the TorchScript tracer records sizes symbolically and is 4x slower at 2 (measured N, 2 cores).
_TRACE_BATCH = {"dynamo": 2, "legacy": 1}
_TRACE_SEED = 0  # the random trace images (their values do not matter, only their shape)


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ``.onnx`` file (self-contained: no external data file).
        opset: its default-domain opset.
        exporter: ``dynamo`` or ``legacy``.
        simplifier: ``onnxslim``, ``onnxsim`` or None (not simplified).
        batch_size: the static batch size, or None for a dynamic batch.
        seconds: wall time of the export, simplification included.
    """

    path: Path
    opset: int
    exporter: str
    simplifier: str | None
    batch_size: int | None
    seconds: float


def _max_opset() -> int:
    """The newest opset both torch and the installed onnx package know."""
    onnx = import_optional("onnx", extra="onnx", purpose="ONNX export")
    return min(int(onnx.defs.onnx_opset_version()), TORCH_MAX_OPSET)


def validate_opset(opset: int) -> None:
    """Raise ValueError for an opset the export cannot or should not write (reason in the message)."""
    if opset < MIN_OPSET:
        raise ValueError(
            f"opset {opset} is not supported: below {MIN_OPSET} ONNX has no LayerNormalization, so it is "
            "decomposed into primitive ops whose variance overflows in TensorRT fp16 (engines then return "
            f"no boxes); use --opset {MIN_OPSET} or newer"
        )
    newest = _max_opset()
    if opset > newest:
        raise ValueError(
            f"opset {opset} is newer than the installed onnx/torch support ({newest}); use {newest} or older"
        )


def _pick_exporter(exporter: str, opset: int) -> str:
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    if exporter == "auto":
        return "legacy" if opset < DYNAMO_OPSET else "dynamo"
    if exporter == "legacy" and opset > LEGACY_MAX_OPSET:
        raise ValueError(f"the legacy exporter writes opsets up to {LEGACY_MAX_OPSET}; use --exporter dynamo")
    if exporter == "dynamo":
        import_optional("onnxscript", extra="onnx", purpose="the dynamo ONNX exporter")
    return exporter


@contextlib.contextmanager
def _trace_mode(module: torch.nn.Module) -> Iterator[None]:
    """Autograd on, but no parameter requiring grad: the training-time kernels at inference memory.

    With autograd off the model may pick inference-only kernels, e.g. the deformable attention's
    ``embedding_bag`` sampling, which has no ONNX op: it exports as Loop nodes that run 4x slower in
    onnxruntime and do not suit TensorRT, where the ``grid_sample`` path maps to GridSample. As no
    tensor requires grad, autograd records nothing, so memory stays that of inference (the official
    script traced with trainable parameters and ran out of memory for M at batch 32).
    """
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        with torch.enable_grad():
            yield
    finally:
        for parameter, flag in zip(module.parameters(), flags):
            parameter.requires_grad_(flag)


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Hide the exporters' expected chatter: warnings about choices made on purpose, optimizer notes."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)  # e.g. "Skipping constant folding for op Split with multiple outputs"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning
            )
            warnings.filterwarnings("ignore", message=".*feature will be removed", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*Constant folding", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*axis name", category=UserWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _export_graph(
    model: DeployModel, path: Path, image_size: int, batch_size: int | None, opset: int, exporter: str
) -> None:
    trace_batch = batch_size or _TRACE_BATCH[exporter]
    generator = torch.Generator().manual_seed(_TRACE_SEED)
    images = torch.rand(trace_batch, 3, image_size, image_size, generator=generator)
    sizes = torch.full((trace_batch, 2), image_size, dtype=torch.int64)
    common = dict(input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES), opset_version=opset)
    with _trace_mode(model), _quiet_exporters():
        if exporter == "legacy":
            axes = None if batch_size else {name: {0: "N"} for name in (*INPUT_NAMES, *OUTPUT_NAMES)}
            torch.onnx.export(model, (images, sizes), str(path), dynamo=False, dynamic_axes=axes, **common)
        else:
            batch = torch.export.Dim("N", min=1, max=1024)
            shapes = None if batch_size else {"images": {0: batch}, "orig_target_sizes": {0: batch}}
            torch.onnx.export(
                model,
                (images, sizes),
                str(path),
                dynamo=True,
                dynamic_shapes=shapes,
                external_data=False,
                verbose=False,
                **common,
            )


def _default_opset(model_proto) -> int:
    return next(int(entry.version) for entry in model_proto.opset_import if entry.domain in ("", "ai.onnx"))


def _simplify(model_proto, simplifier: str):
    """The simplified model and the tool used (None if skipped); ``auto`` takes onnxslim, then onnxsim."""
    if simplifier not in SIMPLIFIERS:
        raise ValueError(f"unknown simplifier {simplifier!r}; choose one of {', '.join(SIMPLIFIERS)}")
    if simplifier == "none":
        return model_proto, None
    if simplifier == "auto":
        for name in ("onnxslim", "onnxsim"):
            with contextlib.suppress(ImportError):
                return _simplify(model_proto, name)
        warnings.warn("neither onnxslim nor onnxsim is installed: the ONNX model is not simplified", stacklevel=3)
        return model_proto, None
    if simplifier == "onnxslim":
        onnxslim = import_optional("onnxslim", extra="onnx", purpose="ONNX simplification")
        return onnxslim.slim(model_proto), "onnxslim"
    onnxsim = import_optional("onnxsim", extra="onnx", purpose="ONNX simplification with onnxsim")
    simplified, ok = onnxsim.simplify(model_proto)
    if not ok:
        raise ValueError("onnxsim could not validate the simplified model; export with --simplify onnxslim or none")
    return simplified, "onnxsim"


def export_onnx(
    model: DeployModel,
    path: str | Path,
    metadata: ModelMetadata,
    *,
    opset: int = DEFAULT_OPSET,
    batch_size: int | None = None,
    exporter: str = "auto",
    simplify: str = "auto",
) -> OnnxExport:
    """Export ``model`` to a self-contained ONNX file.

    Args:
        model: the module to export (CPU, eval mode).
        path: the ``.onnx`` file to write (folders are created; an existing file is replaced).
        metadata: written into the file's ``metadata_props``.
        opset: default-domain opset, at least 17.
        batch_size: a static batch size; None exports a dynamic batch dimension ``N``.
        exporter: ``auto``, ``dynamo`` or ``legacy`` (module docstring).
        simplify: ``auto``, ``onnxslim``, ``onnxsim`` or ``none``.

    Raises:
        ValueError: an unsupported opset or option, or an exporter that wrote another opset.
        MissingDependencyError: onnx (or onnxscript, onnxslim, onnxsim) is not installed.
    """
    onnx = import_optional("onnx", extra="onnx", purpose="ONNX export")
    validate_opset(opset)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    chosen = _pick_exporter(exporter, opset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    raw_path = path.with_name(f".{path.stem}.export.onnx")  # the final name only ever holds a finished file
    try:
        _export_graph(model.cpu().eval(), raw_path, metadata.image_size, batch_size, opset, chosen)
        proto = onnx.load(str(raw_path))
    finally:
        raw_path.unlink(missing_ok=True)
    written = _default_opset(proto)
    if written != opset:
        raise ValueError(
            f"the {chosen} exporter wrote opset {written} instead of {opset} (torch's dynamo exporter cannot "
            f"convert this model's Pad op below {DYNAMO_OPSET}); use --opset {written} or --exporter legacy"
        )
    proto, simplifier = _simplify(proto, simplify)
    del proto.metadata_props[:]
    for key, value in metadata.to_strings().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (
        "D-FINE detector: images [N,3,S,S] in [0,1], orig_target_sizes [N,2] (w,h) -> labels, boxes, scores"
    )
    onnx.save(proto, str(path))
    return OnnxExport(path, opset, chosen, simplifier, batch_size, time.perf_counter() - start)


def check_onnx_model(path: str | Path) -> None:
    """Run the ONNX checker (with shape inference) on a file; ValueError naming the problem if it fails."""
    onnx = import_optional("onnx", extra="onnx", purpose="the ONNX checker")
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as err:
        raise ValueError(f"{path}: the ONNX checker rejects the model: {str(err).splitlines()[0]}") from None


def _cuda_providers(device: str) -> list:
    index = int(device.split(":")[1]) if ":" in device else 0
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


class OnnxRuntimeBackend(Backend):
    """An exported ``.onnx`` file in onnxruntime.

    Args:
        path: the ONNX file (ours or the official export).
        device: ``cpu`` (default), or ``cuda``/``cuda:N`` with onnxruntime-gpu installed.
        threads: intra-op threads; None lets onnxruntime choose (all cores).
    """

    name = "onnx"

    def __init__(self, path: str | Path, device: str | None = None, threads: int | None = None) -> None:
        ort = import_optional("onnxruntime", extra="onnx", purpose="ONNX inference")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file not found: {path}")
        device = (device or "cpu").lower()
        if device == "cpu":
            providers: list = ["CPUExecutionProvider"]
        elif device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError(
                    f"device {device!r}: this onnxruntime has no CUDA provider (has {ort.get_available_providers()}); "
                    "install onnxruntime-gpu or use --device cpu"
                )
            providers = _cuda_providers(device)
        else:
            raise ValueError(f"unknown device {device!r} for onnxruntime; use cpu, cuda or cuda:N")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no "Removing initializer" chatter
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
            raise ValueError(f"{path}: onnxruntime cannot load it: {str(err).splitlines()[0]}") from None
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if set(inputs) != set(INPUT_NAMES) or not set(OUTPUT_NAMES) <= set(outputs):
            raise ValueError(
                f"{path}: not a D-FINE export (inputs {sorted(inputs)}, outputs {outputs}; expected inputs "
                f"{list(INPUT_NAMES)} and outputs {list(OUTPUT_NAMES)})"
            )
        batch, _, height, _ = inputs["images"]
        stored = ModelMetadata.from_strings(self.session.get_modelmeta().custom_metadata_map)
        image_size = height if isinstance(height, int) else 640
        super().__init__(stored or ModelMetadata.for_classes(80, image_size), batch if isinstance(batch, int) else None)
        self.path = path

    def _run(self, images: torch.Tensor, orig_target_sizes: torch.Tensor) -> Outputs:
        feeds = {"images": images.numpy(), "orig_target_sizes": orig_target_sizes.numpy()}
        labels, boxes, scores = self.session.run(list(OUTPUT_NAMES), feeds)
        return torch.from_numpy(labels).long(), torch.from_numpy(boxes), torch.from_numpy(scores)

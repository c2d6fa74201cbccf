"""Deployment: export to ONNX / OpenVINO / TensorRT, and inference with any of them.

::

    from dfine.deploy import load_deploy_model, export_onnx, open_backend, BackendDetector

    model, metadata = load_deploy_model("configs/dfine/dfine_hgnetv2_n_coco.yml", "dfine_n_coco.pth")
    export_onnx(model, "dfine_n_coco.onnx", metadata)                 # opset 17, dynamic batch
    detector = BackendDetector(open_backend("onnx", "dfine_n_coco.onnx"))
    predictions = detector.predict("street.jpg")                      # as dfine.DFINE.predict

INT8 for the CPU is NNCF post-training quantization of the OpenVINO IR with an AP check against
fp32 (:mod:`dfine.deploy.quantize`, :mod:`dfine.deploy.accuracy`; ``dfine export --int8 --check``).

The runtimes are optional extras (``pip install dfine[onnx]``, ``[openvino]``, ``[int8]``,
``[tensorrt]``, ``[video]``); each module imports its runtime only when used.
"""

from __future__ import annotations

from ..optional import MissingDependencyError
from .accuracy import AccuracyCheck, AccuracyDropError, check_accuracy, evaluate_backend
from .backend import Backend, TorchBackend
from .compare import DetectionDiff, compare_detections
from .metadata import ModelMetadata
from .onnx import DEFAULT_OPSET, MIN_OPSET, OnnxExport, OnnxRuntimeBackend, check_onnx_model, export_onnx
from .openvino import OpenVINOBackend, export_openvino
from .pipeline import InferenceRun, run_inference
from .quantize import CalibrationSet, Int8Export, calibration_set, export_int8, quantize_openvino
from .runtime import BACKENDS, BackendDetector, open_backend
from .tensorrt import TensorRTBackend, build_engine
from .wrapper import INPUT_NAMES, OUTPUT_NAMES, DeployModel, load_deploy_model

__all__ = [
    "AccuracyCheck",
    "AccuracyDropError",
    "BACKENDS",
    "DEFAULT_OPSET",
    "INPUT_NAMES",
    "MIN_OPSET",
    "OUTPUT_NAMES",
    "Backend",
    "BackendDetector",
    "CalibrationSet",
    "DeployModel",
    "DetectionDiff",
    "InferenceRun",
    "Int8Export",
    "MissingDependencyError",
    "ModelMetadata",
    "OnnxExport",
    "OnnxRuntimeBackend",
    "OpenVINOBackend",
    "TensorRTBackend",
    "TorchBackend",
    "build_engine",
    "calibration_set",
    "check_accuracy",
    "check_onnx_model",
    "compare_detections",
    "evaluate_backend",
    "export_int8",
    "export_onnx",
    "export_openvino",
    "load_deploy_model",
    "open_backend",
    "quantize_openvino",
    "run_inference",
]

"""Optional packages (onnx, onnxruntime, OpenVINO, TensorRT, OpenCV, FiftyOne, supervision): imported on first use.

The core package needs none of them. Each is imported here, when a function needs it, so that a
missing one ends with one error that names the ``pip install`` line, never with a bare
``ModuleNotFoundError`` from deep inside an export.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingDependencyError", "import_optional"]


class MissingDependencyError(ImportError):
    """An optional package needed for the requested feature is not installed (the message says how)."""


def import_optional(module: str, *, extra: str, purpose: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra that installs it.

    Args:
        module: the import name, e.g. ``"onnxruntime"``.
        extra: the ``dfine`` extra that installs it (``pip install dfine[extra]``).
        purpose: what it is needed for, for the message ("ONNX export").
        package: the PyPI name when it differs from the import name (``opencv-python-headless``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"{purpose} needs the {package or module} package, which is not installed ({err}); "
            f"install it with: pip install dfine[{extra}]  (from a checkout: pip install -e '.[{extra}]')"
        ) from None

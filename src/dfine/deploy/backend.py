"""One interface for every runtime: ``backend(images, orig_target_sizes) -> (labels, boxes, scores)``.

Each backend runs the graph of :class:`~dfine.deploy.wrapper.DeployModel` (PyTorch itself, or a
file exported from it) with the same inputs and outputs, as CPU torch tensors: ``images`` float32
``[N, 3, S, S]`` in [0, 1], ``orig_target_sizes`` int64 ``[N, 2]`` (width, height); ``labels``
int64 ``[N, K]``, ``boxes`` float32 ``[N, K, 4]`` xyxy pixels, ``scores`` float32 ``[N, K]``.
Pre- and post-processing live outside the backends (:mod:`dfine.deploy.runtime`), once for all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from ..model.dfine import fast_deploy_flags
from ..model_info import resolve_device
from .metadata import ModelMetadata
from .wrapper import DeployModel

__all__ = ["Backend", "Outputs", "TorchBackend"]

Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # labels, boxes, scores


class Backend(ABC):
    """A loaded model in one runtime.

    Attributes:
        name: the runtime (``torch``, ``onnx``, ``openvino``, ``tensorrt``).
        metadata: class names, input size and K of the model.
        fixed_batch: the batch size of a static-batch export; None when any batch size runs.
    """

    name: ClassVar[str]
    any_input_size: ClassVar[bool] = False  # True: square inputs of any multiple of 32 run, not only image_size

    def __init__(self, metadata: ModelMetadata, fixed_batch: int | None = None) -> None:
        self.metadata = metadata
        self.fixed_batch = fixed_batch

    @property
    def image_size(self) -> int:
        return self.metadata.image_size

    def __call__(self, images: torch.Tensor, orig_target_sizes: torch.Tensor) -> Outputs:
        """Run the model on a batch (shapes and meaning: module docstring)."""
        side = images.shape[-1] if self.any_input_size and images.ndim == 4 and images.shape[-1] % 32 == 0 else None
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, side or self.image_size, side or self.image_size):
            raise ValueError(
                f"images must be [N, 3, {self.image_size}, {self.image_size}] for this model, got {list(images.shape)}"
            )
        if tuple(orig_target_sizes.shape) != (images.shape[0], 2):
            raise ValueError(f"orig_target_sizes must be [{images.shape[0]}, 2], got {list(orig_target_sizes.shape)}")
        if self.fixed_batch is not None and images.shape[0] != self.fixed_batch:
            raise ValueError(
                f"this {self.name} model was exported with a static batch of {self.fixed_batch}, got "
                f"{images.shape[0]} images; re-export with a dynamic batch or pass batches of {self.fixed_batch}"
            )
        images = images.to(torch.float32).contiguous()
        orig_target_sizes = orig_target_sizes.to(torch.int64).contiguous()
        return self._run(images, orig_target_sizes)

    @abstractmethod
    def _run(self, images: torch.Tensor, orig_target_sizes: torch.Tensor) -> Outputs:
        """The runtime call, on checked CPU tensors."""


class TorchBackend(Backend):
    """The PyTorch module itself (eager, ``torch.inference_mode``).

    Args:
        model: the deployed module (:func:`~dfine.deploy.wrapper.load_deploy_model`).
        metadata: its metadata.
        device: ``cpu``, ``cuda`` or ``cuda:N``; None picks CUDA when available.
        fast: convert ``model`` in place with the deploy speedups for ``device``
            (:func:`dfine.model.dfine.fast_deploy_flags`: fp32 rounding differs from the official
            arithmetic by ~2e-4 in logits); False keeps the model as given (export checks compare
            against the official arithmetic).
    """

    name = "torch"
    any_input_size = True  # anchors are rebuilt for another input size

    def __init__(
        self,
        model: DeployModel,
        metadata: ModelMetadata,
        device: str | torch.device | None = None,
        *,
        fast: bool = False,
    ) -> None:
        super().__init__(metadata)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        if fast:
            self.model.model.deploy(**fast_deploy_flags(self.device))

        self._compiled: torch.nn.Module | None = None

    def compile(self, image_size: int, batch_size: int = 1) -> float:
        """``torch.compile`` the module for ``batch_size`` images of ``image_size``; returns the seconds it took.

        Inductor, static shapes, weights frozen into the graph as constants (``freezing``), which lets it fold
        BatchNorm and pre-pack conv weights. Calls of that shape run the compiled graph; any other shape runs
        the eager module (a new shape would mean another compile of about the same time).
        """
        import time

        import torch._inductor.config as inductor_config

        compiled = torch.compile(self.model, dynamic=False)
        images = torch.rand(batch_size, 3, image_size, image_size, device=self.device)
        sizes = torch.tensor([[image_size, image_size]] * batch_size, device=self.device)
        start = time.perf_counter()
        with inductor_config.patch(freezing=True), torch.inference_mode():
            compiled(images, sizes)
        self._compiled, self._compiled_shape = compiled, tuple(images.shape)
        return time.perf_counter() - start

    def _run(self, images: torch.Tensor, orig_target_sizes: torch.Tensor) -> Outputs:
        model = self.model
        if self._compiled is not None and tuple(images.shape) == self._compiled_shape:
            model = self._compiled
        with torch.inference_mode():
            labels, boxes, scores = model(images.to(self.device), orig_target_sizes.to(self.device))
        return labels.cpu(), boxes.cpu(), scores.cpu()

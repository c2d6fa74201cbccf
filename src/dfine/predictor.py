"""High-level inference: ``DFINE.from_pretrained(source).predict(images)`` -> one :class:`Prediction` each.

``source`` is anything :func:`dfine.load_model` takes: a zoo name (``"dfine-s-coco"``), a URL, an
official or dfine checkpoint, or a Hugging Face folder. Prediction is the PyTorch backend of
:mod:`dfine.deploy` with the one pipeline every backend shares (the official one of
``tools/inference/torch_inf.py``): each image, as 8-bit RGB, is squash-resized to ``image_size x
image_size`` (bilinear; ``resize="letterbox"`` keeps the aspect ratio and pads instead), scaled to [0, 1], run
through the deployed model, and decoded with the original (width, height), so boxes come back in original-image
pixels. ``DFINE.track`` associates the detections of consecutive frames into tracks (:mod:`dfine.tracking`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .config.presets import MODEL_PRESETS
from .data.images import ImageInput
from .deploy.accuracy import DEFAULT_MAX_AP_DROP
from .deploy.backend import TorchBackend
from .deploy.metadata import ModelMetadata
from .deploy.runtime import BackendDetector, video_frames
from .deploy.video import is_capture_source, is_video, video_frame_rate
from .deploy.wrapper import DeployModel
from .engine.checkpoint import infer_model_size
from .loading import WeightsSource, load_model
from .model.dfine import DFINE as DFINEModel
from .model.dfine import fast_deploy_flags
from .model.postprocess import PostProcessor
from .model_info import ModelInfo, RandomWeightsWarning, default_class_names, resolve_device
from .prediction import Prediction, to_predictions
from .threads import default_loader_workers
from .tracking import Tracker, track

if TYPE_CHECKING:
    from .engine.recipe_run import TrainResult

__all__ = [
    "DFINE",
    "Prediction",
    "RandomWeightsWarning",
    "default_class_names",
    "infer_model_size",
    "resolve_device",
    "to_predictions",
]


def _info_for(model: DFINEModel, class_names: Sequence[str] | None) -> ModelInfo:
    if model.config is None:
        raise ValueError("this DFINEModel was not built by DFINEModel.from_config, so its architecture is unknown")
    size = infer_model_size(model.state_dict())
    return ModelInfo.for_config(model.config, size=size, class_names=class_names, source="a model built in code")


class DFINE:
    """A D-FINE detector ready for inference on images of any size.

    Args:
        model: a size (``n``, ``s``, ``m``, ``l``, ``x``) to build with random weights (with a
            :class:`RandomWeightsWarning`), or a built ``dfine.DFINEModel``, used as it is (put in eval
            mode, not deployed). For trained weights use :meth:`from_pretrained`.
        class_names: one name per class. Default: the stored names, COCO's for 80 classes, else
            ``class_i``. For a model built from a size, their number sets the class count.
        device: where to run; None picks CUDA when available, else the CPU.
        info: what is known about ``model`` (from :func:`dfine.load_model`); built from the model if None.
        exact: keep the official fp32 arithmetic. By default a model this class loads itself (a size
            here, weights in :meth:`from_pretrained`) is deployed with the speedups of
            :func:`dfine.model.dfine.fast_deploy_flags`, whose logits differ from the official fp32
            ones by ~2e-4 (as far as those are from a float64 evaluation) and which run ~1.3x faster
            on the CPU. A built model passed in is never converted.

    Attributes:
        model: the detector (eval mode, on ``device``).
        info: its :class:`~dfine.ModelInfo` (size, class names, category ids, input size, source).
        class_names: one name per class index.
        device: the ``torch.device`` used.
    """

    def __init__(
        self,
        model: str | DFINEModel = "n",
        *,
        class_names: Sequence[str] | None = None,
        device: str | torch.device | None = None,
        info: ModelInfo | None = None,
        exact: bool = False,
    ) -> None:
        owned = isinstance(model, str)
        if owned:
            if model.lower() not in MODEL_PRESETS:
                raise ValueError(
                    f"DFINE({model!r}): not a size ({', '.join(MODEL_PRESETS)}); for weights use "
                    f"DFINE.from_pretrained({model!r})"
                )
            model, info = load_model(model, num_classes=len(class_names) if class_names is not None else None)
            warnings.warn(
                "this D-FINE model has RANDOM weights, so its detections are meaningless; "
                "load trained weights with DFINE.from_pretrained(source)",
                RandomWeightsWarning,
                stacklevel=2,
            )
        elif not isinstance(model, DFINEModel):
            raise TypeError(
                f"model must be a size ('n', 's', 'm', 'l', 'x') or a dfine.DFINEModel, got {type(model).__name__}"
            )
        self._setup(model, class_names, device, info, deploy=owned, fast=owned and not exact)

    def _setup(
        self,
        model: DFINEModel,
        class_names: Sequence[str] | None,
        device: str | torch.device | None,
        info: ModelInfo | None,
        *,
        deploy: bool,
        fast: bool,
    ) -> None:
        """Hold ``model`` (deployed first when ``deploy``, with the speedups when ``fast``) and its backend."""
        if info is None:
            info = _info_for(model, class_names)
        elif class_names is not None:
            info = info.with_class_names(class_names)
        if len(info.class_names) != model.num_classes:
            raise ValueError(
                f"class_names has {len(info.class_names)} names but the model has {model.num_classes} classes; "
                "pass one name per class"
            )
        self.info = info
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        if deploy:
            self.model.deploy(**(fast_deploy_flags(self.device) if fast else {}))
        postprocessor = PostProcessor(num_classes=model.num_classes, num_top_queries=info.num_top_queries)
        metadata = ModelMetadata.from_info(info)
        backend = TorchBackend(DeployModel(self.model, postprocessor), metadata, self.device)
        self._detector = BackendDetector(backend)

    @classmethod
    def from_pretrained(
        cls,
        source: WeightsSource,
        *,
        size: str | None = None,
        class_names: Sequence[str] | None = None,
        device: str | torch.device | None = None,
        exact: bool = False,
    ) -> DFINE:
        """A deployed detector with the weights of ``source`` (see :func:`dfine.load_model`).

        Args:
            source: a zoo name (``dfine.available_weights()``), URL, official or dfine checkpoint,
                Hugging Face folder / ``.safetensors`` / hub id.
            size: an official checkpoint's size; None infers it from the weights.
            class_names: as in :class:`DFINE`; the class count always comes from the weights.
            device: as in :class:`DFINE`.
            exact: as in :class:`DFINE`: keep the official fp32 arithmetic (no deploy speedups).
        """
        model, info = load_model(source, size=size)
        detector = cls.__new__(cls)
        detector._setup(model, class_names, device, info, deploy=True, fast=not exact)
        return detector

    @classmethod
    def from_checkpoint(
        cls,
        path: WeightsSource,
        size: str | None = None,
        class_names: Sequence[str] | None = None,
        device: str | torch.device | None = None,
    ) -> DFINE:
        """Alias of :meth:`from_pretrained` (kept for code written before it)."""
        return cls.from_pretrained(path, size=size, class_names=class_names, device=device)

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def input_size(self) -> int:
        """Side of the square input the model was built for (pixels)."""
        return self.info.image_size

    def compile(self, batch_size: int = 1) -> float:
        """Compile the model with ``torch.compile`` for :meth:`predict` calls of ``batch_size`` images at the
        model's input size; returns the compile time in seconds.

        Inductor with the weights frozen into the graph; the predictions equal the eager ones to fp32 rounding.
        Calls of another batch size or ``image_size`` keep running eagerly. Measured in ``benchmarks/RESULTS.md``
        (2 CPU cores, 640 px): N 52 ms instead of 63 ms with post-processing, after a 24-36 s compile.
        """
        return self._detector.backend.compile(self.input_size, batch_size)

    @property
    def detector(self) -> BackendDetector:
        """The shared pipeline on the PyTorch backend (what :meth:`predict` runs)."""
        return self._detector

    def predict(
        self,
        source: ImageInput | Sequence[ImageInput],
        conf_threshold: float = 0.25,
        image_size: int | None = None,
        batch_size: int = 8,
        channels: str = "rgb",
        stream: bool = False,
        resize: str = "squash",
    ) -> list[Prediction] | Iterator[Prediction]:
        """Detect objects in images and videos.

        Args:
            source: an image path, a folder (its images, sorted), a video file (every frame), an ``http(s)`` URL of
                an image (downloaded into memory), a glob pattern (``"photos/*.jpg"``, sorted), a PIL image, a
                numpy array (``HxW[xC]``, or ``[B, H, W, C]`` for several), a tensor (``[C, H, W]``, or
                ``[B, C, H, W]``), or a list of these. Any image size.
            conf_threshold: keep detections with score >= this, in [0, 1].
            image_size: side of the square model input in pixels, a multiple of 32; default: the size
                the model was built for (``info.image_size``, 640 for the official models).
            batch_size: images per forward pass.
            channels: channel order of arrays and tensors: ``"rgb"``, or ``"bgr"`` for OpenCV
                (``cv2.imread``) arrays. Files and PIL images are always read as RGB.
            stream: return a generator that reads, predicts and yields batch by batch, so memory stays flat over
                long videos and large folders; the default returns the full list.
            resize: how an image becomes the square model input. ``"squash"`` (default, the official resize
                the published numbers use): resized to ``image_size x image_size``, aspect ratio lost.
                ``"letterbox"``: the longer side scaled to ``image_size``, aspect ratio kept, the image centred
                on gray (114) padding; boxes are mapped back to the original image exactly.

        Returns:
            One :class:`Prediction` per image or video frame, in input order (a frame's ``source`` is its video
            and ``frame`` its index).
        """
        return self._detector.predict(
            source,
            conf_threshold,
            image_size=image_size,
            batch_size=batch_size,
            channels=channels,
            stream=stream,
            resize=resize,
        )

    def __call__(self, source: ImageInput | Sequence[ImageInput], **options) -> list[Prediction] | Iterator[Prediction]:
        """Same as :meth:`predict`."""
        return self.predict(source, **options)

    def track(
        self,
        source: str | Path | int,
        tracker: str = "bytetrack",
        conf_threshold: float = 0.1,
        image_size: int | None = None,
        frame_rate: float | None = None,
        **tracker_options: object,
    ) -> Iterator[Prediction]:
        """Detect and track objects frame by frame; yields one tracked :class:`Prediction` per frame.

        Args:
            source: a video file, a folder of frames (sorted by name), a camera index, or a stream URL
                (``rtsp://``, ``rtmp://``, ``http(s)://`` of a video).
            tracker: ``bytetrack``, ``sort`` or ``ocsort`` (:mod:`dfine.tracking`, ``pip install dfine[track]``).
            conf_threshold: detections kept for the tracker; ByteTrack uses the low-score ones to keep tracks alive.
            image_size: model input side (default: the model's).
            frame_rate: frames per second; default: the video's (25 for folders when unknown).
            tracker_options: passed to the tracker (e.g. ``track_activation_threshold=0.5``).

        Each prediction's ``track_ids`` holds the persistent id of every detection and ``frame`` its index.
        """
        capture = is_capture_source(source)
        if frame_rate is None:
            frame_rate = video_frame_rate(source) if capture or is_video(source) else 25.0
        state = Tracker(tracker, frame_rate=frame_rate, **tracker_options)
        if capture:
            predictions = self._detector.iter_predict(video_frames(source), conf_threshold, 1, image_size)
        else:
            predictions = self.predict(source, conf_threshold, image_size=image_size, batch_size=1, stream=True)
        return track(predictions, state)

    # ------------------------------------------------------------------ training, evaluation, export

    def _has_weights(self) -> bool:
        return self.info.source not in ("random weights", "a model built in code")

    def _train_layout_checkpoint(self, folder: Path, name: str) -> Path:
        """This detector's weights in train layout, as ``folder / name`` (for ``-t`` / ``-r`` style use)."""
        model, info = load_model(self.info.source)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        torch.save({"model": model.state_dict(), "dfine": {"class_names": list(self.class_names)}}, path)
        return path

    def _adopt(self, checkpoint: Path) -> None:
        """Become the detector of ``checkpoint`` (after training), on the same device."""
        trained = DFINE.from_pretrained(checkpoint, device=self.device)
        self.info, self.model, self._detector = trained.info, trained.model, trained._detector

    def train(
        self,
        data: str | Path,
        *,
        epochs: int | None = None,
        image_size: int | None = None,
        batch_size: int = 8,
        device: str | None = None,
        output_dir: str | Path | None = None,
        resume: bool = False,
        seed: int = 0,
        workers: int | None = None,
        threads: int | None = None,
        **overrides: Any,
    ) -> TrainResult:
        """Fine-tune on a dataset: a folder (COCO README layout, a Roboflow COCO export, YOLO ``data.yaml``, Pascal
        VOC), a YOLO data YAML or a COCO json. Afterwards this detector holds the best weights.

        Args:
            data: the dataset; its layout is detected and printed, class names come from it.
            epochs: training epochs; None: the recipe's, from the dataset size (:mod:`dfine.config.recipe`).
            image_size: square input side, a multiple of 32; None: the model's (640 for the official weights).
            batch_size: images per optimizer step; the learning rate is scaled for it.
            device: ``cpu``, ``cuda``, ``cuda:N``; None: CUDA when available.
            output_dir: the run folder; None: ``runs/train/<dataset name>`` (``_2``, ``_3``... when taken).
            resume: continue the run in ``output_dir`` from its ``last.pth``.
            seed: random seed (same seed, same run).
            workers: data-loading processes; None: one per usable core but one, at most 4
                (:func:`dfine.threads.default_loader_workers`).
            threads: intra-op CPU threads; None: :func:`dfine.threads.plan_threads` (``OMP_NUM_THREADS``, else the
                usable cores; minus ``workers`` on CUDA).
            overrides: official config keys over the recipe's, deep-merged (``use_amp=False``,
                ``HGNetv2={"pretrained": False}``, ``print_freq=10``).

        Starting weights: this detector's own (class heads mapped by class name, as ``train.py -t`` does), or for a
        model built from a bare size the ImageNet backbone (downloaded once into the cache).
        """
        from .engine.recipe_run import prepare_run, train_on_data
        from .engine.setup import RunOptions

        size = self.info.size
        if size is None:
            raise ValueError("train(data=...) needs a preset size (n, s, m, l, x); train other models with train.py -c")
        run_dir = _run_folder(data, output_dir, resume)
        start = (
            None if resume or not self._has_weights() else self._train_layout_checkpoint(run_dir, "start_weights.pth")
        )
        config, splits, recipe, _ = prepare_run(
            data,
            size=size,
            output_dir=run_dir,
            epochs=epochs,
            image_size=image_size or self.input_size,
            batch_size=batch_size,
            pretrained_backbone=start is None and not resume,
            num_workers=workers if workers is not None else default_loader_workers(),
            overrides=overrides,
        )
        last = run_dir / "last.pth"
        if resume and not last.is_file():
            raise FileNotFoundError(f"cannot resume: {last} does not exist; train without resume=True first")
        options = RunOptions(
            resume=str(last) if resume else None,
            tuning=str(start) if start else None,
            device=device or str(self.device),
            seed=seed,
            threads=threads,
        )
        result = train_on_data(config, splits, recipe, options)
        self._adopt(result.best_checkpoint or result.last_checkpoint)
        self._data = Path(data)
        return result

    def val(
        self,
        data: str | Path | None = None,
        split: str = "val",
        *,
        batch_size: int = 8,
        output_dir: str | Path | None = None,
    ) -> dict[str, Any]:
        """COCO metrics (``AP``, ``AP50``, ... and ``per_class_ap``) of this detector on a split of ``data`` (default:
        the data of the last :meth:`train`): ``val`` (found as ``valid``/``validation`` too; a dataset without one
        is scored on ``test``, then ``train``), or ``test`` / ``train`` by name. The report (curves, confusion
        matrix, detections) goes to ``output_dir`` (default: ``runs/val/<dataset name>``)."""
        from .engine.recipe_run import evaluate_on_data, prepare_run
        from .engine.setup import RunOptions

        data = data if data is not None else getattr(self, "_data", None)
        if data is None:
            raise ValueError("val() needs data=: a dataset folder, a YOLO data.yaml or a COCO json")
        if not self._has_weights() or self.info.size is None:
            raise ValueError("val() scores trained weights: load them with DFINE.from_pretrained(...) first")
        run_dir = _run_folder(data, output_dir, False, kind="val")
        config, _, _, classes = prepare_run(
            data,
            size=self.info.size,
            output_dir=run_dir,
            epochs=1,
            image_size=self.input_size,
            batch_size=batch_size,
            pretrained_backbone=False,
            overrides=_model_overrides(self.info),
            val_split=None if split == "val" else split,
        )
        if classes.class_names != tuple(self.class_names):
            raise ValueError(
                f"{data}: its classes ({', '.join(classes.class_names[:5])}...) are not this detector's "
                f"({', '.join(self.class_names[:5])}...); evaluate a detector trained on this data"
            )
        checkpoint = self._train_layout_checkpoint(run_dir, "evaluated_weights.pth")
        return evaluate_on_data(config, checkpoint, RunOptions(device=str(self.device), output_dir=str(run_dir)))

    def export(
        self,
        format: str = "onnx",
        path: str | Path | None = None,
        *,
        int8: bool = False,
        calibration: str | Path | Sequence[str | Path] | None = None,
        data: str | Path | None = None,
        max_ap_drop: float = DEFAULT_MAX_AP_DROP,
        **options: Any,
    ) -> Path:
        """Write this detector as ``onnx`` (onnxruntime), ``openvino`` (IR built from the ONNX file) or ``hf``
        (a Hugging Face folder); returns the file (folder for ``hf``). ``options`` go to
        :func:`dfine.deploy.export_onnx` (``opset``, ``batch_size``...); class names and input size travel along.

        ``int8=True`` (openvino) also quantizes the IR with NNCF on ``calibration`` (a dataset, a folder or list of
        images; None: generated scenes) and returns ``STEM_int8.xml``; with ``data`` (a dataset, as :meth:`val`
        takes) it is kept only if its val AP is within ``max_ap_drop`` points of fp32
        (:func:`dfine.deploy.quantize.export_int8`)."""
        from .deploy.accuracy import validation_set
        from .deploy.onnx import export_onnx
        from .deploy.openvino import export_openvino
        from .deploy.quantize import calibration_set, export_int8, require_nncf

        if format not in ("onnx", "openvino", "hf"):
            raise ValueError(f"unknown export format {format!r}; choose onnx, openvino or hf")
        if int8 and format != "openvino":
            raise ValueError(f"int8=True quantizes the OpenVINO model: export('openvino', int8=True), not {format!r}")
        if int8:  # before the export: a missing nncf, calibration folder or dataset fails fast
            require_nncf()
            calibration_images = calibration_set(calibration)
            check_data = validation_set(data) if data is not None else None
        base = Path(path) if path is not None else Path(f"dfine_{self.info.size or 'model'}")
        if format == "hf":
            from .hub.hf import save_hf_checkpoint

            if not self._has_weights():
                raise ValueError("export(format='hf') writes trained weights: load them with from_pretrained first")
            model, info = load_model(self.info.source)
            return save_hf_checkpoint(model, info.class_names, base.with_suffix(""))
        backend = self._detector.backend
        onnx_file = export_onnx(backend.model, base.with_suffix(".onnx"), backend.metadata, **options).path
        if format == "onnx":
            return onnx_file
        xml = export_openvino(onnx_file, base.with_suffix(".xml"), backend.metadata)
        if not int8:
            return xml
        result = export_int8(xml, backend.metadata, calibration_images, check_data=check_data, max_ap_drop=max_ap_drop)
        return result.path

    def __repr__(self) -> str:
        size = f"D-FINE-{self.info.size.upper()}" if self.info.size else "D-FINE"
        return (
            f"DFINE({size}, {self.num_classes} classes, {self.input_size}px, device={self.device}, "
            f"weights={self.info.source})"
        )


def _run_folder(data: str | Path, output_dir: str | Path | None, resume: bool, kind: str = "train") -> Path:
    """The run folder: ``output_dir``, else ``runs/<kind>/<dataset name>`` with ``_2``, ``_3``... when taken."""
    if output_dir is not None:
        return Path(output_dir)
    if resume:
        raise ValueError("resume=True continues a run: pass its output_dir")
    name = Path(data).stem if Path(data).is_file() else Path(data).resolve().name
    folder, counter = Path("runs") / kind / name, 1
    while folder.exists():
        counter += 1
        folder = Path("runs") / kind / f"{name}_{counter}"
    return folder


def _model_overrides(info: ModelInfo) -> dict[str, Any]:
    """Config sections that rebuild ``info``'s model exactly (queries and denoising as trained)."""
    decoder = info.config.decoder
    return {
        "DFINETransformer": {"num_queries": decoder.num_queries, "num_denoising": decoder.num_denoising},
        "DFINEPostProcessor": {"num_top_queries": info.num_top_queries},
    }

"""The D-FINE weights zoo: every official release, in one table.

Facts (file names, release URLs, APs) are from the official README's model zoo tables and, for the
ImageNet HGNetv2 backbones, from the download table of the official ``hgnetv2.py``. The Hugging Face
ports are the ``ustc-community`` transformers conversions of the same weights. This module is data
and lookup only; :mod:`dfine.hub.download` fetches the files.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "OFFICIAL_URL_BASE",
    "HF_URL_BASE",
    "WeightsEntry",
    "ZOO",
    "UnknownWeightsError",
    "available_weights",
    "find_weights",
    "weights_table",
]

# Release assets of Peterande/storage; ``DFINE_WEIGHTS_URL_BASE`` replaces this prefix (see download.py).
OFFICIAL_URL_BASE = "https://github.com/Peterande/storage/releases/download"
_RELEASE = f"{OFFICIAL_URL_BASE}/dfinev1.0"
HF_URL_BASE = "https://huggingface.co"

Kind = Literal["detector", "backbone", "hf"]
Dataset = Literal["coco", "obj365", "obj2coco", "imagenet"]

COCO_CLASSES = 80
OBJ365_CLASSES = 366  # the official obj365_detection.yml: 365 categories plus the unused id 0


@dataclass(frozen=True)
class WeightsEntry:
    """One downloadable set of weights.

    Attributes:
        name: zoo name, e.g. ``dfine-s-coco`` or ``hgnetv2-b0``.
        url: download URL; for ``kind="hf"`` the repository's ``resolve/main/`` base.
        file_name: local file name (for ``hf``: the weights file of the snapshot).
        kind: ``detector`` (official checkpoint), ``backbone`` (ImageNet HGNetv2) or ``hf`` (transformers port).
        size: ``n``..``x`` for detectors, ``B0``..``B6`` for backbones.
        dataset: training data: ``coco``, ``obj365``, ``obj2coco`` (Objects365 then COCO) or ``imagenet``.
        num_classes: classes of the detection head; None for backbones.
        coco_ap: AP on COCO val2017 from the official README; None where not reported.
        sha256: expected SHA-256 of the file; None where upstream publishes none.
        description: one line for listings.
    """

    name: str
    url: str
    file_name: str
    kind: Kind
    size: str
    dataset: Dataset
    num_classes: int | None
    coco_ap: float | None
    sha256: str | None
    description: str

    @property
    def hf_repo_id(self) -> str | None:
        """``owner/name`` of a Hugging Face entry, None for the others."""
        if self.kind != "hf":
            return None
        return self.url.removeprefix(f"{HF_URL_BASE}/").split("/resolve/", 1)[0]


def _detector(name: str, dataset: Dataset, file_name: str, coco_ap: float | None, note: str) -> WeightsEntry:
    size = name.split("-")[1]
    return WeightsEntry(
        name=name,
        url=f"{_RELEASE}/{file_name}",
        file_name=file_name,
        kind="detector",
        size=size,
        dataset=dataset,
        num_classes=OBJ365_CLASSES if dataset == "obj365" else COCO_CLASSES,
        coco_ap=coco_ap,
        sha256=None,
        description=f"D-FINE-{size.upper()} {note}",
    )


def _backbone(size: str) -> WeightsEntry:
    file_name = f"PPHGNetV2_{size}_stage1.pth"
    return WeightsEntry(
        name=f"hgnetv2-{size.lower()}",
        url=f"{_RELEASE}/{file_name}",
        file_name=file_name,
        kind="backbone",
        size=size,
        dataset="imagenet",
        num_classes=None,
        coco_ap=None,
        sha256=None,
        description=f"HGNetv2-{size} ImageNet stage-1 backbone (HGNetv2.pretrained: True)",
    )


_HF_SIZE_WORD = {"n": "nano", "s": "small", "m": "medium", "l": "large", "x": "xlarge"}


def _hf(size: str, dataset: Dataset, coco_ap: float | None, repo_suffix: str = "") -> WeightsEntry:
    repo_id = f"ustc-community/dfine-{_HF_SIZE_WORD[size]}-{dataset}{repo_suffix}"
    return WeightsEntry(
        name=f"dfine-{size}-{dataset}-hf",
        url=f"{HF_URL_BASE}/{repo_id}/resolve/main/",
        file_name="model.safetensors",
        kind="hf",
        size=size,
        dataset=dataset,
        num_classes=OBJ365_CLASSES if dataset == "obj365" else COCO_CLASSES,
        coco_ap=coco_ap,
        sha256=None,
        description=f"D-FINE-{size.upper()} {dataset}, Hugging Face transformers port ({repo_id})",
    )


def _o365(ap_val: float | None, ap_5000: float) -> str:
    """The Objects365 APs of the README (full val set, first 5000 val images); COCO AP is not reported."""
    full = f"AP {ap_val} on Objects365 val, " if ap_val is not None else ""
    return f"Objects365 pre-training; {full}AP {ap_5000} on its first 5000 images"


_O2C = "Objects365 pre-training, then COCO"

ZOO: tuple[WeightsEntry, ...] = (
    _detector("dfine-n-coco", "coco", "dfine_n_coco.pth", 42.8, "COCO"),
    _detector("dfine-s-coco", "coco", "dfine_s_coco.pth", 48.5, "COCO"),
    _detector("dfine-m-coco", "coco", "dfine_m_coco.pth", 52.3, "COCO"),
    _detector("dfine-l-coco", "coco", "dfine_l_coco.pth", 54.0, "COCO"),
    _detector("dfine-x-coco", "coco", "dfine_x_coco.pth", 55.8, "COCO"),
    _detector("dfine-s-obj365", "obj365", "dfine_s_obj365.pth", None, _o365(31.0, 30.5)),
    _detector("dfine-m-obj365", "obj365", "dfine_m_obj365.pth", None, _o365(38.6, 37.4)),
    _detector("dfine-l-obj365", "obj365", "dfine_l_obj365.pth", None, _o365(None, 40.6)),
    _detector("dfine-l-obj365-e25", "obj365", "dfine_l_obj365_e25.pth", None, "(E25) " + _o365(44.7, 42.6)),
    _detector("dfine-x-obj365", "obj365", "dfine_x_obj365.pth", None, _o365(49.5, 46.5)),
    _detector("dfine-s-obj2coco", "obj2coco", "dfine_s_obj2coco.pth", 50.7, _O2C),
    _detector("dfine-m-obj2coco", "obj2coco", "dfine_m_obj2coco.pth", 55.1, _O2C),
    # The L Objects365->COCO release is published only as the E25 file.
    _detector("dfine-l-obj2coco", "obj2coco", "dfine_l_obj2coco_e25.pth", 57.3, f"(E25) {_O2C}"),
    _detector("dfine-x-obj2coco", "obj2coco", "dfine_x_obj2coco.pth", 59.3, _O2C),
    *(_backbone(f"B{i}") for i in range(7)),
    _hf("n", "coco", 42.8),
    _hf("s", "coco", 48.5),
    _hf("m", "coco", 52.3),
    _hf("l", "coco", 54.0),
    _hf("x", "coco", 55.8),
    _hf("s", "obj365", None),
    _hf("m", "obj365", None),
    _hf("l", "obj365", None),
    _hf("x", "obj365", None),
    _hf("s", "obj2coco", 50.7),
    _hf("m", "obj2coco", 55.1),
    _hf("l", "obj2coco", 57.3, repo_suffix="-e25"),
    _hf("x", "obj2coco", 59.3),
)

_BY_NAME = {entry.name: entry for entry in ZOO}


class UnknownWeightsError(ValueError):
    """A weights name that is not in the zoo."""


def available_weights() -> list[str]:
    """Every zoo name, in table order."""
    return [entry.name for entry in ZOO]


def find_weights(name: str) -> WeightsEntry:
    """The zoo entry called ``name`` (case-insensitive); raises :class:`UnknownWeightsError` with close names."""
    entry = _BY_NAME.get(name.strip().lower())
    if entry is not None:
        return entry
    close = difflib.get_close_matches(name.strip().lower(), _BY_NAME, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise UnknownWeightsError(
        f"unknown weights name {name!r}: {hint}run `dfine info --weights` for the list, "
        "or pass a file path, a URL or a Hugging Face id (owner/name)"
    )


def weights_table() -> str:
    """The zoo as a plain-text table (name, dataset, size, classes, COCO AP, file) for ``dfine info --weights``."""
    header = ("name", "dataset", "size", "classes", "COCO AP", "file")
    rows = [
        (
            e.name,
            e.dataset,
            e.size,
            "-" if e.num_classes is None else str(e.num_classes),
            "-" if e.coco_ap is None else f"{e.coco_ap:.1f}",
            e.hf_repo_id or e.file_name,
        )
        for e in ZOO
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

"""Hostile and unlucky inputs to every user-facing entry point, and how each one ended.

Each :class:`Case` writes its files into a fresh folder, runs one command in-process (``train.py``'s
``main`` or the ``dfine`` command's) and is classified by :func:`run_case`:

* ``clear``: exit status ≠ 0 and exactly one ``error:`` line that matches what the case expects the user to
  read (the file, the field and the fix); or, for inputs that are fine, exit status 0.
* ``vague``: one error line, but it does not say what the case expects.
* ``trace``: an exception escaped, or a traceback was printed.
* ``silent``: the command succeeded on an input it should have refused.

``python -m tests.reliability.table`` prints the table for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from PIL import Image

from tests.engine.conftest import tiny_config

__all__ = ["Case", "Outcome", "Workspace", "CASES", "run_case"]


@dataclass(frozen=True)
class Workspace:
    """Files shared by the cases: a tiny COCO set, a trained tiny run and the official N weights."""

    data: Path  # synthetic COCO layout: images/{train,val}, annotations/instances_{train,val}.json
    run: Path  # a 1-epoch tiny run: last.pth (resumable), best.pth (weights only)
    official_n: Path


@dataclass(frozen=True)
class Outcome:
    kind: str  # clear / vague / trace / silent
    status: int | None
    message: str  # the error line, the traceback's last line, or "" when it succeeded


@dataclass(frozen=True)
class Case:
    """One input tried as a user would: ``make(ws, tmp)`` writes files and returns the command line.

    ``expect`` is the regex the single error line must match; ``None`` means the input is fine and the command
    must succeed.
    """

    group: str
    name: str
    make: Callable[[Workspace, Path], tuple[str, list[str]]]
    expect: str | None
    tags: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return f"{self.group}: {self.name}"


def _entry(command: str) -> Callable[[list[str]], int]:
    if command == "train.py":
        from dfine.cli.train import main
    else:
        from dfine.cli.main import main
    return main


def run_case(case: Case, ws: Workspace, tmp: Path) -> Outcome:
    """Run ``case`` in ``tmp`` and classify how it ended."""
    command, argv = case.make(ws, tmp)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = _entry(command)(argv)
    except SystemExit as stop:  # argparse's own exit on a malformed flag
        status = stop.code if isinstance(stop.code, int) else 1
    except BaseException as escaped:  # noqa: BLE001 - any escape is the finding
        last = traceback.format_exception_only(type(escaped), escaped)[-1].strip()
        return Outcome("trace", None, last)
    text = err.getvalue()
    if "Traceback (most recent call last)" in text:
        return Outcome("trace", status, text.strip().splitlines()[-1])
    errors = [part.strip() for part in re.split(r"[\r\n]", text) if "error:" in part]
    if case.expect is None:
        return Outcome("clear" if status == 0 and not errors else "vague", status, " | ".join(errors))
    if status == 0:
        return Outcome("silent", status, "")
    if len(errors) == 1 and re.search(case.expect, errors[0]):
        return Outcome("clear", status, errors[0])
    return Outcome("vague", status, " | ".join(errors) or text.strip()[-300:])


# ----------------------------------------------------------------------------------------------- helpers


def _config(ws: Workspace, tmp: Path, **top: object) -> dict:
    config = tiny_config(ws.data, tmp / "run", epoches=1)
    config.update(top)
    return config


def _write(tmp: Path, config: dict | str, name: str = "cfg.yml") -> Path:
    path = tmp / name
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return path


def _train(ws: Workspace, tmp: Path, edit: Callable[[dict], object] | None = None, *extra: str):
    config = _config(ws, tmp)
    if edit is not None:
        edit(config)
    return "train.py", ["-c", str(_write(tmp, config)), *extra]


def _coco(ws: Workspace, split: str = "train") -> dict:
    return json.loads((ws.data / "annotations" / f"instances_{split}.json").read_text())


def _with_train_json(ws: Workspace, tmp: Path, data: dict | str, *extra: str):
    """train.py on the tiny config whose train annotations are replaced by ``data``."""
    path = tmp / "train.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return _train(ws, tmp, lambda c: c["train_dataloader"]["dataset"].update(ann_file=str(path)), *extra)


def _edited_coco(edit: Callable[[dict], object]) -> Callable[[Workspace, Path], tuple[str, list[str]]]:
    def make(ws: Workspace, tmp: Path):
        data = _coco(ws)
        edit(data)
        return _with_train_json(ws, tmp, data)

    return make


def _copy_train_split(ws: Workspace, tmp: Path) -> tuple[Path, dict]:
    """A private copy of the train images (cases that damage files)."""
    folder = tmp / "images"
    shutil.copytree(ws.data / "images" / "train", folder)
    return folder, _coco(ws)


def _damaged_image(damage: Callable[[Path], object]) -> Callable[[Workspace, Path], tuple[str, list[str]]]:
    def make(ws: Workspace, tmp: Path):
        folder, data = _copy_train_split(ws, tmp)
        damage(folder / data["images"][0]["file_name"])
        path = tmp / "train.json"
        path.write_text(json.dumps(data))
        return "dfine", ["data", "check", str(path), "--img-folder", str(folder)]

    return make


def _bomb(path: Path) -> None:
    Image.new("L", (20000, 20000)).save(path.with_suffix(".png"), optimize=False)
    path.unlink()
    path.with_suffix(".png").rename(path)


def _checkpoint_file(ws: Workspace, tmp: Path, kind: str) -> Path:
    path = tmp / "bad.pth"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes((ws.run / "last.pth").read_bytes()[:50_000])
    elif kind == "random":
        path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).byte().numpy())
    elif kind == "pickle":  # unpickling this would create the marker file
        path.write_bytes(pickle.dumps(_Plant(str(tmp / "EXECUTED"))))
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "other_size":
        from dfine.config.presets import model_config
        from dfine.model.dfine import DFINE

        torch.save({"model": DFINE.from_config(model_config("s")).state_dict()}, path)
    elif kind == "onnx":
        path = tmp / "model.onnx"
        path.write_bytes(b"\x08\x07onnx")
    return path


class _Plant:
    """A pickle that runs code when loaded: ``open(marker, 'w')``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _resume(kind: str) -> Callable[[Workspace, Path], tuple[str, list[str]]]:
    return lambda ws, tmp: _train(ws, tmp, None, "-r", str(_checkpoint_file(ws, tmp, kind)))


def _predict(kind: str) -> Callable[[Workspace, Path], tuple[str, list[str]]]:
    def make(ws: Workspace, tmp: Path):
        image = tmp / "scene.jpg"
        Image.new("RGB", (64, 48), (90, 120, 150)).save(image)
        return "dfine", ["predict", "--weights", str(_checkpoint_file(ws, tmp, kind)), "--source", str(image),
                         "--out", str(tmp / "out")]  # fmt: skip

    return make


def _predict_source(make_source: Callable[[Path], list[str]], *extra: str):
    def make(ws: Workspace, tmp: Path):
        return "dfine", ["predict", "--weights", str(ws.run / "best.pth"), "--source", *make_source(tmp),
                         "--out", str(tmp / "out"), *extra]  # fmt: skip

    return make


def _text_file(tmp: Path, name: str, text: str = "not an image") -> list[str]:
    (tmp / name).write_text(text)
    return [str(tmp / name)]


def _image(tmp: Path, name: str = "scene.jpg") -> Path:
    Image.new("RGB", (64, 48), (90, 120, 150)).save(tmp / name)
    return tmp / name


# -------------------------------------------------------------------------------------------------- cases


def _set(path: str, value: object) -> Callable[[Workspace, Path], tuple[str, list[str]]]:
    """train.py on the tiny config with ``path`` (dotted) set to ``value``."""

    def edit(config: dict) -> None:
        *parents, key = path.split(".")
        node = config
        for name in parents:
            node = node.setdefault(name, {})
        node[key] = value

    return lambda ws, tmp: _train(ws, tmp, edit)


def _raw_config(text: str) -> Callable[[Workspace, Path], tuple[str, list[str]]]:
    def make(ws: Workspace, tmp: Path):
        (tmp / "other.yml").write_text("__include__: ['cfg.yml']\n")
        return "train.py", ["-c", str(_write(tmp, text))]

    return make


def _override(*updates: str) -> Callable[[Workspace, Path], tuple[str, list[str]]]:
    return lambda ws, tmp: _train(ws, tmp, None, "-u", *updates)


def _other_class_count(ws: Workspace, tmp: Path):
    """The tiny run (5 classes) resumed on the same images under a 7-category labelling."""
    for split in ("train", "val"):
        data = _coco(ws, split)
        data["categories"] += [{"id": 6, "name": "ring"}, {"id": 7, "name": "arrow"}]
        (tmp / f"{split}.json").write_text(json.dumps(data))

    def edit(config: dict) -> None:
        config["num_classes"] = 7
        for split, loader in (("train", "train_dataloader"), ("val", "val_dataloader")):
            config[loader]["dataset"]["ann_file"] = str(tmp / f"{split}.json")

    return _train(ws, tmp, edit, "-r", str(ws.run / "last.pth"))


def _missing_last(ws: Workspace, tmp: Path):
    (tmp / "run").mkdir()
    shutil.copy(ws.run / "checkpoint0000.pth", tmp / "run" / "checkpoint0000.pth")
    shutil.copy(ws.run / "best_stg1.pth", tmp / "run" / "best_stg1.pth")
    os.utime(tmp / "run" / "best_stg1.pth", (1, 1))  # older: the newest resumable file is checkpoint0000.pth
    return _train(ws, tmp, None, "-r", str(tmp / "run" / "last.pth"))


def _drop_first_image_file(ws: Workspace, tmp: Path):
    folder, data = _copy_train_split(ws, tmp)
    (folder / data["images"][0]["file_name"]).unlink()
    return _train(ws, tmp, lambda c: c["train_dataloader"]["dataset"].update(img_folder=str(folder)))


def _damaged_train_image(damage: Callable[[Path], object]):
    def make(ws: Workspace, tmp: Path):
        folder, data = _copy_train_split(ws, tmp)
        damage(folder / data["images"][0]["file_name"])
        return _train(ws, tmp, lambda c: c["train_dataloader"]["dataset"].update(img_folder=str(folder)))

    return make


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])


def _negative_box(data: dict) -> None:
    data["annotations"][0]["bbox"][2] = -5


def _unknown_category(data: dict) -> None:
    data["annotations"][0]["category_id"] = 99


def _unknown_image(data: dict) -> None:
    data["annotations"][0]["image_id"] = 12345


def _duplicate_image_id(data: dict) -> None:
    data["images"][1]["id"] = data["images"][0]["id"]


def _no_file_name(data: dict) -> None:
    del data["images"][0]["file_name"]


def _val_without_annotations(ws: Workspace, tmp: Path):
    data = _coco(ws, "val")
    data["annotations"] = []
    (tmp / "val.json").write_text(json.dumps(data))
    return _train(ws, tmp, lambda c: c["val_dataloader"]["dataset"].update(ann_file=str(tmp / "val.json")))


def _images_of(ws: Workspace, tmp: Path, damage: Callable[[Path], object]) -> list[str]:
    image = _image(tmp)
    damage(image)
    return [str(image)]


def _corrupt_video(tmp: Path) -> list[str]:
    (tmp / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))
    return [str(tmp / "clip.mp4")]


def _empty_folder(tmp: Path) -> list[str]:
    (tmp / "empty").mkdir()
    return [str(tmp / "empty")]


def _out_is_a_file(ws: Workspace, tmp: Path):
    (tmp / "out").write_text("a file")
    return "dfine", ["predict", "--weights", str(ws.run / "best.pth"), "--source", str(_image(tmp)),
                     "--out", str(tmp / "out")]  # fmt: skip


def _predict_flags(*flags: str):
    def make(ws: Workspace, tmp: Path):
        return "dfine", ["predict", "--weights", str(ws.run / "best.pth"), "--source", str(_image(tmp)),
                         "--out", str(tmp / "out"), *flags]  # fmt: skip

    return make


def _export(kind: str):
    def make(ws: Workspace, tmp: Path):
        return "dfine", ["export", "-r", str(_checkpoint_file(ws, tmp, kind)), "-o", str(tmp / "model.onnx")]

    return make


def _check_dataset(make_root: Callable[[Workspace, Path], Path]):
    return lambda ws, tmp: ("dfine", ["data", "check", str(make_root(ws, tmp))])


def _no_marker(ws: Workspace, tmp: Path) -> str:
    return "the pickle's code ran" if (tmp / "EXECUTED").exists() else ""


_NAME = r"bad\.pth"
CASES: tuple[Case, ...] = (
    # datasets: training refuses what it cannot train on, and trains around what it can
    Case("dataset", "train split with annotations: []", _edited_coco(lambda d: d.update(annotations=[])),
         r"train\.json: train_dataloader\.dataset\.ann_file has \d+ images but no annotations"),
    Case("dataset", "train json with 0 images", _edited_coco(lambda d: d.update(images=[], annotations=[])),
         r"train\.json: train_dataloader\.dataset\.ann_file has no images"),
    Case("dataset", "val split without annotations", _val_without_annotations,
         r"val\.json: val_dataloader\.dataset\.ann_file has \d+ images but no annotations"),
    Case("dataset", "ann_file does not exist", _set("train_dataloader.dataset.ann_file", "nope.json"),
         r"nope\.json"),
    Case("dataset", "ann_file is not JSON", lambda ws, tmp: _with_train_json(ws, tmp, "{not json"),
         r"train\.json.*(JSON|json)"),
    Case("dataset", "ann_file holds a JSON list", lambda ws, tmp: _with_train_json(ws, tmp, "[1, 2]"),
         r"train\.json"),
    Case("dataset", "an image entry without file_name", _edited_coco(_no_file_name), r"train\.json.*file_name"),
    Case("dataset", "img_folder does not exist", _set("train_dataloader.dataset.img_folder", "nope"), r"nope"),
    Case("dataset", "category id not among the categories", _edited_coco(_unknown_category), r"train\.json.*99"),
    Case("dataset", "two images with one id", _edited_coco(_duplicate_image_id), r"train\.json.*(duplicate|twice)"),
    Case("dataset", "category ids beyond num_classes", _set("num_classes", 2), r"num_classes"),
    Case("dataset", "annotation of an unknown image (dropped)", _edited_coco(_unknown_image), None),
    Case("dataset", "box with negative width (dropped)", _edited_coco(_negative_box), None),
    Case("dataset", "a listed image file is missing (left out)", _drop_first_image_file, None),
    Case("dataset", "truncated JPEG in the train split (replaced)", _damaged_train_image(_truncate), None),
    Case("dataset", "decompression-bomb PNG in the train split (replaced)", _damaged_train_image(_bomb), None),
    Case("dataset", "dfine data check of a missing folder", _check_dataset(lambda ws, tmp: tmp / "nope"), r"nope"),
    Case("dataset", "dfine data check of an empty folder", _check_dataset(lambda ws, tmp: tmp), r"layout|found"),
    # configs: a value is honoured or refused, naming the file and the field
    Case("config", "config file does not exist", lambda ws, tmp: ("train.py", ["-c", str(tmp / "nope.yml")]),
         r"nope\.yml"),
    Case("config", "YAML syntax error", _raw_config("epoches: [1, 2\nfoo: bar\n"), r"cfg\.yml.*line \d+"),
    Case("config", "top level is a list", _raw_config("- 1\n- 2\n"), r"cfg\.yml"),
    Case("config", "__include__ of a missing file", _raw_config("__include__: ['missing.yml']\n"), r"missing\.yml"),
    Case("config", "__include__ cycle", _raw_config("__include__: ['other.yml']\n"), r"cfg\.yml|other\.yml"),
    Case("config", "epoches: -2", _set("epoches", -2), r"cfg\.yml.*epoches"),
    Case("config", "total_batch_size: 0", _set("train_dataloader.total_batch_size", 0), r"total_batch_size"),
    Case("config", "total_batch_size: -4", _set("train_dataloader.total_batch_size", -4), r"total_batch_size"),
    Case("config", "num_workers: -1", _set("train_dataloader.num_workers", -1), r"num_workers"),
    Case("config", "num_classes: 0", _set("num_classes", 0), r"num_classes"),
    Case("config", "eval_spatial_size: 160 (a square)", _set("eval_spatial_size", 160), None),
    Case("config", "eval_spatial_size: [160]", _set("eval_spatial_size", [160]), r"eval_spatial_size"),
    Case("config", "eval_spatial_size: 'big'", _set("eval_spatial_size", "big"), r"eval_spatial_size"),
    Case("config", "eval_spatial_size: [150, 150] (not /32)", _set("eval_spatial_size", [150, 150]),
         r"eval_spatial_size.*32"),
    Case("config", "dataset type YoloDetection", _set("train_dataloader.dataset.type", "YoloDetection"),
         r"YoloDetection"),
    Case("config", "unknown transform op", _set("val_dataloader.dataset.transforms.ops", [{"type": "RandomFoo"}]),
         r"cfg\.yml.*RandomFoo"),
    Case("config", "unknown optimizer type", _set("optimizer.type", "SGDX"), r"cfg\.yml.*SGDX"),
    Case("config", "optimizer lr: 'abc'", _set("optimizer.lr", "abc"), r"lr"),
    Case("config", "backbone name B9", _set("HGNetv2.name", "B9"), r"cfg\.yml.*B9"),
    Case("config", "output_dir inside a file", _set("output_dir", "/dev/null/run"), r"/dev/null/run"),
    Case("config", "-u without '='", _override("epoches"), r"'epoches'.*=value"),
    Case("config", "-u total_batch_size=abc", _override("train_dataloader.total_batch_size=abc"),
         r"total_batch_size"),
    Case("config", "-u of a misspelt key", _override("epoches_=1"), r"epoches_"),
    # checkpoints: every reader says what the file is and what to use instead
    Case("checkpoint", "-r zero-byte file", _resume("empty"), rf"{_NAME}.*empty"),
    Case("checkpoint", "-r truncated file", _resume("truncated"), rf"{_NAME}.*(truncated|incomplete|corrupt)"),
    Case("checkpoint", "-r random bytes", _resume("random"), rf"{_NAME}(?!.*weights_only=False)"),
    Case("checkpoint", "-r pickle that runs code", _resume("pickle"), rf"{_NAME}(?!.*weights_only=False)",
         tags=("no_marker",)),
    Case("checkpoint", "-r a bare tensor", _resume("tensor"), _NAME),
    Case("checkpoint", "-r a folder", _resume("folder"), _NAME),
    Case("checkpoint", "-r another model size", _resume("other_size"), rf"{_NAME}.*(size|-S|D-FINE-S)"),
    Case("checkpoint", "--test-only -r another model size", lambda ws, tmp: _train(ws, tmp, None, "--test-only", "-r",
         str(_checkpoint_file(ws, tmp, "other_size"))), rf"{_NAME}.*D-FINE-S.*config it was trained with \(-c\)"),
    Case("checkpoint", "-r another class count", _other_class_count, r"last\.pth.*(num_classes|classes).*7"),
    Case("checkpoint", "-r the weights-only best.pth", lambda ws, tmp: _train(ws, tmp, None, "-r",
         str(ws.run / "best.pth")), r"best\.pth.*weights-only.*-t"),
    Case("checkpoint", "-r a missing last.pth beside checkpoint0000.pth", _missing_last,
         r"last\.pth does not exist.*-r .*checkpoint0000\.pth"),
    Case("checkpoint", "-t zero-byte file", lambda ws, tmp: _train(ws, tmp, None, "-t",
         str(_checkpoint_file(ws, tmp, "empty"))), rf"{_NAME}.*empty"),
    Case("checkpoint", "-t missing file", lambda ws, tmp: _train(ws, tmp, None, "-t", str(tmp / "nope.pth")),
         r"nope\.pth"),
    Case("checkpoint", "predict --weights zero-byte file", _predict("empty"), rf"{_NAME}.*empty"),
    Case("checkpoint", "predict --weights random bytes", _predict("random"), rf"{_NAME}(?!.*weights_only=False)"),
    Case("checkpoint", "predict --weights pickle that runs code", _predict("pickle"), _NAME, tags=("no_marker",)),
    Case("checkpoint", "predict --weights an .onnx on the torch backend", _predict("onnx"),
         r"--backend onnx"),
    Case("checkpoint", "predict --weights an unknown name", lambda ws, tmp: ("dfine", ["predict", "--weights",
         "dfine-q-coco", "--demo", "--out", str(tmp / "out")]), r"dfine-q-coco.*dfine info --weights"),
    Case("checkpoint", "export -r truncated file", _export("truncated"), rf"{_NAME}.*(truncated|incomplete|corrupt)"),
    # inference inputs
    Case("inference", "--source a missing file", _predict_source(lambda tmp: [str(tmp / "nope.jpg")]), r"nope\.jpg"),
    Case("inference", "--source a text file named .jpg", _predict_source(lambda tmp: _text_file(tmp, "fake.jpg")),
         r"fake\.jpg"),
    Case("inference", "--source an empty folder", _predict_source(_empty_folder), r"empty"),
    Case("inference", "--source a truncated JPEG", lambda ws, tmp: _predict_source(
         lambda t: _images_of(ws, t, _truncate))(ws, tmp), r"scene\.jpg"),
    Case("inference", "--source a decompression-bomb PNG", lambda ws, tmp: _predict_source(
         lambda t: _images_of(ws, t, _bomb))(ws, tmp), r"scene\.jpg.*DFINE_MAX_IMAGE_PIXELS"),
    Case("inference", "--source a corrupt video", _predict_source(_corrupt_video), r"clip\.mp4"),
    Case("inference", "--conf 1.5", _predict_flags("--conf", "1.5"), r"--conf"),
    Case("inference", "--out is a file", _out_is_a_file, r"output folder .*out is a file.*--out"),
    Case("inference", "--device cuda without CUDA", _predict_flags("--device", "cuda"), r"cuda", tags=("no_cuda",)),
    Case("inference", "--size q", _predict_flags("--size", "q"), r"--size"),
)  # fmt: skip


if torch.cuda.is_available():  # the case needs a machine without CUDA
    CASES = tuple(case for case in CASES if "no_cuda" not in case.tags)


def extra_problem(case: Case, ws: Workspace, tmp: Path) -> str:
    """A silent harm the exit status cannot show (e.g. a pickle's code that ran), or ""."""
    return _no_marker(ws, tmp) if "no_marker" in case.tags else ""

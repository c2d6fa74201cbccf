"""``dfine.load_model``: every kind of source gives the same model and what is known about it."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import dfine
from dfine.categories import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from dfine.config.presets import model_config
from dfine.engine.checkpoint import CheckpointError


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no access log on the test output
        pass


@pytest.fixture
def served(tmp_path, monkeypatch) -> Iterator[tuple[str, Path]]:
    """A folder served over HTTP on 127.0.0.1 (base URL, folder), and an empty download cache."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("DFINE_CACHE", str(tmp_path / "cache"))
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()


def _outputs(model: dfine.DFINEModel) -> torch.Tensor:
    torch.manual_seed(0)
    with torch.no_grad():
        return model.eval()(torch.rand(1, 3, 320, 320)).logits


def test_a_size_gives_random_weights_and_default_info():
    model, info = dfine.load_model("n", num_classes=3)
    assert model.num_classes == 3 and not model.training
    assert (info.size, info.class_names, info.category_ids) == ("n", ("class_0", "class_1", "class_2"), (0, 1, 2))
    assert (info.image_size, info.num_queries, info.weights_format) == (640, 300, "random")
    assert info.source == "random weights"


def test_official_weights_get_size_and_coco_names_and_ids(official_n_weights):
    model, info = dfine.load_model(official_n_weights)
    assert (info.size, info.weights_format, info.image_size) == ("n", "official", 640)
    assert info.class_names == COCO_CLASS_NAMES and info.category_ids == COCO_CATEGORY_IDS
    assert info.source == str(official_n_weights)
    with pytest.raises(CheckpointError, match="80 classes, not num_classes=3"):
        dfine.load_model(official_n_weights, num_classes=3)


def test_a_dfine_checkpoint_brings_its_config_names_and_ids(tmp_path):
    config = model_config("n", num_classes=2, eval_spatial_size=(256, 256), num_queries=50)
    built = dfine.DFINEModel.from_config(config)
    meta = {"model": dataclasses.asdict(config), "class_names": ["a", "b"], "category_ids": [5, 9]}
    meta["num_top_queries"] = 20
    torch.save({"model": built.state_dict(), "dfine": meta}, tmp_path / "run.pth")
    model, info = dfine.load_model(tmp_path / "run.pth")
    assert (info.class_names, info.category_ids, info.image_size) == (("a", "b"), (5, 9), 256)
    assert (info.num_queries, info.num_top_queries, info.weights_format) == (50, 20, "dfine")
    assert torch.equal(_outputs(model), _outputs(built))


def test_load_checkpoint_takes_any_source_into_a_built_model(official_n_weights, served):
    base, folder = served
    (folder / "n.pth").symlink_to(official_n_weights)
    reference, _ = dfine.load_model(official_n_weights)
    model = dfine.build_model("n")
    report = dfine.load_checkpoint(model, f"{base}/n.pth")
    assert not (report.missing or report.unexpected or report.mismatched)
    assert torch.equal(_outputs(model), _outputs(reference))


def test_a_url_downloads_once_into_the_cache(official_n_weights, served, tmp_path):
    base, folder = served
    (folder / "dfine_n_coco.pth").symlink_to(official_n_weights)
    model, info = dfine.load_model(f"{base}/dfine_n_coco.pth")
    assert info.source == f"{base}/dfine_n_coco.pth" and info.size == "n"
    assert (tmp_path / "cache").is_dir() and any((tmp_path / "cache").rglob("dfine_n_coco.pth"))
    (folder / "dfine_n_coco.pth").unlink()  # the second load needs no network
    again, _ = dfine.load_model(f"{base}/dfine_n_coco.pth")
    assert torch.equal(_outputs(model), _outputs(again))


def test_a_zoo_name_downloads_its_release_file(official_n_weights, served, monkeypatch):
    base, folder = served
    entry = dfine.hub.zoo.find_weights("dfine-n-coco")
    release = folder / Path(dfine.hub.download.zoo_url(entry)).parent.name
    release.mkdir()
    (release / entry.file_name).symlink_to(official_n_weights)
    monkeypatch.setenv("DFINE_WEIGHTS_URL_BASE", base)
    detector = dfine.DFINE.from_pretrained("dfine-n-coco", device="cpu")
    assert detector.info.source == "dfine-n-coco" and detector.class_names == list(COCO_CLASS_NAMES)


def test_bad_sources_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        dfine.load_model(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="dfine-s-coco"):
        dfine.load_model("dfine-s-cocoo")
    with pytest.raises(ValueError, match="not a size"):
        dfine.DFINE("dfine-s-coco")


def test_hugging_face_folders_and_hub_ids_load_with_their_names(served, monkeypatch):
    from dfine.hub.hf import save_hf_checkpoint

    base, folder = served
    built = dfine.DFINEModel.from_config(model_config("n", num_classes=3, eval_spatial_size=(320, 320)))
    snapshot = save_hf_checkpoint(built, ["ant", "bee", "cow"], folder / "acme" / "dfine-bugs" / "resolve" / "main")
    model, info = dfine.load_model(snapshot)
    assert (info.weights_format, info.size, info.class_names, info.image_size) == (
        "hf",
        "n",
        ("ant", "bee", "cow"),
        320,
    )
    assert torch.equal(_outputs(model), _outputs(built))
    monkeypatch.setenv("DFINE_HF_ENDPOINT", base)
    detector = dfine.DFINE.from_pretrained("acme/dfine-bugs", device="cpu")
    assert detector.class_names == ["ant", "bee", "cow"] and detector.info.source == "acme/dfine-bugs"


def test_export_hf_writes_a_folder_transformers_loads(tmp_path, capsys):
    transformers = pytest.importorskip("transformers", minversion="4.52")
    from dfine.cli.main import main

    config = model_config("n", num_classes=2, eval_spatial_size=(320, 320))
    built = dfine.DFINEModel.from_config(config)
    meta = {"model": dataclasses.asdict(config), "class_names": ["a", "b"], "category_ids": [1, 2]}
    torch.save({"model": built.state_dict(), "dfine": meta}, tmp_path / "best.pth")
    assert main(["export", "-r", str(tmp_path / "best.pth"), "--format", "hf"]) == 0
    folder = tmp_path / "best_hf"
    hf_model, loading = transformers.DFineForObjectDetection.from_pretrained(folder, output_loading_info=True)
    assert not (loading["missing_keys"] or loading["unexpected_keys"] or loading["mismatched_keys"])
    assert hf_model.config.id2label == {0: "a", 1: "b"}
    model, _ = dfine.load_model(folder)
    assert torch.equal(_outputs(model), _outputs(built))


def test_train_resume_and_tuning_sources_download_first(official_n_weights, served, tmp_path):
    from dfine.engine.setup import _local_weights

    base, folder = served
    (folder / "n.pth").symlink_to(official_n_weights)
    local = Path(_local_weights(f"{base}/n.pth"))
    assert local.is_file() and local.is_relative_to(tmp_path / "cache")
    assert _local_weights(str(tmp_path / "run" / "last.pth")) == str(tmp_path / "run" / "last.pth")  # missing: as is
    assert _local_weights(None) is None

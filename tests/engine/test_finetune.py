"""Fine-tuning from a checkpoint with other classes: head rows follow class names."""

from __future__ import annotations

import torch

import dfine
from dfine.engine.finetune import load_for_finetuning


def _checkpoint(tmp_path, names):
    torch.manual_seed(0)
    model = dfine.build_model("n", num_classes=len(names))
    path = tmp_path / "src.pth"
    torch.save({"model": model.state_dict(), "dfine": {"class_names": names}}, path)
    return model.state_dict(), path


def test_rows_are_mapped_by_name_and_new_classes_keep_init(tmp_path):
    old_names = ["circle", "square", "triangle"]
    old, path = _checkpoint(tmp_path, old_names)
    new_names = ["square", "hexagon", "circle"]
    torch.manual_seed(1)
    model = dfine.build_model("n", num_classes=3)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_for_finetuning(model, path, new_names)
    state = model.state_dict()
    assert report.class_mapped == ["square", "circle"] and report.class_new == ["hexagon"]
    for key in (
        "decoder.enc_score_head.weight",
        "decoder.dec_score_head.2.bias",
        "decoder.denoising_class_embed.weight",
    ):
        assert torch.equal(state[key][0], old[key][1]), key  # square
        assert torch.equal(state[key][2], old[key][0]), key  # circle
        assert torch.equal(state[key][1], fresh[key][1]), key  # hexagon: fresh
    assert torch.equal(state["decoder.denoising_class_embed.weight"][3], old["decoder.denoising_class_embed.weight"][3])
    assert torch.equal(state["backbone.stem.stem1.conv.weight"], old["backbone.stem.stem1.conv.weight"])
    assert "class heads: 2 classes mapped by name, 1 new" in report.summary()


def test_official_coco_weights_map_to_coco_named_classes(tmp_path, official_n_weights):
    model = dfine.build_model("n", num_classes=2)
    report = load_for_finetuning(model, official_n_weights, ["dog", "person"])
    official = torch.load(official_n_weights, weights_only=True)
    head = model.state_dict()["decoder.enc_score_head.weight"]
    assert torch.equal(head[0], official["decoder.enc_score_head.weight"][16])  # dog is COCO label 16
    assert torch.equal(head[1], official["decoder.enc_score_head.weight"][0])
    assert report.class_new == []


def test_same_classes_load_everything(tmp_path):
    old, path = _checkpoint(tmp_path, ["a", "b"])
    model = dfine.build_model("n", num_classes=2)
    report = load_for_finetuning(model, path, ["a", "b"])
    assert not report.skipped and len(report.loaded) == len(old)


def test_weights_of_another_size_load_what_fits_and_report_the_rest(tmp_path):
    _, path = _checkpoint(tmp_path, ["a", "b", "c"])  # D-FINE-N
    model = dfine.build_model("s", num_classes=2)
    report = load_for_finetuning(model, path, ["b", "z"])
    assert report.loaded and report.skipped  # the shared-shape parts load, the rest is named
    assert "decoder.dec_score_head.0.weight" in report.skipped
    assert report.skipped["decoder.dec_score_head.0.weight"] == "shape [3, 128] vs [2, 256]"
    assert "skipped" in report.summary()

"""D-FINE-N with the official weights reproduces the official outputs (eval and deploy)."""

from __future__ import annotations

import copy

import pytest
import torch

import dfine
from dfine.model.dfine import fast_deploy_flags

LOGITS_ATOL = 1e-3
BOXES_ATOL = 1e-4


def _encoder_topk(model, images: torch.Tensor) -> torch.Tensor:
    """The anchor indices query selection picks, [B, 300]."""
    decoder = model.decoder
    memory, _ = decoder._flatten_memory(model.encoder(model.backbone(images)))
    memory = decoder.valid_mask.to(memory.dtype) * memory
    logits = decoder.enc_score_head(decoder.enc_output(memory))
    return torch.topk(logits.max(-1).values, decoder.num_queries, dim=-1).indices


def _rows_by_anchor(values: torch.Tensor, anchor_idx: torch.Tensor) -> torch.Tensor:
    """Reorder each image's query rows by anchor index, so near-tied query orders compare equal."""
    order = anchor_idx.argsort(dim=1)
    return torch.stack([values[b][order[b]] for b in range(values.shape[0])])


@pytest.fixture(scope="module")
def model_n(official_n_weights):
    model = dfine.build_model("n")
    dfine.load_checkpoint(model, official_n_weights)
    return model.eval()


@pytest.fixture(scope="module")
def eval_outputs(model_n, fixture_images):
    with torch.no_grad():
        return model_n(fixture_images), _encoder_topk(model_n, fixture_images)


@pytest.fixture(scope="module")
def deploy_model(model_n):
    return copy.deepcopy(model_n).deploy()


@pytest.fixture(scope="module")
def fast_model(model_n):
    """The form ``dfine.DFINE`` predicts with on the CPU (BN folded, channels-last, gather sampling)."""
    return copy.deepcopy(model_n).deploy(**fast_deploy_flags(torch.device("cpu")))


def _head(feat: torch.Tensor) -> torch.Tensor:
    """The slice the fixture stores: first 4 channels, first 64 flattened positions, [B, 4, 64]."""
    return feat[:, :4].flatten(2)[..., :64]


@pytest.mark.parametrize("stage", ["backbone", "encoder"])
def test_intermediate_features_match(stage, model_n, fixture_images, official_n_outputs):
    with torch.no_grad():
        feats = model_n.backbone(fixture_images)
        if stage == "encoder":
            feats = model_n.encoder(feats)
    for feat, ref in zip(feats, official_n_outputs[f"{stage}_feats"], strict=True):
        assert list(feat.shape) == ref["shape"]
        assert feat.double().sum().item() == pytest.approx(ref["sum"], rel=1e-6, abs=1e-2)
        assert feat.double().abs().sum().item() == pytest.approx(ref["abssum"], rel=1e-6)
        torch.testing.assert_close(_head(feat), ref["head"], atol=1e-4, rtol=0)


def test_encoder_topk_selects_same_anchors(eval_outputs, official_n_outputs):
    _, topk = eval_outputs
    for ours, ref in zip(topk, official_n_outputs["enc_topk_ind"], strict=True):
        assert set(ours.tolist()) == set(ref.tolist())


@pytest.mark.parametrize("mode", ["eval", "deploy", "fast"])
def test_raw_outputs_match(mode, eval_outputs, deploy_model, fast_model, fixture_images, official_n_outputs):
    outputs, topk = eval_outputs
    if mode != "eval":  # rows aligned by the tested model's own query selection (near-tied scores may reorder)
        model = deploy_model if mode == "deploy" else fast_model
        with torch.inference_mode():
            outputs, topk = model(fixture_images), _encoder_topk(model, fixture_images)
        for ours, ref in zip(topk, official_n_outputs["enc_topk_ind"], strict=True):
            assert set(ours.tolist()) == set(ref.tolist())
    ref_topk = official_n_outputs["enc_topk_ind"]
    for key, field, atol in (("pred_logits", "logits", LOGITS_ATOL), ("pred_boxes", "boxes", BOXES_ATOL)):
        ours = _rows_by_anchor(getattr(outputs, field), topk)
        ref = _rows_by_anchor(official_n_outputs[key], ref_topk)  # the official dict keys
        torch.testing.assert_close(ours, ref, atol=atol, rtol=0, msg=f"{mode} {key}")


def test_deploy_layout_matches_official(deploy_model):
    state = deploy_model.state_dict()
    assert len(state) == 506
    assert sum(p.numel() for p in deploy_model.parameters()) == 3_753_799
    assert not any(k.startswith("decoder.dec_score_head.0") for k in state)
    assert "decoder.decoder.lqe_layers.2.reg_conf.layers.0.weight" in state
    assert "decoder.decoder.lqe_layers.0.reg_conf.layers.0.weight" not in state
    assert any(k.endswith("conv_bn_fused.weight") for k in state)


@pytest.mark.parametrize("mode", ["deploy", "fast"])
def test_postprocessed_detections_match(mode, deploy_model, fast_model, fixture_images, official_n_outputs):
    sizes = official_n_outputs["orig_target_sizes"]
    with torch.inference_mode():
        outputs = (deploy_model if mode == "deploy" else fast_model)(fixture_images)
    labels, boxes, scores = dfine.PostProcessor(num_classes=80).decode(outputs, sizes)
    torch.testing.assert_close(scores, official_n_outputs["post_scores"], atol=1e-4, rtol=0)
    top = 50
    for b in range(labels.shape[0]):
        ours = sorted(zip(labels[b, :top].tolist(), boxes[b, :top].tolist(), strict=True))
        ref = sorted(
            zip(
                official_n_outputs["post_labels"][b, :top].tolist(),
                official_n_outputs["post_boxes"][b, :top].tolist(),
                strict=True,
            )
        )
        assert [lab for lab, _ in ours] == [lab for lab, _ in ref]
        torch.testing.assert_close(
            torch.tensor([b for _, b in ours]), torch.tensor([b for _, b in ref]), atol=0.05, rtol=0
        )


def test_coco_remap_matches_official(deploy_model, fixture_images, official_n_outputs):
    post = dfine.PostProcessor(num_classes=80, remap_mscoco_category=True)
    with torch.no_grad():
        results = post(deploy_model(fixture_images), official_n_outputs["orig_target_sizes"])
    for ours, ref in zip(results, official_n_outputs["post_coco"], strict=True):
        top = 50
        assert sorted(ours["labels"][:top].tolist()) == sorted(ref["labels"][:top].tolist())
        torch.testing.assert_close(ours["scores"], ref["scores"], atol=1e-4, rtol=0)

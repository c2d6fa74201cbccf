"""Matcher invariants and criterion behaviour that does not need the oracle."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import dfine
from dfine.losses import functional as L
from dfine.losses.matcher import union_of_matchings


def _outputs(batch=2, queries=12, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dfine.HeadOutputs(
        logits=torch.randn(batch, queries, classes, generator=g),
        boxes=torch.rand(batch, queries, 4, generator=g) * 0.5 + 0.25,
    )


def _targets():
    boxes0 = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.2], [0.5, 0.4, 0.1, 0.1]])
    return [
        {"labels": torch.tensor([0, 3, 1]), "boxes": boxes0},
        {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
    ]


def test_batched_matching_equals_per_image():
    matcher = dfine.HungarianMatcher()
    outputs, targets = _outputs(), _targets()
    batched = matcher(outputs, targets)
    for b in range(2):
        single = matcher(dfine.HeadOutputs(outputs.logits[b : b + 1], outputs.boxes[b : b + 1]), [targets[b]])[0]
        assert torch.equal(batched[b][0], single[0]) and torch.equal(batched[b][1], single[1])
        assert len(batched[b][0]) == len(targets[b]["labels"])


def test_matching_with_empty_targets():
    matcher = dfine.HungarianMatcher()
    targets = _targets()
    targets[1] = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    matching = matcher(_outputs(), targets)
    assert len(matching[0][0]) == 3 and len(matching[1][0]) == 0
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}] * 2
    assert all(len(rows) == 0 for rows, _ in matcher(_outputs(), empty))


def test_union_prefers_most_frequent_target_per_query():
    a = [(torch.tensor([1, 2]), torch.tensor([0, 1]))]
    b = [(torch.tensor([1, 5]), torch.tensor([1, 0]))]
    c = [(torch.tensor([1, 2]), torch.tensor([0, 1]))]
    ((rows, cols),) = union_of_matchings([a, b, c])
    assert dict(zip(rows.tolist(), cols.tolist())) == {1: 0, 2: 1, 5: 0}


def _tensors(value, path="outputs"):
    """Every tensor in a nested output structure, with its access path."""
    if isinstance(value, torch.Tensor):
        yield path, value
    elif dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            yield from _tensors(getattr(value, field.name), f"{path}.{field.name}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{path}[{i}]")


def test_criterion_is_pure_and_handles_empty_images():
    torch.manual_seed(0)
    model = dfine.build_model("n", num_classes=4).train()
    targets = _targets()
    targets.append({"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)})
    outputs = model(torch.rand(3, 3, 256, 256), targets=targets)
    before = {path: value.detach().clone() for path, value in _tensors(outputs)}
    criterion = dfine.build_criterion(num_classes=4)
    first = criterion(outputs, targets)
    second = criterion(outputs, targets)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
        assert torch.isfinite(first[key]), key
    after = dict(_tensors(outputs))
    assert after.keys() == before.keys()  # no head added or removed
    for path, value in before.items():
        assert torch.equal(after[path], value), path
    assert any(k.endswith("_dn_0") for k in first) and "loss_ddf_aux_0" in first
    sum(first.values()).backward()


def test_weights_scale_terms_and_missing_weight_drops_term():
    torch.manual_seed(0)
    model = dfine.build_model("n", num_classes=4).train()
    model.decoder.num_denoising = 0
    outputs = model(torch.rand(2, 3, 256, 256), targets=_targets())
    base = dfine.build_criterion(num_classes=4)(outputs, _targets())
    doubled = dfine.build_criterion(
        num_classes=4, weight_dict={"loss_vfl": 2, "loss_bbox": 5, "loss_giou": 2, "loss_fgl": 0.15}
    )(outputs, _targets())
    assert doubled["loss_vfl"].item() == pytest.approx(2 * base["loss_vfl"].item(), rel=1e-6)
    assert not any("ddf" in k for k in doubled)


def test_build_criterion_rejects_unknown_options():
    with pytest.raises(ValueError, match="unknown criterion option 'gama'"):
        dfine.build_criterion(gama=2)
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        dfine.build_criterion(losses=["focal"])


def test_ddf_is_zero_when_student_equals_teacher():
    corners = torch.randn(1, 3, 4 * 33)
    idx = (torch.tensor([0]), torch.tensor([1]))
    loss = L.decoupled_distillation_loss(
        corners, corners.clone(), torch.randn(1, 3, 2), idx, torch.tensor([0.5]), *L.ddf_balance(1, 1, 3)
    )
    assert loss.item() == 0


def test_a_class_agnostic_encoder_head_trains():
    """query_select_method agnostic: a 1-logit encoder head, supervised with every object as class 0."""
    torch.manual_seed(0)
    model = dfine.build_model(
        "n", num_classes=5, eval_spatial_size=(128, 128), num_queries=30, num_denoising=10,
        query_select_method="agnostic",
    )  # fmt: skip
    assert model.decoder.enc_score_head.out_features == 1
    criterion = dfine.build_criterion(num_classes=5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    targets = [{"labels": torch.tensor([4, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])}]
    head_before = model.decoder.enc_score_head.weight.detach().clone()
    model.train()
    for _ in range(2):
        losses = criterion(model(torch.rand(1, 3, 128, 128), targets=targets), targets)
        total = sum(losses.values())
        assert torch.isfinite(total) and losses["loss_vfl_enc_0"] > 0
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert not torch.equal(model.decoder.enc_score_head.weight, head_before)

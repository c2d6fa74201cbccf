"""HGNetv2 architectures and local pretrained-weight loading."""

from __future__ import annotations

import pytest
import torch

from dfine.model.hgnetv2 import HGNETV2_ARCHS, HGNetv2, load_hgnetv2_pretrained


@pytest.mark.parametrize("name", sorted(HGNETV2_ARCHS))
def test_every_arch_builds_and_strides(name):
    net = HGNetv2(name, use_lab=name in {"B0", "B1", "B2"}, return_idx=(0, 1, 2, 3), freeze_at=-1, freeze_norm=False)
    feats = net.eval()(torch.rand(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]
    assert [f.shape[1] for f in feats] == net.out_channels


def test_pretrained_from_local_dir(tmp_path):
    source = HGNetv2("B0", use_lab=True, freeze_at=-1, freeze_norm=False)
    torch.save(source.state_dict(), tmp_path / "PPHGNetV2_B0_stage1.pth")
    target = HGNetv2("B0", use_lab=True, freeze_at=-1, freeze_norm=False)
    load_hgnetv2_pretrained(target, tmp_path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_pretrained_into_frozen_norm_backbone(tmp_path):
    source = HGNetv2("B4", freeze_norm=False)
    path = tmp_path / "b4.pth"
    torch.save(source.state_dict(), path)
    target = HGNetv2("B4")  # FrozenBatchNorm2d has no num_batches_tracked
    load_hgnetv2_pretrained(target, path)
    assert torch.equal(target.stem.stem1.bn.running_var, source.stem.stem1.bn.running_var)


def test_missing_pretrained_file_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"PPHGNetV2_B0_stage1.pth.*pretrained: False"):
        load_hgnetv2_pretrained(HGNetv2("B0"), tmp_path)


def test_pretrained_of_other_arch_is_refused(tmp_path):
    torch.save(HGNetv2("B0").state_dict(), tmp_path / "PPHGNetV2_B2_stage1.pth")
    with pytest.raises(ValueError, match="another size"):
        load_hgnetv2_pretrained(HGNetv2("B2"), tmp_path)

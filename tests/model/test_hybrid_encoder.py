"""Position embedding layout and the re-parameterizable blocks of the hybrid encoder."""

from __future__ import annotations

import torch

from dfine.model.hybrid_encoder import VGGBlock, sincos_position_embedding_2d


def test_sincos_layout_first_half_encodes_rows_on_square_maps():
    emb = sincos_position_embedding_2d(4, 4, embed_dim=16)[0]  # [16 positions, 16 channels]
    assert emb.shape == (16, 16)
    rows = torch.arange(16) // 4  # features are flattened row-major
    cols = torch.arange(16) % 4
    # channel 0 is sin(index * omega_0) = sin(index): the row index, as in the official code
    torch.testing.assert_close(emb[:, 0], torch.sin(rows.float()))
    torch.testing.assert_close(emb[:, 4], torch.cos(rows.float()))
    torch.testing.assert_close(emb[:, 8], torch.sin(cols.float()))


def test_vgg_block_deploy_is_equivalent():
    torch.manual_seed(0)
    block = VGGBlock(4, 6, act="silu")
    with torch.no_grad():
        for bn in (block.conv1.norm, block.conv2.norm):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.normal_()
            bn.bias.normal_()
    block.eval()
    x = torch.randn(2, 4, 9, 7)
    expected = block(x)
    block.convert_to_deploy()
    assert not hasattr(block, "conv1") and hasattr(block, "conv")
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)

"""Checkpoint layouts, strict/tuning loads and the errors users see."""

from __future__ import annotations

import pytest
import torch

import dfine
from dfine.engine.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def n_state(official_n_weights):
    return torch.load(official_n_weights, weights_only=True)


def _perturbed(state):
    return {k: (v + 1 if v.dtype.is_floating_point else v) for k, v in state.items()}


def test_official_solver_layout_prefers_ema(tmp_path, n_state):
    path = tmp_path / "official.pth"
    torch.save({"model": _perturbed(n_state), "ema": {"module": n_state, "updates": 7}, "last_epoch": 3}, path)
    model = dfine.build_model("n")
    report = dfine.load_checkpoint(model, path)
    assert report.source == "ema"
    key = "decoder.enc_score_head.weight"
    assert torch.equal(model.state_dict()[key], n_state[key])


@pytest.mark.parametrize("layout", ["model", "raw", "ddp"])
def test_other_layouts(tmp_path, n_state, layout):
    path = tmp_path / f"{layout}.pth"
    if layout == "model":
        torch.save({"model": n_state}, path)
    elif layout == "raw":
        torch.save(n_state, path)
    else:
        torch.save({"model": {f"module.{k}": v for k, v in n_state.items()}}, path)
    model = dfine.build_model("n")
    report = dfine.load_checkpoint(model, path)
    assert len(report.loaded) == len(n_state)
    assert torch.equal(
        model.state_dict()["backbone.stem.stem1.conv.weight"], n_state["backbone.stem.stem1.conv.weight"]
    )


def test_checkpoint_of_another_size_is_refused_with_hint(official_n_weights):
    with pytest.raises(CheckpointError, match=r"does not fit.*shape mismatch.*looks like D-FINE-N"):
        dfine.load_checkpoint(dfine.build_model("s"), official_n_weights)


def test_tuning_mode_skips_class_heads(official_n_weights):
    model = dfine.build_model("n", num_classes=3)
    report = dfine.load_checkpoint(model, official_n_weights, strict=False)
    assert "decoder.enc_score_head.weight" in report.mismatched
    assert report.mismatched["decoder.enc_score_head.weight"] == ((80, 128), (3, 128))
    assert "decoder.denoising_class_embed.weight" in report.mismatched
    assert len(report.loaded) == 674 - len(report.mismatched)
    assert "skipped" in report.summary()


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        dfine.load_checkpoint(dfine.build_model("n"), "/nonexistent/model.pth")


def test_truncated_file(tmp_path, official_n_weights):
    path = tmp_path / "truncated.pth"
    path.write_bytes(official_n_weights.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        dfine.load_checkpoint(dfine.build_model("n"), path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pth"):
        dfine.load_checkpoint(dfine.build_model("n"), path)


class _Payload:
    pass


def test_pickled_objects_are_never_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": _Payload()}, path)
    with pytest.raises(CheckpointError, match="stores Python objects") as info:
        dfine.load_checkpoint(dfine.build_model("n"), path)
    message = str(info.value)
    assert "_Payload" in message and "weights_only" not in message  # never advise the unsafe load
    assert len(message.splitlines()) == 1


def test_zero_byte_file_says_it_is_empty(tmp_path):
    path = tmp_path / "empty.pth"
    path.touch()
    with pytest.raises(CheckpointError, match=r"empty.pth: the file is empty \(0 bytes\)"):
        dfine.load_checkpoint(dfine.build_model("n"), path)


def test_random_bytes_give_one_line_without_the_unsafe_advice(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match="noise.pth") as info:
        dfine.load_checkpoint(dfine.build_model("n"), path)
    message = str(info.value)
    assert "weights_only" not in message and len(message.splitlines()) == 1
    assert "()" not in message  # the unpickler's reason is named


def test_file_without_weights(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"last_epoch": 3, "date": "today"}, path)
    with pytest.raises(CheckpointError, match="no model weights found"):
        dfine.load_checkpoint(dfine.build_model("n"), path)


def test_preset_config_for_reads_size_and_classes_or_says_why_not():
    from dfine.engine.checkpoint import preset_config_for

    state = dfine.build_model("s", num_classes=7).state_dict()
    cfg = preset_config_for(state, "s.pth")
    assert cfg == dfine.config.presets.model_config("s", num_classes=7)
    assert preset_config_for(state, "s.pth", size="s") == cfg
    with pytest.raises(CheckpointError, match=r"other\.pth: no 'decoder\.enc_score_head\.weight'.*not a D-FINE"):
        preset_config_for({"weight": torch.zeros(1)}, "other.pth")
    odd = {k: v for k, v in state.items() if not k.startswith("encoder.input_proj.")}
    with pytest.raises(CheckpointError, match=r"odd\.pth: the weights match no D-FINE size .*; pass -c"):
        preset_config_for(odd, "odd.pth", fix="pass -c")

"""Parameter groups, warm-up, schedules and EMA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dfine
from dfine.config.schema import ParamGroupSpec
from dfine.engine.ema import ModelEMA
from dfine.engine.optim import FlatCosineSchedule, LinearWarmup, build_optimizer, build_param_groups

OFFICIAL_GROUPS = [
    ParamGroupSpec("^(?=.*backbone)(?!.*norm|bn).*$", {"lr": 0.0004}),
    ParamGroupSpec("^(?=.*backbone)(?=.*norm|bn).*$", {"lr": 0.0004, "weight_decay": 0.0}),
    ParamGroupSpec("^(?=.*(?:encoder|decoder))(?=.*(?:norm|bn|bias)).*$", {"weight_decay": 0.0}),
]


def test_official_regex_groups_behave_as_official():
    model = dfine.build_model("n")
    groups = build_param_groups(model, OFFICIAL_GROUPS)
    names = {id(p): n for n, p in model.named_parameters()}
    group_names = [[names[id(p)] for p in g["params"]] for g in groups]
    # backbone BN weights land in the first (weight-decay) group; the second group is empty
    assert "backbone.stem.stem1.bn.weight" in group_names[0]
    assert group_names[1] == []
    assert "decoder.enc_output.norm.weight" in group_names[2] and "encoder.input_proj.0.norm.bias" in group_names[2]
    assert "decoder.enc_score_head.weight" in group_names[3]  # the rest: default options
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(sum(group_names, [])) == sorted(trainable)


def test_overlapping_patterns_are_refused():
    with pytest.raises(ValueError, match="also matches"):
        build_param_groups(nn.Linear(2, 2), [ParamGroupSpec("weight"), ParamGroupSpec("w")])


def test_bad_regex_and_optimizer_name():
    with pytest.raises(ValueError, match=r"optimizer.params\[0\].params: invalid regex"):
        build_param_groups(nn.Linear(2, 2), [ParamGroupSpec("(")])
    with pytest.raises(ValueError, match="optimizer.type 'Lion'"):
        build_optimizer(nn.Linear(2, 2), "Lion")


def test_linear_warmup_ramps_each_group_to_its_lr():
    model = nn.Linear(2, 2)
    opt = torch.optim.AdamW([{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 0.01}])
    warmup = LinearWarmup(opt, warmup_duration=4)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(5):
        warmup.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert warmup.finished() and opt.param_groups[1]["lr"] == pytest.approx(0.01)
    restored = LinearWarmup(torch.optim.SGD(model.parameters(), lr=1.0), 4)
    restored.load_state_dict(warmup.state_dict())
    assert restored.finished()


def test_flat_cosine_shape():
    opt = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1.0)
    sched = FlatCosineSchedule(opt, total_iters=100, warmup_iters=10, flat_iters=40, no_aug_iters=20, lr_gamma=0.5)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[5] < lrs[9] <= 1.0
    assert lrs[20] == pytest.approx(1.0) and lrs[39] == pytest.approx(1.0)
    assert lrs[60] < lrs[50] < 1.0
    assert lrs[85] == pytest.approx(0.5)


def test_ema_ramp_and_average():
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    ema = ModelEMA(model, decay=0.9, warmups=1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    d = 0.9 * (1 - torch.exp(torch.tensor(-1.0)).item())
    assert ema.module.weight.item() == pytest.approx(1 - d)
    assert not ema.module.weight.requires_grad
    state = ema.state_dict()
    other = ModelEMA(model)
    other.load_state_dict(state)
    assert other.updates == 1 and other.module.weight.item() == pytest.approx(1 - d)

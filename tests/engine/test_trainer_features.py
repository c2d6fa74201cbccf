"""Trainer features: early stopping, gradient accumulation, AMP, tensorboard scalars, flat-cosine wiring.

Most tests drive :class:`~dfine.engine.trainer.Trainer` with a tiny per-sample linear "detector" and a
mean loss (milliseconds per step, and exact accumulation equivalence); the set-up wiring tests build the
real tiny D-FINE run from ``conftest.tiny_config`` but train it for at most one epoch.
"""

from __future__ import annotations

import copy
import json
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from dfine.cli.train import main as train_main
from dfine.config.schema import train_config_from_dict
from dfine.engine.evaluate import STAT_NAMES, EvalResult
from dfine.engine.optim import FlatCosineSchedule
from dfine.engine.setup import RunOptions, _schedules, build_trainer
from dfine.engine.trainer import Trainer, TrainerOptions
from dfine.model.outputs import DFINEOutputs

from .conftest import tiny_config

NUM_QUERIES, NUM_CLASSES, SIDE = 3, 2, 4


class TinyDetector(nn.Module):
    """A linear map from each image to its own queries: no coupling between the samples of a batch."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3 * SIDE * SIDE, NUM_QUERIES * (NUM_CLASSES + 4))

    def forward(self, images: torch.Tensor, targets=None) -> DFINEOutputs:
        out = self.head(images.flatten(1)).view(images.shape[0], NUM_QUERIES, NUM_CLASSES + 4)
        return DFINEOutputs(logits=out[..., :NUM_CLASSES], boxes=out[..., NUM_CLASSES:].sigmoid())


class MeanCriterion(nn.Module):
    """Two loss terms, each a mean over the batch (so N batches of b average to one batch of N*b)."""

    def forward(self, outputs, targets):
        boxes = torch.stack([t["boxes"] for t in targets])
        labels = F.one_hot(torch.stack([t["labels"] for t in targets]), NUM_CLASSES).float()
        return {
            "loss_bbox": F.l1_loss(outputs.boxes, boxes),
            "loss_cls": F.binary_cross_entropy_with_logits(outputs.logits, labels),
        }


def make_batches(count: int, size: int, seed: int = 0) -> list:
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        images = torch.rand(size, 3, SIDE, SIDE, generator=gen)
        boxes = torch.rand(size, NUM_QUERIES, 4, generator=gen)
        labels = torch.randint(NUM_CLASSES, (size, NUM_QUERIES), generator=gen)
        targets = [{"boxes": b, "labels": c} for b, c in zip(boxes, labels)]
        batches.append((images, targets))
    return batches


def concat(batches: list) -> list:
    return [(torch.cat([b[0] for b in batches]), [t for b in batches for t in b[1]])]


def make_trainer(
    tmp_path, batches, model=None, optimizer=None, criterion=None, device="cpu", writer=None, iteration_scheduler=None,
    **options,
) -> Trainer:  # fmt: skip
    """A Trainer around the tiny detector (SGD, no clipping, no EMA / epoch schedule / periodic checkpoints)."""
    if model is None:
        torch.manual_seed(0)
        model = TinyDetector()
    model = model.to(device)
    return Trainer(
        model=model,
        criterion=criterion or MeanCriterion(),
        postprocessor=nn.Identity(),
        optimizer=optimizer or torch.optim.SGD(model.parameters(), lr=0.1),
        lr_scheduler=None,
        warmup=None,
        ema=None,
        train_loader=batches,
        val_loader=None,
        evaluator=None,
        device=torch.device(device),
        output_dir=tmp_path,
        options=TrainerOptions(**{"epochs": 1, "clip_max_norm": 0.0, "checkpoint_freq": 0, **options}),
        writer=writer,
        iteration_scheduler=iteration_scheduler,
    )


def eval_result(ap: float) -> EvalResult:
    stats = {name: -1.0 for name in STAT_NAMES}
    stats.update(AP=ap, AP50=ap + 0.1)
    return EvalResult(stats=stats)


def stub_evaluate(monkeypatch, trainer: Trainer, aps: list[float]) -> list[int]:
    """Make ``trainer.evaluate`` return these APs in turn; returns the list its calls are counted in."""
    calls: list[int] = []
    results = iter(aps)

    def evaluate(module=None, report="eval"):
        calls.append(trainer.last_epoch)
        return eval_result(next(results))

    monkeypatch.setattr(trainer, "evaluate", evaluate)
    return calls


def count_steps(optimizer: torch.optim.Optimizer, record=None) -> list:
    """Each ``optimizer.step`` call appends ``record()`` (or None) to the returned list."""
    calls = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append(record() if record else None))
    return calls


# ------------------------------------------------------------------------------ early stopping
@pytest.mark.parametrize(
    ("aps", "patience", "epochs_run", "stale"),
    [
        ([0.1, 0.2, 0.2, 0.15, 0.3, 0.3], 2, 4, 2),  # stale after epochs 2 and 3: stop after epoch 3
        ([0.1, 0.1, 0.3, 0.3, 0.3, 0.3], 2, 5, 2),  # the gain at epoch 2 resets the count: stop after epoch 4
        ([0.1, 0.1, 0.1, 0.1, 0.1, 0.1], 0, 6, 5),  # patience 0: never stops (stale evaluations still counted)
    ],
)
def test_early_stopping_after_patience_stale_evaluations(
    tmp_path, monkeypatch, caplog, aps, patience, epochs_run, stale
):
    trainer = make_trainer(tmp_path, make_batches(1, 2), epochs=6, early_stopping_patience=patience)
    calls = stub_evaluate(monkeypatch, trainer, aps)
    with caplog.at_level(logging.INFO, logger="dfine.engine.trainer"):
        summary = trainer.fit()
    assert summary["epochs_run"] == epochs_run == len(calls) and trainer.last_epoch == epochs_run - 1
    assert trainer.stale_evaluations == stale
    assert summary["best_ap_stage1"] == pytest.approx(max(aps[:epochs_run]))
    assert json.loads((tmp_path / "summary.json").read_text())["epochs_run"] == epochs_run
    log = [json.loads(line) for line in (tmp_path / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(epochs_run))
    stopped = [r.getMessage() for r in caplog.records if "early stopping" in r.getMessage()]
    if epochs_run < 6:
        assert stopped == [f"early stopping after epoch {epochs_run}: no AP gain in {patience} evaluations"]
    else:
        assert stopped == []


def test_early_stopping_counts_evaluations_not_epochs(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, make_batches(1, 2), epochs=8, eval_freq=2, early_stopping_patience=2)
    calls = stub_evaluate(monkeypatch, trainer, [0.2, 0.2, 0.2, 0.2])
    summary = trainer.fit()
    assert calls == [1, 3, 5] and summary["epochs_run"] == 6


# ---------------------------------------------------------------------- gradient accumulation
def test_accumulated_batches_give_the_update_of_one_concatenated_batch(tmp_path):
    batches = make_batches(4, 2)
    torch.manual_seed(0)
    start = TinyDetector()
    runs = {}
    for name, loader, accum in (("accum", batches, 4), ("big", concat(batches), 1), ("plain", batches, 1)):
        model = copy.deepcopy(start)
        # plain SGD: the update is proportional to the gradient (Adam would hide a wrong loss scale)
        trainer = make_trainer(tmp_path / name, loader, model=model, grad_accum_steps=accum)
        steps = count_steps(trainer.optimizer)
        trainer.train_one_epoch(0)
        runs[name] = [(p - p0).detach() for p, p0 in zip(model.parameters(), start.parameters())]
        assert len(steps) == trainer.global_step == len(loader) // accum, name
    for accum, big in zip(runs["accum"], runs["big"]):
        assert big.abs().max() > 1e-3  # a real update
        torch.testing.assert_close(accum, big, rtol=1e-5, atol=1e-7)
    # the check can fail: four separate steps do not give the same update
    assert not all(torch.allclose(a, b, atol=1e-5) for a, b in zip(runs["plain"], runs["big"]))


def test_accumulation_steps_every_n_batches_on_the_mean_gradient_and_flushes_the_tail(tmp_path):
    batches = make_batches(5, 2, seed=1)
    torch.manual_seed(0)
    model = TinyDetector()
    reference = copy.deepcopy(model)
    # lr 0: parameters stay put, so every batch's gradient can be computed on the reference copy
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)

    class Counter:
        steps = 0

        def step(self):
            self.steps += 1

    scheduler = Counter()
    trainer = make_trainer(tmp_path, batches, model=model, optimizer=optimizer, grad_accum_steps=2,
                           iteration_scheduler=scheduler)  # fmt: skip
    seen = count_steps(optimizer, lambda: [p.grad.clone() for p in model.parameters()])
    stats = trainer.train_one_epoch(0)

    def grads(batch):
        reference.zero_grad()
        images, targets = batch
        sum(MeanCriterion()(reference(images), targets).values()).backward()
        return [p.grad.clone() for p in reference.parameters()]

    per_batch = [grads(b) for b in batches]
    # groups (0, 1), (2, 3) and the trailing partial group (4,): each loss divided by N = 2
    expected = [[(a + b) / 2 for a, b in zip(per_batch[0], per_batch[1])],
                [(a + b) / 2 for a, b in zip(per_batch[2], per_batch[3])],
                [a / 2 for a in per_batch[4]]]  # fmt: skip
    assert len(seen) == 3 and trainer.global_step == 3 and scheduler.steps == 3
    for got, want in zip(seen, expected):
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())  # zeroed after the trailing step
    # logged losses are the unscaled per-batch losses
    losses = [sum(MeanCriterion()(reference(b[0]), b[1]).values()).item() for b in batches]
    assert stats["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)


# ------------------------------------------------------------------------------------------ AMP
def _watch_autocast(model: nn.Module, criterion: nn.Module, device_type: str) -> dict:
    seen: dict = {}

    def model_hook(module, args, output):
        seen.setdefault("model", set()).add(
            (torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type), output.logits.dtype)
        )

    def criterion_hook(module, args, output):
        outputs, _ = args
        seen.setdefault("criterion", set()).add(
            (torch.is_autocast_enabled(device_type), outputs.logits.dtype, outputs.boxes.dtype)
        )
        seen.setdefault("loss", set()).update(v.dtype for v in output.values())

    model.register_forward_hook(model_hook)
    criterion.register_forward_hook(criterion_hook)
    return seen


@pytest.mark.parametrize("use_amp", [True, False])
def test_cpu_amp_runs_the_forward_in_bf16_and_the_loss_in_fp32(tmp_path, use_amp):
    torch.manual_seed(0)
    model, criterion = TinyDetector(), MeanCriterion()
    start = copy.deepcopy(model)
    seen = _watch_autocast(model, criterion, "cpu")
    trainer = make_trainer(tmp_path, make_batches(3, 2), model=model, criterion=criterion, use_amp=use_amp)
    assert trainer.scaler is None  # no GradScaler on CPU
    stats = trainer.train_one_epoch(0)
    forward_dtype = torch.bfloat16 if use_amp else torch.float32
    assert {(enabled, out) for enabled, _, out in seen["model"]} == {(use_amp, forward_dtype)}
    if use_amp:
        assert {dtype for _, dtype, _ in seen["model"]} == {torch.bfloat16}
    assert seen["criterion"] == {(False, torch.float32, torch.float32)}  # outside autocast, fp32 inputs
    assert seen["loss"] == {torch.float32}
    assert trainer.global_step == 3 and all(math.isfinite(v) for v in stats.values())
    for p, p0 in zip(model.parameters(), start.parameters()):
        assert p.dtype == torch.float32 and not torch.equal(p, p0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_amp_uses_fp16_and_a_grad_scaler(tmp_path):
    torch.manual_seed(0)
    model, criterion = TinyDetector().cuda(), MeanCriterion()
    start = copy.deepcopy(model)
    seen = _watch_autocast(model, criterion, "cuda")
    trainer = make_trainer(tmp_path, make_batches(3, 2), model=model, criterion=criterion, device="cuda",
                           use_amp=True, clip_max_norm=0.1)  # fmt: skip
    assert isinstance(trainer.scaler, torch.amp.GradScaler)
    stats = trainer.train_one_epoch(0)
    assert seen["model"] == {(True, torch.float16, torch.float16)}
    assert seen["criterion"] == {(False, torch.float32, torch.float32)}
    assert trainer.global_step == 3 and all(math.isfinite(v) for v in stats.values())
    assert any(not torch.equal(p, p0) for p, p0 in zip(model.parameters(), start.parameters()))
    assert "scaler" in trainer.state_dict() and trainer.scaler.get_scale() > 0


# ---------------------------------------------------------------------------------- tensorboard
def _scalars(log_dir) -> dict[str, list]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}


def test_tensorboard_gets_loss_lr_train_and_eval_scalars(tmp_path, monkeypatch):
    model = TinyDetector()
    optimizer = torch.optim.SGD([{"params": [model.head.weight], "lr": 0.01}, {"params": [model.head.bias]}], lr=0.02)
    writer = SummaryWriter(str(tmp_path / "tb"))
    # 20 batches, accumulation 2: 10 optimizer steps an epoch, so the every-10-steps scalars land on steps 10, 20
    trainer = make_trainer(tmp_path / "run", make_batches(20, 1), model=model, optimizer=optimizer, epochs=2,
                           grad_accum_steps=2, writer=writer)  # fmt: skip
    stub_evaluate(monkeypatch, trainer, [0.25, 0.5])
    trainer.fit()
    scalars = _scalars(tmp_path / "tb")  # read back without closing the writer: the trainer must have flushed
    writer.close()
    for tag in ("Loss/total", "Lr/pg_0", "Lr/pg_1"):
        assert [e.step for e in scalars[tag]] == [10, 20], tag
    assert [e.value for e in scalars["Lr/pg_0"]] == pytest.approx([0.01, 0.01])
    assert [e.value for e in scalars["Lr/pg_1"]] == pytest.approx([0.02, 0.02])
    assert all(math.isfinite(e.value) and e.value > 0 for e in scalars["Loss/total"])
    for tag in ("Train/loss", "Train/loss_bbox", "Train/loss_cls", "Train/lr"):
        assert [e.step for e in scalars[tag]] == [0, 1], tag
    assert [r["train_loss"] for r in trainer.history] == pytest.approx([e.value for e in scalars["Train/loss"]])
    for name in STAT_NAMES:
        assert [e.step for e in scalars[f"Test/{name}"]] == [0, 1], name
    assert [e.value for e in scalars["Test/AP"]] == pytest.approx([0.25, 0.5])
    assert [e.value for e in scalars["Test/AP50"]] == pytest.approx([0.35, 0.6])


def test_summary_dir_flag_gives_tensorboard_scalars_of_a_real_run(tiny_config_file, tmp_path):
    tb = tmp_path / "tb"
    argv = ["-c", str(tiny_config_file), "-u", "epoches=1", "--output-dir", str(tmp_path / "run")]
    assert train_main([*argv, "--summary-dir", str(tb)]) == 0
    scalars = _scalars(tb)
    assert [e.step for e in scalars["Train/loss"]] == [0] and math.isfinite(scalars["Train/loss"][0].value)
    assert [e.step for e in scalars["Test/AP"]] == [0] and "Test/ARl" in scalars
    assert not (tmp_path / "run" / "summary").exists()


def test_setup_creates_the_summary_writer_where_asked(tiny_data, tmp_path):
    def writer_dir(run: RunOptions, **top):
        cfg = train_config_from_dict(tiny_config(tiny_data, tmp_path / "cfg_out", **top))
        trainer, _ = build_trainer(cfg, run)
        if trainer.writer is None:
            return None
        trainer.writer.close()
        assert isinstance(trainer.writer, SummaryWriter)
        return trainer.writer.log_dir

    assert writer_dir(RunOptions(summary_dir=str(tmp_path / "flag"))) == str(tmp_path / "flag")
    assert writer_dir(RunOptions(), summary_dir=str(tmp_path / "key")) == str(tmp_path / "key")
    assert writer_dir(RunOptions(output_dir=str(tmp_path / "out"))) == str(tmp_path / "out" / "summary")
    # the flag wins over the config key
    assert writer_dir(RunOptions(summary_dir=str(tmp_path / "flag2")), summary_dir=str(tmp_path / "key")) == str(
        tmp_path / "flag2"
    )
    assert writer_dir(RunOptions(test_only=True, output_dir=str(tmp_path / "eval"))) is None


# ---------------------------------------------------------------------------------- flat-cosine
FLAT_COSINE = {"lrsheduler": "flatcosine", "lr_gamma": 0.5, "warmup_iter": 2, "flat_epoch": 2, "no_aug_epoch": 1}


def expected_flat_cosine(it: int, total: int, warmup: int, flat: int, no_aug: int, gamma: float) -> float:
    """The schedule's documented shape: quadratic warm-up, flat, cosine to ``gamma``, flat at ``gamma``."""
    if it < warmup:
        return ((it + 1) / warmup) ** 2
    if it < flat:
        return 1.0
    if it >= total - no_aug:
        return gamma
    return gamma + (1 - gamma) * (1 + math.cos(math.pi * (it - flat) / (total - no_aug - flat))) / 2


@pytest.mark.parametrize("accum", [1, 2])
def test_flatcosine_config_builds_a_per_optimizer_step_schedule(tiny_data, tmp_path, accum):
    cfg = train_config_from_dict(tiny_config(tiny_data, tmp_path, epoches=6, grad_accum_steps=accum, **FLAT_COSINE))
    assert cfg.scheduler.type == "flatcosine"
    trainer, _ = build_trainer(cfg, RunOptions(output_dir=str(tmp_path / "run")))
    trainer.writer.close()
    schedule = trainer.iteration_scheduler
    assert isinstance(schedule, FlatCosineSchedule)
    assert trainer.lr_scheduler is None and trainer.warmup is None
    steps_per_epoch = math.ceil(len(trainer.train_loader) / accum)  # 6 images, batch 3: 2 batches
    assert len(trainer.train_loader) == 2
    assert schedule.total_iters == 6 * steps_per_epoch
    assert schedule.flat_iters == 2 * steps_per_epoch and schedule.no_aug_iters == 1 * steps_per_epoch
    assert schedule.warmup_iters == 2 and schedule.lr_gamma == 0.5


def test_flatcosine_steps_once_per_optimizer_step_and_follows_its_curve(tiny_data, tmp_path):
    cfg = train_config_from_dict(tiny_config(tiny_data, tmp_path, epoches=6, **FLAT_COSINE))
    model = TinyDetector()
    optimizer = torch.optim.SGD([{"params": [model.head.weight], "lr": 0.1}, {"params": [model.head.bias]}], lr=0.02)
    base = [0.1, 0.02]
    used = count_steps(optimizer, lambda: [g["lr"] for g in optimizer.param_groups])
    # 4 batches an epoch with accumulation 2: 2 optimizer steps an epoch, 12 in all
    epoch_scheduler, warmup, schedule = _schedules(cfg, optimizer, iters_per_epoch=2)
    assert epoch_scheduler is None and warmup is None
    trainer = make_trainer(tmp_path / "run", make_batches(4, 1), model=model, optimizer=optimizer, epochs=6,
                           grad_accum_steps=2, iteration_scheduler=schedule)  # fmt: skip
    trainer.fit()
    assert len(used) == trainer.global_step == schedule.last_epoch == 12
    total, warmup_iters, flat, no_aug = 12, 2, 4, 2
    for it, lrs in enumerate(used):
        factor = expected_flat_cosine(it, total, warmup_iters, flat, no_aug, 0.5)
        assert lrs == pytest.approx([b * factor for b in base]), it
    # hand-computed checkpoints: warm-up (1/2)^2, flat, cosine midpoint (0.5 + 0.5 * 0.5), floor 0.5
    assert [used[i][0] for i in (0, 1, 3, 4, 7, 10, 11)] == pytest.approx([0.025, 0.1, 0.1, 0.1, 0.075, 0.05, 0.05])
    assert all(a[0] >= b[0] for a, b in zip(used[1:], used[2:]))  # non-increasing after the warm-up


# ------------------------------------------------------------------------------- channels-last
@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_reaches_the_model_and_the_images(tiny_data, tmp_path, channels_last):
    """``channels_last`` (default on): conv weights and the images the model sees are NHWC; off keeps NCHW."""
    top = {} if channels_last else {"channels_last": False}
    cfg = train_config_from_dict(tiny_config(tiny_data, tmp_path, epoches=1, **top))
    assert cfg.channels_last is channels_last
    trainer, _ = build_trainer(cfg, RunOptions(output_dir=str(tmp_path / "run")))
    trainer.writer.close()
    model = trainer.model
    conv = model.backbone.stem.stem1.conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) is channels_last
    assert trainer.ema.module.backbone.stem.stem1.conv.weight.is_contiguous(memory_format=torch.channels_last) is (
        channels_last
    )
    seen = []
    hook = model.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    trainer.options.early_stopping_patience = 0
    trainer.train_one_epoch(0)
    trainer.evaluate()
    hook.remove()
    assert seen and all(x.is_contiguous(memory_format=torch.channels_last) is channels_last for x in seen)
    assert trainer.model.backbone.stem.stem1.conv.weight.is_contiguous(memory_format=torch.channels_last) is (
        channels_last
    )


def test_channels_last_must_be_a_bool(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="channels_last must be true or false"):
        train_config_from_dict(tiny_config(tiny_data, tmp_path, channels_last="yes"))


# ----------------------------------------------------------------------------- leftovers
def test_fit_removes_checkpoint_temporaries_left_by_a_killed_run(tmp_path):
    orphans = [tmp_path / ".last.pth.ab12cd.tmp", tmp_path / ".best_stg1.pth.x9.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"\0" * 1000)
    unrelated = [tmp_path / "notes.tmp", tmp_path / "last.pth.bak"]
    for path in unrelated:
        path.write_text("mine")
    make_trainer(tmp_path, make_batches(1, 2)).fit()
    assert not any(path.exists() for path in orphans)
    assert all(path.exists() for path in unrelated) and (tmp_path / "last.pth").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_log_record_of_an_epoch_is_written_before_its_checkpoint(tmp_path, monkeypatch):
    from dfine.engine import trainer as trainer_module

    def killed(obj, path):
        raise KeyboardInterrupt  # the process dies while the checkpoint is written

    monkeypatch.setattr(trainer_module, "save_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path, make_batches(1, 2)).fit()
    records = [json.loads(line) for line in (tmp_path / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0]

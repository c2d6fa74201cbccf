"""Run the official D-FINE code beside dfine on one training config and compare the pieces of a training run.

python benchmarks/official_side_by_side.py OFFICIAL_REPO OURS.yml OFFICIAL.yml [--samples 40] [--batches 12] [--json]

OURS.yml and OFFICIAL.yml are the same run written for each code base (e.g. the config of
``../shared/bench/train_parity.sh`` including each one's ``configs/dfine/dfine_hgnetv2_n_coco.yml``). Compared:

* init: every state_dict entry's mean and std right after building the model with the same seed;
* optimizer: the parameter names, learning rate and weight decay of every group;
* data: the training dataset's (image, boxes, labels) after augmentation, under the same RNG state;
* batches: for augmented batches from the official loader, every loss term and every parameter's gradient
  from the same weights and the same denoising seed (dfine in its default channels-last layout);
* evaluator: AP of the same jittered detections through both COCO evaluators.

The official code is imported from OFFICIAL_REPO and run as it is (nothing is copied from it).
"""

from __future__ import annotations

import argparse
import json
import random
import sys

import numpy as np
import torch


def _official(repo: str, config: str):
    sys.path.insert(0, repo)
    from src.core import YAMLConfig

    return YAMLConfig(config)


def compare_init(official_cfg, ours_cfg) -> dict:
    from dfine.model.dfine import DFINE

    torch.manual_seed(0)
    theirs = official_cfg.model.state_dict()
    torch.manual_seed(0)
    mine = DFINE.from_config(ours_cfg.model).state_dict()
    off = []
    for key, a in theirs.items():
        b = mine[key]
        if a.numel() < 2 or not a.is_floating_point():
            continue
        sa, sb = a.float().std().item(), b.float().std().item()
        if abs(sa - sb) > 0.1 * max(sa, sb) + 1e-6:
            off.append(key)
    return {"same_keys_and_order": list(theirs) == list(mine), "entries_with_other_std": off}


def compare_optimizer(official_cfg, ours_cfg) -> dict:
    from dfine.engine.optim import build_optimizer
    from dfine.model.dfine import DFINE

    o = ours_cfg.optimizer
    model = DFINE.from_config(ours_cfg.model)
    mine = build_optimizer(model, o.type, o.lr, o.weight_decay, o.betas, o.momentum, list(o.groups))

    def groups(optimizer, module):
        names = {id(p): n for n, p in module.named_parameters()}
        return [(sorted(names[id(p)] for p in g["params"]), g["lr"], g["weight_decay"]) for g in optimizer.param_groups]

    theirs = groups(official_cfg.optimizer, official_cfg.model)
    return {"groups_equal": theirs == groups(mine, model), "group_sizes": [len(g[0]) for g in theirs]}


def compare_data(official_cfg, ours_cfg, samples: int) -> dict:
    from dfine.engine.setup import _dataset

    theirs = official_cfg.train_dataloader.dataset
    mine = _dataset(ours_cfg, ours_cfg.train, True, None)
    mine.schedule.set_epoch(0)
    worst_image = worst_box = 0.0
    mismatches = 0
    for i in range(samples):
        outputs = []
        for dataset in (theirs, mine):
            torch.manual_seed(i), random.seed(i), np.random.seed(i)
            outputs.append(dataset[i])
        (ti, tt), (mi, mt) = outputs
        worst_image = max(worst_image, (ti - mi).abs().max().item())
        if tt["boxes"].shape != mt["boxes"].shape or not torch.equal(tt["labels"], mt["labels"]):
            mismatches += 1
        elif tt["boxes"].numel():
            worst_box = max(worst_box, (tt["boxes"] - mt["boxes"]).abs().max().item())
    return {"samples": samples, "max_image_diff": worst_image, "max_box_diff": worst_box, "mismatches": mismatches}


def compare_batches(official_cfg, ours_cfg, count: int) -> dict:
    from dfine.engine.setup import _criterion
    from dfine.model.dfine import DFINE

    torch.manual_seed(0)
    theirs, their_loss = official_cfg.model, official_cfg.criterion
    mine = DFINE.from_config(ours_cfg.model)
    mine.load_state_dict(theirs.state_dict())
    mine = mine.to(memory_format=torch.channels_last)
    my_loss = _criterion(ours_cfg)
    loader = official_cfg.train_dataloader
    loader.set_epoch(0)
    rows = []
    for index, (images, targets) in enumerate(loader):
        if index == count:
            break
        result = []
        runs = ((theirs, their_loss, torch.contiguous_format), (mine, my_loss, torch.channels_last))
        for model, criterion, layout in runs:
            model.train()
            model.zero_grad()
            torch.manual_seed(7)
            terms = criterion(model(images.contiguous(memory_format=layout), targets=targets), targets)
            sum(terms.values()).backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            result.append(({k: float(v) for k, v in terms.items()}, grads))
        (t_terms, t_grads), (m_terms, m_grads) = result
        largest = max(g.norm().item() for g in t_grads.values())
        live = [n for n, g in t_grads.items() if g.norm().item() > 1e-4 * largest]  # ~0 grads are rounding noise
        rows.append(
            {
                "boxes_per_image": [len(t["labels"]) for t in targets],
                "total": [sum(t_terms.values()), sum(m_terms.values())],
                "max_term_diff": max(abs(t_terms[k] - m_terms[k]) for k in t_terms),
                "max_grad_rel_diff": max(((t_grads[n] - m_grads[n]).norm() / t_grads[n].norm()).item() for n in live),
            }
        )
    return {"batches": rows}


def compare_evaluator(ann_file: str) -> dict:
    from faster_coco_eval import COCO
    from src.data.dataset.coco_eval import CocoEvaluator as OfficialEvaluator

    from dfine.engine.evaluate import CocoEvaluator

    with open(ann_file) as handle:
        gt = json.load(handle)
    g = torch.Generator().manual_seed(0)
    by_image: dict[int, list] = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    results = {}
    for image in gt["images"]:
        anns = by_image.get(image["id"], [])
        xywh = torch.tensor([a["bbox"] for a in anns]).reshape(-1, 4)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1) + 3 * torch.randn(len(anns), 4, generator=g)
        labels = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        results[image["id"]] = {"boxes": boxes, "labels": labels, "scores": torch.rand(len(anns), generator=g)}
    theirs = OfficialEvaluator(COCO(ann_file), ["bbox"])
    theirs.update(results)
    theirs.synchronize_between_processes()
    theirs.accumulate()
    theirs.summarize()
    mine = CocoEvaluator(gt)
    mine.update(list(results), list(results.values()))
    dfine_ap = mine.compute(verbose=False).stats["AP"]
    return {"official_AP": float(theirs.coco_eval["bbox"].stats[0]), "dfine_AP": dfine_ap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("official_repo")
    parser.add_argument("ours")
    parser.add_argument("official")
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(2)
    from dfine.config.schema import load_train_config

    theirs = _official(args.official_repo, args.official)
    mine = load_train_config(args.ours)
    report = {
        "init": compare_init(theirs, mine),
        "optimizer": compare_optimizer(theirs, mine),
        "data": compare_data(theirs, mine, args.samples),
        "batches": compare_batches(theirs, mine, args.batches),
        "evaluator": compare_evaluator(mine.val.dataset.ann_file),
    }
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    main()

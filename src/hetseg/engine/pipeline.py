"""The training recipe, top to bottom: config -> splits -> stages -> model file -> evaluation.

DecoupledNet: stage ``cls`` (classifier on the weak set) then stage ``seg`` (bridge + binary
decoder on combinatorial crops of the strong set, classifier frozen). DecoupledNet-Str is the same
recipe with ``data.weak_split`` pointing at the strong split. DeconvNet: one stage ``deconv``.
Any of them may start from a pretrained backbone: ImageNet VGG-16 at paper scale
(``model.vgg_weights``), or at CPU scale the output of stage ``pre`` (``model.backbone``), which
pretrains the classifier on single fashion items and writes ``RUN/backbone.safetensors``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import torch

from hetseg.config import Config
from hetseg.data.classes import FASHION_CLASSES, VOC_CLASSES
from hetseg.data.crops import proposals_available
from hetseg.data.datasets import CropDataset, ImageLabelDataset
from hetseg.data.records import Split, read_split
from hetseg.engine.checkpoint import build_model, load_model, load_weights, save_model
from hetseg.engine.infer import evaluate_split
from hetseg.engine.train import run_stage
from hetseg.errors import HetsegError
from hetseg.metrics import Scores, format_table
from hetseg.models.scales import get_scale


def class_names(cfg: Config) -> list[str]:
    """Config names, else ``<root>/classes.txt``, else the VOC/fashion lists by class count."""
    if cfg.data.class_names:
        return list(cfg.data.class_names)
    p = Path(cfg.data.root) / "classes.txt"
    if p.is_file():
        return [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
    n = cfg.data.num_classes
    for names in (VOC_CLASSES, FASHION_CLASSES):
        if len(names) == n:
            return list(names)
    return ["background"] + [f"class{i}" for i in range(1, n)]


def load_split(cfg: Config, which: str) -> Split:
    """``which`` is weak | strong | val, or a split file path (absolute or root-relative)."""
    rel = {"weak": cfg.data.weak_split, "strong": cfg.data.strong_split, "val": cfg.data.val_split}.get(which, which)
    root = Path(cfg.data.root)
    path = Path(rel) if Path(rel).is_absolute() or Path(rel).is_file() else root / rel
    if not path.is_file() and (root / "splits" / f"{rel}.txt").is_file():
        path = root / "splits" / f"{rel}.txt"
    return read_split(path, root, num_classes=cfg.data.num_classes)


def command_line() -> str:
    return "hetseg " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _prepare_net(cfg: Config, init_from: str | None):
    torch.manual_seed(cfg.seed)  # initial weights depend on the seed only, not on what ran before
    net = build_model(cfg)
    run = Path(cfg.run_dir)
    if init_from:
        load_weights(net, init_from)
    elif (run / "model.safetensors").is_file():
        load_weights(net, run)  # weights of the latest finished stage of this run
    elif cfg.model.backbone:
        from hetseg.models.backbone import load_backbone

        try:
            load_backbone(net, cfg.model.backbone)
        except ValueError as e:
            raise HetsegError(f"model.backbone={cfg.model.backbone}: {e}") from None
    elif cfg.model.vgg_weights:
        from hetseg.models.vgg import load_vgg16_file

        target = net.classifier if hasattr(net, "classifier") else net
        load_vgg16_file(target, cfg.model.vgg_weights)
    return net


def train(cfg: Config, stages: tuple[str, ...] = ("cls", "seg"), resume: str | None = None,
          init_from: str | None = None, progress: bool = True, callbacks=()) -> dict:
    """Train the stages a config names into ``cfg.run_dir``; returns {stage: summary}."""
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    cfg.save(run / "config.json")
    names = class_names(cfg)
    size = get_scale(cfg.model.scale).input_size
    net = _prepare_net(cfg, init_from)
    C = cfg.data.num_classes
    summaries: dict = {}
    splits_used: dict = {}
    for stage in stages:
        if stage == "pre":
            from hetseg.data.items import item_splits

            if not hasattr(net, "classifier") or net.classifier.num_classes != 10:
                raise HetsegError("stage 'pre' pretrains a 10-class classifier on fashion items; fix: run it "
                                  "with model.name=decouplednet and data.num_classes=11")
            train_ds, val_ds = item_splits(cfg.data.fashion_mnist_dir or None, size, cfg.seed,
                                            cfg.data.pretrain_holdout)
            summaries[stage] = run_stage("pre", net, cfg, cfg.pre, train_ds, val_ds, resume, callbacks, progress)
            splits_used["pre"] = {"items": "Fashion-MNIST train", "train": len(train_ds), "held_out": len(val_ds)}
        elif stage == "cls":
            weak = load_split(cfg, "weak").weak()
            val = load_split(cfg, "val")
            train_ds = ImageLabelDataset(weak, C, size, train=True, seed=cfg.seed)
            val_ds = ImageLabelDataset(val.weak(), C, size, train=False, seed=cfg.seed)
            summaries[stage] = run_stage("cls", net, cfg, cfg.cls, train_ds, val_ds, resume, callbacks,
                                         progress, num_labels=C - 1)
            splits_used["weak"] = {"file": cfg.data.weak_split, "images": len(weak), "checksum": weak.checksum()}
        elif stage in ("seg", "deconv"):
            strong = load_split(cfg, "strong")
            use_props = cfg.crops.proposals == "selective-search" or (
                cfg.crops.proposals == "auto" and proposals_available())
            train_ds = CropDataset(strong, C, size, cfg.crops.crops_per_subset, cfg.crops.full_image_prob,
                                   cfg.crops.max_scale, use_props, "binary" if stage == "seg" else "multiclass",
                                   seed=cfg.seed)
            sc = cfg.seg if stage == "seg" else cfg.deconv
            summaries[stage] = run_stage(stage, net, cfg, sc, train_ds, None, resume, callbacks, progress)
            summaries[stage]["proposals"] = "selective-search" if use_props else "random boxes only"
            splits_used["strong"] = {"file": cfg.data.strong_split, "images": len(strong.strong()),
                                     "checksum": strong.checksum(), "pairs": len(train_ds.pairs)}
        else:
            raise HetsegError(f"unknown stage '{stage}'; fix: use cls, seg or deconv")
        resume = None  # an explicit checkpoint belongs to the first stage only
        if int(os.environ.get("RANK", "0")) != 0:
            continue  # under torchrun only rank 0 writes the model file
        prev = json.loads((run / "model.json").read_text()) if (run / "model.json").is_file() else {}
        stages_meta = {**prev.get("stages", {}), **summaries}
        save_model(run, net, cfg, names, {"stages": stages_meta,
                                          "splits": {**prev.get("splits", {}), **splits_used},
                                          "command": command_line()})
        if stage == "pre":
            from safetensors.torch import save_file

            from hetseg.models.backbone import backbone_state

            save_file(backbone_state(net), str(run / "backbone.safetensors"))
    return summaries


def evaluate_run(run: str | Path, split: str = "val", threshold: float | None = None,
                 use_gt_labels: bool = False, batch_size: int = 16) -> tuple[Scores, dict]:
    """Score a trained run on a split; writes predictions and eval_<split>.json/.md into the run."""
    net, cfg, info = load_model(run)
    run = Path(run)
    names = info.get("class_names") or class_names(cfg)
    sp = load_split(cfg, split)
    tag = Path(split).stem + ("_gt" if use_gt_labels else "")
    thr = cfg.eval.threshold if threshold is None else threshold
    size = get_scale(cfg.model.scale).input_size
    scores = evaluate_split(net, sp, cfg.data.num_classes, size, thr, batch_size,
                            pred_dir=run / f"predictions_{tag}", use_gt_labels=use_gt_labels)
    report = {
        "run": str(run), "split": sp.name, "split_checksum": sp.checksum(), "images": len(sp.strong()),
        "scale": cfg.model.scale, "seed": cfg.seed, "threshold": thr, "gt_labels": use_gt_labels,
        "model": cfg.model.name, "evaluation": "single scale, whole image, original resolution",
        "scores": scores.to_dict(names), "command": command_line(),
        "train": info.get("stages", {}), "train_splits": info.get("splits", {}),
    }
    (run / f"eval_{tag}.json").write_text(json.dumps(report, indent=2) + "\n")
    (run / f"eval_{tag}.md").write_text(
        f"# {cfg.model.name} on {sp.name} ({len(sp.strong())} images, checksum {sp.checksum()[:12]})\n\n"
        f"scale {cfg.model.scale}, seed {cfg.seed}, threshold {thr}, command `{report['command']}`\n\n"
        + format_table(scores, names) + "\n")
    return scores, report

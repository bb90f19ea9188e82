"""TransferNet (Hong, Oh, Lee, Han, CVPR 2016) and the baselines of its Sec. 6.3 (docs/REFERENCE.md
§3.6-§3.10, docs/TRANSFERNET.md). Three methods share one recipe shape:

1. stage ``cls``: the *separate* multi-label classifier on the image labels of both domains (a weak
   split of source-train + target-train images). It is (a) the frozen encoder of TransferNet (its
   conv layers; "fine-tuned for multi-label classification on VOC+COCO", §7.9), (b) the frozen
   classification network of BaselineNet and DecoupledNet-transfer, and (c) the classifier that picks
   labels at inference, restricted to the target classes (threshold 0.6, argmax fallback, §3.9).
   ``transfer.classifier_run=RUN`` takes it from a finished run instead (the bench trains it once).
2. ``transfernet``: stage ``att`` (attention + classification layers, cls loss on (image, label)
   rows of both domains), then ``joint`` (cls + lambda * seg, lambda = 2, seg loss on source rows
   only); Adam, fixed lr, no weight decay, encoder frozen (§3.1, §3.6, §3.7).
   ``baselinenet``: stage ``baseline`` (FC + decoder on source rows). ``decouplednet_transfer``:
   DecoupledNet stage ``seg`` on combinatorial crops of the source images.

Feature scale: the original multiplies conv5_3 by 0.004 to bring Caffe VGG-16 activations "roughly
into 0-1". ``transfer.feature_scale=0`` re-derives that constant for another encoder
(:func:`calibrate_feature_scale`); the CPU recipe does so (docs/TRANSFERNET.md).

Equal effort: every decoder gets the same number of optimizer steps with the same number of
source-mask rows per step (``transfer.joint`` = ``transfer.baseline`` = ``seg`` budgets).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from hetseg.config import Config
from hetseg.engine.checkpoint import load_model
from hetseg.engine.train import run_stage
from hetseg.errors import HetsegError
from hetseg.methods.base import Method, register_method
from hetseg.methods.decouplednet import crop_dataset, crop_samples, train_cls
from hetseg.methods.decouplednet.stages import SegStage
from hetseg.methods.transfernet.data import (DomainPairs, LabelRows, both_domains_records, both_domains_split,
                                             domain_rows, transfer_classes)
from hetseg.methods.transfernet.stages import BaselineStage, TransferStage
from hetseg.models.transfernet import TransferNet


@torch.no_grad()
def calibrate_feature_scale(net: TransferNet, rows: LabelRows, n: int = 256, batch: int = 64) -> float:
    """1 / (mean per-image max of conv5_3) over the first ``n`` rows: maps activations "roughly into
    0-1", the stated purpose of the original's 0.004 (§3.1), for an encoder other than Caffe VGG-16."""
    net.eval()
    net.feature_scale.fill_(1.0)
    maxima = []
    for start in range(0, min(n, len(rows)), batch):
        x = torch.stack([rows[i][0] for i in range(start, min(start + batch, n, len(rows)))])
        maxima.append(net.encode(x).features.flatten(1).amax(1))
    return float(1.0 / torch.cat(maxima).mean().clamp_min(1e-6))


class _TransferFamily(Method):
    """Shared by the three: the label rule, stage ``cls`` on both domains, the classifier import."""

    def stage_section(self, stage: str) -> str:
        """``cls`` and DecoupledNet's ``seg`` read their own sections; att/joint/baseline ``transfer.*``."""
        return stage if stage in ("cls", "seg") else f"transfer.{stage}"

    def model_kwargs(self, cfg: Config) -> dict:
        return {**super().model_kwargs(cfg), "label_classes": [c - 1 for c in transfer_classes(cfg)[1]],
                "label_fallback": True}

    def threshold(self, cfg: Config) -> float:
        return cfg.transfer.threshold

    def mask_splits(self, cfg: Config) -> list[str]:
        return ["transfer.source_split"]  # the source classes' masks; target images have labels only

    def data_splits(self, cfg: Config) -> list[str]:
        return ["transfer.source_split", "transfer.target_split", "transfer.val_split"]

    def default_stages(self, cfg: Config) -> tuple[str, ...]:
        return self.stages[1:] if cfg.transfer.classifier_run else self.stages

    def stage_samples(self, cfg: Config, stage: str) -> int | None:
        """``cls``: the both-domains images (:meth:`both_domains`, counted without writing its split);
        the others: their (image, label) rows, which also refuses a split with none of its classes."""
        if stage == "cls":
            return len(both_domains_records(cfg))
        if stage == "seg":  # DecoupledNet-transfer: crops of the source images
            scfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, strong_split=cfg.transfer.source_split))
            return crop_samples(scfg, "strong", "binary")
        source = len(domain_rows(cfg, "source", 1))
        # TransferNet pairs every target row with a source row (DomainPairs); BaselineNet trains on source rows
        return source if stage == "baseline" else max(source, len(domain_rows(cfg, "target", 1)))

    def both_domains(self, cfg: Config) -> Config:
        """``cfg`` whose weak split is the written both-domains split of this run."""
        path = (Path(cfg.run_dir) / "splits" / "transfer_both_train.txt").absolute()
        both_domains_split(cfg, path)
        return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, weak_split=str(path)))

    def import_classifier(self, net: nn.Module, cfg: Config) -> None:
        """The classifier of ``transfer.classifier_run`` (a decouplednet run) into ``net``."""
        run = cfg.transfer.classifier_run
        if not run:
            return
        source = load_model(run)[0]
        where = f"transfer.classifier_run={run}"
        theirs = getattr(source, "classifier", None)
        if not isinstance(theirs, nn.Module):
            raise HetsegError(f"{where}: a {type(source).__name__} run has no image classifier; fix: name a run whose "
                              "stage cls trained one (decouplednet or the transfer family), or drop the setting to "
                              "train stage cls here")
        mine = net.classifier.state_dict()
        other = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
        if other != {k: tuple(v.shape) for k, v in mine.items()}:
            raise HetsegError(f"{where}: its classifier has other layers or sizes than this model's (another encoder, "
                              "scale or data.num_classes); fix: name a run of the same model.encoder, model.scale and "
                              "data.num_classes, or drop the setting to train stage cls here")
        net.classifier.load_state_dict(theirs.state_dict())

    def prepare(self, net: nn.Module, cfg: Config, fresh: bool) -> None:
        if fresh:
            self.import_classifier(net, cfg)

    def train_cls(self, net: nn.Module, cfg: Config, resume: str | None, callbacks: Sequence,
                  progress: bool) -> tuple[dict, dict]:
        """Stage ``cls`` on the source-train + target-train image labels (:meth:`both_domains`)."""
        return train_cls(net, self.both_domains(cfg), "weak", resume, callbacks, progress)


class TransferNetMethod(_TransferFamily):
    name = "transfernet"
    model = "transfernet"
    stages = ("cls", "att", "joint")
    mask_stages = ("att", "joint")

    def model_kwargs(self, cfg: Config) -> dict:
        t = cfg.transfer
        return {**super().model_kwargs(cfg), "attention": t.attention, "feature_scale": t.feature_scale or 1.0,
                "embed_dim": t.embed_dim or None, "bg_scale": t.bg_scale}

    def prepare(self, net: nn.Module, cfg: Config, fresh: bool) -> None:
        super().prepare(net, cfg, fresh)
        if fresh and cfg.transfer.classifier_run:
            self.encoder_from_classifier(net, cfg)

    def encoder_from_classifier(self, net: TransferNet, cfg: Config) -> None:
        """Copy the classifier's conv layers into the frozen encoder; calibrate the feature scale."""
        net.encoder.load_state_dict(net.classifier.encoder.state_dict())
        if cfg.transfer.feature_scale <= 0:
            net.feature_scale.fill_(calibrate_feature_scale(net, domain_rows(cfg, "source", net.input_size)))

    def run_stage(self, stage: str, net: nn.Module, cfg: Config, resume: str | None, callbacks: Sequence,
                  progress: bool) -> tuple[dict, dict]:
        if stage == "cls":
            out = self.train_cls(net, cfg, resume, callbacks, progress)
            self.encoder_from_classifier(net, cfg)
            return out
        target, source = domain_rows(cfg, "target", net.input_size), domain_rows(cfg, "source", net.input_size)
        sc = self.stage_config(cfg, stage)
        module = TransferStage(net, sc, stage, cfg.transfer.seg_weight)
        summary = run_stage(stage, module, cfg, sc, DomainPairs(target, source, cfg.seed), None, resume,
                            callbacks, progress)
        summary.update(rows_per_step=2 * sc.batch_size * sc.accumulate, source_rows_per_step=sc.batch_size * sc.accumulate,
                       feature_scale=float(net.feature_scale))
        return summary, {"rows": {"target": len(target), "source": len(source)}}


class BaselineNetMethod(_TransferFamily):
    name = "baselinenet"
    model = "baselinenet"
    stages = ("cls", "baseline")
    mask_stages = ("baseline",)

    def model_kwargs(self, cfg: Config) -> dict:
        return {**super().model_kwargs(cfg), "bg_scale": cfg.transfer.bg_scale}

    def run_stage(self, stage: str, net: nn.Module, cfg: Config, resume: str | None, callbacks: Sequence,
                  progress: bool) -> tuple[dict, dict]:
        if stage == "cls":
            return self.train_cls(net, cfg, resume, callbacks, progress)
        source, sc = domain_rows(cfg, "source", net.input_size), self.stage_config(cfg, stage)
        summary = run_stage("baseline", BaselineStage(net, sc), cfg, sc, source, None, resume, callbacks, progress)
        summary["source_rows_per_step"] = sc.batch_size * sc.accumulate
        return summary, {"rows": {"source": len(source)}}


class DecoupledNetTransferMethod(_TransferFamily):
    """DecoupledNet stage ``seg`` on the source split's crops, shared classifier frozen. Its fresh
    model is the whole classifier run (classifier trained, bridge/decoder at that run's seeded init)."""

    name = "decouplednet_transfer"
    model = "decouplednet"
    stages = ("cls", "seg")
    crop_stages = ("seg",)
    mask_stages = ("seg",)

    def model_kwargs(self, cfg: Config) -> dict:
        return {**super().model_kwargs(cfg), "weight_pool": cfg.model.weight_pool}

    def import_classifier(self, net: nn.Module, cfg: Config) -> None:
        if cfg.transfer.classifier_run:
            net.load_state_dict(load_model(cfg.transfer.classifier_run)[0].state_dict())

    def run_stage(self, stage: str, net: nn.Module, cfg: Config, resume: str | None, callbacks: Sequence,
                  progress: bool) -> tuple[dict, dict]:
        if stage == "cls":
            return self.train_cls(net, cfg, resume, callbacks, progress)
        scfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, strong_split=cfg.transfer.source_split))
        train_ds, record, props = crop_dataset(scfg, "strong", "binary", net.input_size)
        sc = self.stage_config(cfg, stage)
        summary = run_stage(stage, SegStage(net, sc), cfg, sc, train_ds, None, resume, callbacks, progress)
        return {**summary, "proposals": props}, {"strong": record}


for _m in (TransferNetMethod(), BaselineNetMethod(), DecoupledNetTransferMethod()):
    register_method(_m)

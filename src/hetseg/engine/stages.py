"""LightningModules, one per training stage. They wrap plain models from hetseg.models.

- ``ClsStage``: the classifier on image-level labels (sigmoid BCE on the avg-pooled score, as the
  released classifier was fine-tuned "with the average-pooling layer on top", reference §1.3).
- ``SegStage``: DecoupledNet's bridge + binary decoder on combinatorial crops, classifier frozen and
  kept in eval mode (reference §1.4: blobs_lr 0 in every segmentation prototxt).
- ``DeconvStage``: the multi-class DeconvNet baseline on the strong set.
- ``PretrainStage``: CPU-scale backbone pretraining, single-label softmax over one item per image
  (hetseg.data.items; the stand-in for ImageNet, docs/DECISIONS.md).
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MultilabelAveragePrecision

from hetseg.config import StageConfig


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Softmax CE over pixels with 255 ignored, normalised by valid pixels (reference §1.6).

    A batch whose pixels are all void gives 0 loss and 0 gradient instead of NaN (the TransferNet
    Caffe patch does the same, reference §3.6).
    """
    if not bool((target != 255).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, ignore_index=255)


class _Stage(L.LightningModule):
    def __init__(self, net: nn.Module, sc: StageConfig) -> None:
        super().__init__()
        self.net = net
        self.sc = sc

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def configure_optimizers(self):
        params = self.trainable()
        # No weight decay on biases and BN affine parameters (Caffe: bias decay 0, reference §1.8).
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": self.sc.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        if self.sc.optimizer == "adam":
            opt = torch.optim.Adam(groups, lr=self.sc.lr)
        elif self.sc.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=self.sc.lr, momentum=self.sc.momentum)
        else:
            raise ValueError(f"unknown optimizer '{self.sc.optimizer}' (sgd | adam)")
        # Caffe "step" policy: lr x0.1 after a fixed fraction of the budget.
        milestone = max(1, int(self.sc.lr_step * self.sc.steps))
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[milestone], gamma=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_fit_start(self) -> None:
        if self.sc.channels_last:
            self.net.to(memory_format=torch.channels_last)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.sc.channels_last:  # images only; masks and label vectors are not 4-D
            batch = [b.contiguous(memory_format=torch.channels_last) if torch.is_tensor(b) and b.ndim == 4 else b
                     for b in batch]
        return batch

    def on_train_epoch_start(self) -> None:
        ds = self.trainer.train_dataloader.dataset
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(self.current_epoch)


def train_classifier_only(net: nn.Module) -> nn.Module:
    """Freeze everything but ``net.classifier`` (or ``net`` itself if it has none); return what trains."""
    classifier = getattr(net, "classifier", net)
    for p in net.parameters():
        p.requires_grad_(False)
    for p in classifier.parameters():
        p.requires_grad_(True)
    return classifier


class ClsStage(_Stage):
    """Multi-label classifier training; ``net`` is a DecoupledNet (or anything with ``.classifier``)."""

    def __init__(self, net: nn.Module, sc: StageConfig, num_labels: int) -> None:
        super().__init__(net, sc)
        train_classifier_only(net)
        self.val_map = MultilabelAveragePrecision(num_labels=num_labels, average="macro")

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net.classifier(x).logits_avg
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net.classifier(x).logits_avg
        self.val_map.update(torch.sigmoid(logits.float()), y.long())
        self.log("val/loss", F.binary_cross_entropy_with_logits(logits.float(), y), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self.log("val/mAP", self.val_map.compute(), prog_bar=True)
        self.val_map.reset()


class PretrainStage(_Stage):
    """Single-label classification of one item per image: softmax CE on the avg-pooled score.

    ``net`` is a DecoupledNet (its classifier is trained) or a bare Classifier.
    """

    def __init__(self, net: nn.Module, sc: StageConfig) -> None:
        super().__init__(net, sc)
        self.classifier = train_classifier_only(net)
        # torchmetrics sums hits and counts over DDP ranks (a mean of per-rank ratios would not).
        self.val_acc = MulticlassAccuracy(num_classes=self.classifier.num_classes, average="micro")

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.classifier(x).logits_avg.float(), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.classifier(x).logits_avg.float()
        self.val_acc.update(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self.log("val/acc", self.val_acc.compute())
        self.val_acc.reset()


class SegStage(_Stage):
    """Bridge + decoder on (crop, label subset, binary mask) samples; classifier frozen, eval mode."""

    def __init__(self, net: nn.Module, sc: StageConfig) -> None:
        super().__init__(net, sc)
        for p in net.classifier.parameters():
            p.requires_grad_(False)
        for p in list(net.bridge.parameters()) + list(net.decoder.parameters()):
            p.requires_grad_(True)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.classifier.eval()  # frozen: its BN/dropout (if any) must not change behaviour
        return self

    def training_step(self, batch, batch_idx):
        x, subset, target = batch
        with torch.no_grad():
            cls_out = self.net.classifier(x)
            w = self.net.label_weights(cls_out, subset)[:, None]  # (N, 1, K)
        logits = self.net.segment(x, w, cls_out)[:, 0]  # (N, 2, H, W)
        loss = seg_loss(logits, target)
        self.log("train/loss", loss, prog_bar=True)
        return loss


class DeconvStage(_Stage):
    """The DeconvNet baseline: 21-way (or C-way) encoder-decoder, all layers trained."""

    def training_step(self, batch, batch_idx):
        x, _, target = batch
        loss = seg_loss(self.net(x), target)
        self.log("train/loss", loss, prog_bar=True)
        return loss

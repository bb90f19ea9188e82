"""DecoupledNet's stages (docs/REFERENCE.md §1.3-§1.8), on the generic :class:`Stage`.

- ``ClsStage``: the classifier on image-level labels (sigmoid BCE on the avg-pooled score, as the
  released classifier was fine-tuned "with the average-pooling layer on top", docs/REFERENCE.md §1.3).
- ``SegStage``: bridge + binary decoder on combinatorial crops, classifier frozen and in eval mode
  (docs/REFERENCE.md §1.4: blobs_lr 0 in every segmentation prototxt).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MultilabelAveragePrecision

from hetseg.config import StageConfig
from hetseg.engine.stage import Stage, masked_ce


class ClsStage(Stage):
    """Multi-label classifier training; ``net`` has a ``.classifier`` (DecoupledNet, TransferNet, ...)."""

    def __init__(self, net: nn.Module, sc: StageConfig, num_labels: int) -> None:
        super().__init__(net, sc, [net.classifier])
        self.val_map = MultilabelAveragePrecision(num_labels=num_labels, average="none")

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net.classifier(x).logits_avg
        loss = label_bce(logits, y, self.sc.label_loss)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net.classifier(x).logits_avg
        self.val_map.update(torch.sigmoid(logits.float()), y.long())
        self.log("val/loss", label_bce(logits, y, self.sc.label_loss), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self.log("val/mAP", mean_ap_over_present(self.val_map), prog_bar=True)
        self.val_map.reset()


def label_bce(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Multi-label sigmoid BCE of logits (N, K) against 0/1 targets (N, K) -> 0-d tensor: ``"mean"`` over
    images and classes (torch's default), or ``"caffe"``, summed over classes and averaged over images --
    Caffe's SigmoidCrossEntropyLoss, K times ``"mean"``. That the original used that layer is inferred: its
    solver is not found, the paper says "sigmoid cross-entropy loss" (docs/REFERENCE.md §1.3) and the
    original is Caffe code."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), y)
    return loss * logits.shape[1] if reduction == "caffe" else loss


def mean_ap_over_present(metric: MultilabelAveragePrecision) -> torch.Tensor:
    """The mean AP over the classes that have a positive in the validation images (0-d tensor).

    torchmetrics' macro mean counts a class without positives as AP 0 (with a warning that reached the
    console), so a val split missing one of 20 classes capped mAP at 0.95. A class with a positive always
    has AP > 0 (at the lowest threshold its recall is 1 at a precision above 0), so AP 0 marks exactly the
    classes without one. NaN when no class has a positive."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*No positive samples found in target.*")
        per_class = metric.compute()  # (K,)
    present = per_class > 0
    return per_class[present].mean() if bool(present.any()) else torch.tensor(float("nan"))


class SegStage(Stage):
    """Bridge + decoder on (crop, label subset, binary mask) samples; classifier frozen, eval mode."""

    def __init__(self, net: nn.Module, sc: StageConfig) -> None:
        super().__init__(net, sc, [net.bridge, net.decoder])

    def training_step(self, batch, batch_idx):
        x, subset, target = batch
        with torch.no_grad():
            cls_out = self.net.classifier(x)
            w = self.net.label_weights(cls_out, subset)[:, None]  # (N, 1, K)
        logits = self.net.segment(x, w, cls_out)[:, 0]  # (N, 2, H, W)
        loss = masked_ce(logits, target)
        self.log("train/loss", loss, prog_bar=True)
        return loss

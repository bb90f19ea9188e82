"""Inference at original resolution and devkit scoring of a split.

Each image is zero-padded to a square, resized to the network input, run through the model's own
``predict`` (DecoupledNet: one batched decoder pass per batch over [g*, g_l ...]), and its per-pixel
class probabilities are resized back to the padded square, cropped and argmax-ed (reference §1.10).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hetseg.data.io import read_image, read_mask
from hetseg.data.records import Split
from hetseg.data.transforms import prepare, restore
from hetseg.metrics import ConfusionMatrix, Scores
from hetseg.palette import save_index_png


@dataclass
class Prediction:
    """One image's result at its original size."""

    label_map: np.ndarray            # (H, W) uint8 mask indices
    class_scores: np.ndarray | None  # (K,) sigmoid of the avg-pooled class scores (DecoupledNet)
    identified: list[int]            # mask indices of identified labels
    probs: np.ndarray | None = None  # (C, H, W) float32 per-class maps, if requested


def _model_probs(net: nn.Module, x: torch.Tensor, threshold: float, labels: list[list[int]] | None):
    """(N, 3, S, S) -> (probs (N, C, S, S), class scores (N, K) | None, identified object indices)."""
    if hasattr(net, "bridge"):  # DecoupledNet family
        gt = None if labels is None else [[c - 1 for c in ls] for ls in labels]
        out = net.predict(x, threshold=threshold, labels=gt)
        return out.probs, out.class_scores, out.identified
    probs = torch.softmax(net(x).float(), dim=1)  # DeconvNet: one pass, argmax
    return probs, None, [[] for _ in range(x.shape[0])]


@torch.no_grad()
def predict_images(net: nn.Module, images: Sequence[np.ndarray], size: int, threshold: float = 0.5,
                   batch_size: int = 16, labels: Sequence[Sequence[int]] | None = None,
                   keep_probs: bool = False) -> list[Prediction]:
    """Predict label maps for RGB uint8 images of any size. ``labels`` (mask indices) replaces the
    classifier's label identification (the "-GT" variants)."""
    net.eval()
    device = next(net.parameters()).device
    results: list[Prediction] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        prepped = [prepare(im, size) for im in chunk]
        x = torch.stack([t for t, _ in prepped]).to(device)
        lab = None if labels is None else [list(ls) for ls in labels[start:start + batch_size]]
        probs, scores, ident = _model_probs(net, x, threshold, lab)
        for i, (_, geom) in enumerate(prepped):
            p = restore(probs[i].float().cpu(), geom)
            results.append(Prediction(
                label_map=p.argmax(0).to(torch.uint8).numpy(),
                class_scores=None if scores is None else scores[i].float().cpu().numpy(),
                identified=[int(k) + 1 for k in ident[i]],
                probs=p.numpy() if keep_probs else None))
    return results


@torch.no_grad()
def evaluate_split(net: nn.Module, split: Split, num_classes: int, size: int, threshold: float = 0.5,
                   batch_size: int = 16, pred_dir: str | Path | None = None, use_gt_labels: bool = False
                   ) -> Scores:
    """Devkit scoring over the strong records of ``split`` at original resolution.

    Writes palette PNG predictions into ``pred_dir`` when given (they can be re-scored with
    ``hetseg score``).
    """
    recs = [r for r in split.records if r.mask is not None]
    cm = ConfusionMatrix(num_classes)
    for start in range(0, len(recs), batch_size):
        chunk = recs[start:start + batch_size]
        imgs = [read_image(split.path(r.image)) for r in chunk]
        labels = [r.labels for r in chunk] if use_gt_labels else None
        preds = predict_images(net, imgs, size, threshold, batch_size, labels)
        for rec, pred in zip(chunk, preds):
            gt = read_mask(split.path(rec.mask), num_classes)
            cm.update(pred.label_map, gt)
            if pred_dir is not None:
                save_index_png(Path(pred_dir) / f"{rec.id}.png", pred.label_map)
    return cm.compute()

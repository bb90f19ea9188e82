"""Trivial baselines that every trained model must beat (for the demo and the README).

Both are scored with the VOC devkit metric (:mod:`hetseg.metrics`) on a split's masks at their
original resolution. Weak records (no mask) in the split are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from hetseg.data.io import read_image, read_mask
from hetseg.data.records import Split
from hetseg.data.scenes_stats import apply_threshold, best_global_threshold, threshold_histograms
from hetseg.errors import DataError
from hetseg.metrics import ConfusionMatrix, Scores


def _strong(split: Split) -> list:
    recs = [r for r in split.records if r.mask is not None]
    if not recs:
        raise DataError(split.root / f"{split.name}", "split has no records with masks",
                        "score baselines on a split with masks (e.g. splits/val.txt)")
    return recs


def _pairs(split: Split, with_images: bool) -> Iterator[tuple]:
    """(record, image (H, W, 3) uint8 or None, mask (H, W)) for every record with a mask."""
    for r in _strong(split):
        mask = read_mask(split.path(r.mask), split.num_classes)
        image = None
        if with_images:
            image = read_image(split.path(r.image))
            if image.shape[:2] != mask.shape:
                raise DataError(split.path(r.mask), f"mask size {mask.shape} differs from image {image.shape[:2]}",
                                "regenerate or fix the mask")
        yield r, image, mask


def all_background(split: Split, num_classes: int) -> Scores:
    """Predict background (0) everywhere. mIoU = bg-IoU / #classes present (the others score 0)."""
    cm = ConfusionMatrix(num_classes)
    for _, _, mask in _pairs(split, with_images=False):
        cm.update(np.zeros_like(mask), mask)
    return cm.compute()


def best_threshold(split: Split, num_classes: int) -> tuple[Scores, dict]:
    """The best single global threshold (oracle-chosen on this split; see scenes_stats), made a label map.

    Foreground pixels get the image's ground-truth label; when an image has several labels the
    smallest mask index is used for all its foreground. Both choices use ground truth (oracle
    threshold *and* oracle image labels), so this is generous to the baseline: an upper bound on
    what any global threshold can do. Returns (scores, info) where info holds the rule
    (channel, polarity, threshold) and its binary foreground IoU.
    """
    hist = np.zeros((2, 4, 256), np.int64)
    for _, image, mask in _pairs(split, with_images=True):
        hist += threshold_histograms(image, mask)
    info = best_global_threshold(hist)
    cm = ConfusionMatrix(num_classes)
    for r, image, mask in _pairs(split, with_images=True):
        pred = np.zeros(mask.shape, np.uint8)
        if r.labels:  # an image without object labels: the threshold's foreground has no class to take
            pred[apply_threshold(image, info)] = min(r.labels)
        cm.update(pred, mask)
    info = dict(info, labels="oracle: smallest ground-truth image label for all foreground pixels")
    return cm.compute(), info

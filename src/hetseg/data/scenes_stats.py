"""Dataset statistics and the global-threshold non-triviality measure (docs/DECISIONS.md, "fashion-scenes").

The measure answers "can one global intensity/colour threshold separate figure from ground?".
For each channel (grey, R, G, B) and both polarities it takes the threshold with the best
foreground IoU **chosen on the evaluated set itself** (an oracle choice, generous to the baseline).
Void pixels (255) are skipped, as in the metric. Shared by scenes.py (meta.json) and baselines.py.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

CHANNELS = ("grey", "R", "G", "B")


def channels(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (4, H, W) uint8: grey (Pillow's ITU-R 601 'L' rounding), R, G, B."""
    rgb = image.astype(np.uint32)
    # Same integer formula as PIL's RGB->L conversion, so "grey" means what Image.convert("L") gives.
    grey = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return np.stack([grey.astype(np.uint8), image[..., 0], image[..., 1], image[..., 2]])


def threshold_histograms(image: np.ndarray, mask: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """(2, 4, 256) int64 value histograms of background (0) and foreground (1..C-1) pixels per channel.

    ``image`` (H, W, 3) uint8, ``mask`` (H, W) integer; pixels equal to ``ignore_index`` are skipped.
    """
    ch = channels(image).reshape(4, -1)
    m = np.asarray(mask).reshape(-1)
    out = np.zeros((2, 4, 256), np.int64)
    for k, sel in enumerate((m == 0, (m != 0) & (m != ignore_index))):
        vals = ch[:, sel].astype(np.int64) + 256 * np.arange(4)[:, None]
        out[k] = np.bincount(vals.ravel(), minlength=4 * 256).reshape(4, 256)
    return out


def best_global_threshold(hist: np.ndarray) -> dict:
    """Best foreground IoU over channels, polarities and thresholds from (2, 4, 256) histograms.

    Returns ``{"fg_iou", "channel", "polarity", "threshold", "rule"}`` where ``rule`` reads e.g.
    ``"G > 87"``: the foreground is every pixel whose channel value satisfies it.
    """
    bg, fg = hist[0].astype(np.float64), hist[1].astype(np.float64)
    F, B = fg.sum(1, keepdims=True), bg.sum(1, keepdims=True)
    # cf[c, k] = #fg pixels with value < k, k = 0..256
    cf = np.concatenate([np.zeros((4, 1)), np.cumsum(fg, 1)], 1)
    cb = np.concatenate([np.zeros((4, 1)), np.cumsum(bg, 1)], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou_lt = cf / (F + cb)  # fg = value < k: TP = cf, TP + FP + FN = F + FP
        iou_ge = (F - cf) / (F + B - cb)  # fg = value >= k, i.e. value > k - 1
    iou_lt, iou_ge = np.nan_to_num(iou_lt), np.nan_to_num(iou_ge)
    best = None
    for pol, arr in ((">", iou_ge), ("<", iou_lt)):
        c, k = np.unravel_index(int(np.argmax(arr)), arr.shape)
        cand = (float(arr[c, k]), CHANNELS[c], pol, int(k - 1 if pol == ">" else k))
        if best is None or cand[0] > best[0]:
            best = cand
    iou, ch, pol, t = best
    return {"fg_iou": iou, "channel": ch, "polarity": pol, "threshold": t, "rule": f"{ch} {pol} {t}",
            "note": "oracle: threshold, channel and polarity chosen on this set to maximise foreground IoU"}


def apply_threshold(image: np.ndarray, info: dict) -> np.ndarray:
    """(H, W) bool foreground of ``image`` (H, W, 3) uint8 under a rule from best_global_threshold."""
    v = channels(image)[CHANNELS.index(info["channel"])]
    return v > info["threshold"] if info["polarity"] == ">" else v < info["threshold"]


def summarise(scenes: Iterable[dict], num_classes: int) -> dict:
    """Aggregate per-scene summaries into the meta.json statistics of one split.

    Each summary: ``labels`` (mask indices), ``objects`` (items placed), ``dropped``,
    ``pixels`` (num_classes,) non-void pixel counts per class, ``void`` (int).
    """
    n = 0
    obj_hist: dict[int, int] = {}
    cls_hist: dict[int, int] = {}
    img_counts = np.zeros(num_classes, np.int64)
    pix = np.zeros(num_classes, np.int64)
    void = dropped = 0
    for s in scenes:
        n += 1
        obj_hist[s["objects"]] = obj_hist.get(s["objects"], 0) + 1
        cls_hist[len(s["labels"])] = cls_hist.get(len(s["labels"]), 0) + 1
        img_counts[list(s["labels"])] += 1
        pix += np.asarray(s["pixels"], np.int64)
        void += int(s["void"])
        dropped += int(s["dropped"])
    total = int(pix.sum()) + void
    mean = lambda h: sum(k * v for k, v in h.items()) / max(n, 1)  # noqa: E731
    return {
        "images": n,
        "objects_per_image": {"mean": mean(obj_hist), "histogram": {str(k): obj_hist[k] for k in sorted(obj_hist)}},
        "classes_per_image": {"mean": mean(cls_hist), "histogram": {str(k): cls_hist[k] for k in sorted(cls_hist)}},
        "foreground_fraction": float(pix[1:].sum() / max(total, 1)),
        "void_fraction": float(void / max(total, 1)),
        "per_class_images": [int(v) for v in img_counts],
        "per_class_pixels": [int(v) for v in pix],
        "items_dropped_for_occlusion": dropped,
    }

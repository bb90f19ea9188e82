"""The PASCAL VOC devkit segmentation metric (VOCevalseg.m), docs/DECISIONS.md, "Metric".

One int64 confusion matrix accumulated over the **whole set** (rows = ground truth, columns =
prediction), pixels whose ground truth is 255 skipped, predictions at the original image size.
IoU_c = TP / (TP + FP + FN) = TP / (gt_c + pred_c - TP). Classes absent from both ground truth and
prediction (union 0) get NaN, are excluded from the mean and listed; a class predicted but absent
from the ground truth scores 0 and is included (devkit / mmseg / torchmetrics macro). Per-image
averaging and resized labels are different metrics and are not offered.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from hetseg.data.classes import IGNORE_INDEX
from hetseg.data.io import read_mask
from hetseg.errors import DataError
from hetseg.io_atomic import check_can_write, parse_json, write_text

if TYPE_CHECKING:  # torch is imported lazily: scoring saved masks needs numpy only
    import torch


def _as_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):  # torch.Tensor, without importing torch here
        a = a.detach().cpu().numpy()
    return np.asarray(a)


@dataclass
class Scores:
    """Metric values as fractions in [0, 1] (formatted as % for people).

    ``confusion`` (C, C) int64, rows = ground truth; ``iou`` (C,) float64 with NaN for ``absent``
    classes (in neither ground truth nor prediction); ``miou`` = mean IoU over the other classes;
    ``mean_acc`` = mean per-class recall over classes present in the ground truth; ``pixel_acc``.
    """

    confusion: np.ndarray
    iou: np.ndarray
    miou: float
    mean_acc: float
    pixel_acc: float
    absent: list[int]
    num_images: int

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict:
        """JSON-safe dict (NaN -> None); per-class values keyed by class name."""
        names = list(class_names) if class_names is not None else [str(i) for i in range(len(self.iou))]
        if len(names) != len(self.iou):
            raise ValueError(f"{len(names)} class names for {len(self.iou)} classes")
        num = lambda x: None if x is None or math.isnan(x) else float(x)  # noqa: E731
        return {"miou": num(self.miou), "mean_acc": num(self.mean_acc), "pixel_acc": num(self.pixel_acc),
                "iou": {n: num(v) for n, v in zip(names, self.iou)},
                "absent": [names[i] for i in self.absent], "num_images": self.num_images,
                "num_pixels": int(self.confusion.sum()), "confusion": self.confusion.tolist(),
                "protocol": "VOC devkit: one confusion matrix over the set, gt 255 skipped, "
                            "classes absent from gt and prediction excluded"}


class ConfusionMatrix:
    """Accumulates the VOC confusion matrix over images: ``update`` per image/batch, ``compute`` once."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), np.int64)
        self.num_images = 0

    def update(self, pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> None:
        """Add (H, W) or (N, H, W) integer label maps (numpy or torch); shapes must match."""
        p, g = _as_numpy(pred), _as_numpy(gt)
        if p.shape != g.shape:
            raise ValueError(f"prediction shape {p.shape} != ground-truth shape {g.shape}")
        if p.ndim not in (2, 3):
            raise ValueError(f"expected (H, W) or (N, H, W) label maps, got shape {p.shape}")
        for what, a in (("prediction", p), ("ground truth", g)):  # a float map was truncated (0.7 -> 0)
            if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_) and not np.array_equal(a, np.round(a)):
                raise ValueError(f"{what} must hold integer class indices, got {a.dtype} values such as "
                                 f"{a[a != np.round(a)].flat[0]}")
        C = self.num_classes
        if p.size and (p.min() < 0 or p.max() >= C):
            raise ValueError(f"prediction values must lie in [0, {C}), got min {p.min()} max {p.max()}")
        keep = g != self.ignore_index
        gk, pk = g[keep].astype(np.int64), p[keep].astype(np.int64)
        if gk.size and (gk.min() < 0 or gk.max() >= C):
            raise ValueError(f"ground-truth values must lie in [0, {C}) or be {self.ignore_index}, "
                             f"got min {gk.min()} max {gk.max()}")
        self.matrix += np.bincount(C * gk + pk, minlength=C * C).reshape(C, C)
        self.num_images += 1 if p.ndim == 2 else p.shape[0]

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another accumulator's counts (e.g. from another worker); returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class into {self.num_classes}-class matrix")
        self.matrix += other.matrix
        self.num_images += other.num_images
        return self

    def reset(self) -> None:
        """Forget every image added so far."""
        self.matrix[:] = 0
        self.num_images = 0

    def compute(self) -> Scores:
        """The scores of every image added since the last reset."""
        return scores_from_confusion(self.matrix, self.num_images)


def scores_from_confusion(conf: np.ndarray, num_images: int = 0) -> Scores:
    """Scores from a (C, C) confusion matrix (rows = ground truth, columns = prediction)."""
    conf = np.asarray(conf, np.int64)
    tp = np.diag(conf).astype(np.float64)
    gtj, resj = conf.sum(1).astype(np.float64), conf.sum(0).astype(np.float64)
    union = gtj + resj - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gtj > 0, tp / gtj, np.nan)
    absent = [int(i) for i in np.flatnonzero(union == 0)]
    valid = ~np.isnan(iou)
    total = conf.sum()
    return Scores(conf.copy(), iou, float(iou[valid].mean()) if valid.any() else float("nan"),
                  float(np.nanmean(acc)) if (gtj > 0).any() else float("nan"),
                  float(tp.sum() / total) if total else float("nan"), absent, num_images)


def score_dirs(pred_dir: str | Path, gt_dir: str | Path, num_classes: int,
               ids: Sequence[str] | None = None) -> Scores:
    """The devkit procedure on two PNG folders: for each ground-truth ``<id>.png`` (or each of
    ``ids``), ``pred_dir/<id>.png`` must exist, have exactly the ground truth's H×W and values
    <= C-1; ground truth must hold 0..C-1 and 255 (void, skipped). Any violation raises
    :class:`DataError` naming the file.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d in (pred_dir, gt_dir):
        if not d.is_dir():
            raise DataError(d, "directory not found", "check --pred / --gt")
    stems = list(ids) if ids is not None else sorted(p.stem for p in gt_dir.glob("*.png") if not p.is_dir())
    if not stems:
        raise DataError(gt_dir, "no ground-truth .png files", "point --gt at a SegmentationClass folder")
    cm = ConfusionMatrix(num_classes)
    for sid in stems:
        gt_path, pred_path = gt_dir / f"{sid}.png", pred_dir / f"{sid}.png"
        if not gt_path.is_file():
            raise DataError(gt_path, "a folder, not a ground-truth file" if gt_path.is_dir() else
                            "ground-truth file not found", "check the id list and --gt")
        if not pred_path.is_file():
            raise DataError(pred_path, f"prediction for '{sid}' not found",
                            "write one <id>.png per ground-truth image into --pred")
        # Both read as stored indices (palette never applied; colour PNGs refused by read_mask).
        gt, pred = read_mask(gt_path, num_classes), read_mask(pred_path)
        if pred.shape != gt.shape:
            raise DataError(pred_path, f"size {pred.shape[1]}x{pred.shape[0]} differs from ground truth "
                            f"{gt_path} {gt.shape[1]}x{gt.shape[0]}", "predict at the original image size")
        bad = np.unique(pred[(pred < 0) | (pred >= num_classes)])
        if bad.size:
            raise DataError(pred_path, f"values {bad[:8].tolist()} outside 0..{num_classes - 1}",
                            "write class indices (not colours); void 255 is not a valid prediction")
        cm.update(pred, gt)
    return cm.compute()


def format_table(scores: Scores, class_names: Sequence[str], row_name: str = "IoU (%)") -> str:
    """Per-class IoU in the layout of DecoupledNet's Table 2: one column per class, then mean."""
    names = list(class_names)
    if len(names) != len(scores.iou):
        raise ValueError(f"{len(names)} class names for {len(scores.iou)} classes")
    cells = ["-" if math.isnan(v) else f"{100 * v:.1f}" for v in scores.iou]
    cells.append("-" if math.isnan(scores.miou) else f"{100 * scores.miou:.1f}")
    heads = names + ["mean"]
    widths = [max(len(h), len(c)) for h, c in zip(heads, cells)]
    first = max(len(row_name), len("class"))
    lines = [" ".join([f"{'class':<{first}}"] + [f"{h:>{w}}" for h, w in zip(heads, widths)]),
             " ".join([f"{row_name:<{first}}"] + [f"{c:>{w}}" for c, w in zip(cells, widths)])]
    if scores.absent:
        lines.append("absent from ground truth and prediction (excluded from the mean): "
                     + ", ".join(names[i] for i in scores.absent))
    lines.append(f"{scores.num_images} images, {int(scores.confusion.sum())} scored pixels, "
                 f"pixel acc {100 * scores.pixel_acc:.1f}%, mean acc {100 * scores.mean_acc:.1f}%")
    return "\n".join(lines)


def first_repeated(names: Sequence[str]) -> str | None:
    """The first name that occurs a second time in ``names``, or None when all are distinct."""
    seen: set[str] = set()
    for n in names:
        if n in seen:
            return n
        seen.add(n)
    return None


def read_classes_file(path: str | Path) -> list[str]:
    """One class name per line (index = line number, 0 = background); blank lines not allowed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "a folder, not a classes file" if path.is_dir() else "classes file not found",
                        "give one class name per line, background first")
    try:
        names = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read it as UTF-8 text ({type(e).__name__})",
                        "one class name per line, background first, saved as UTF-8") from None
    while names and not names[-1].strip():
        names.pop()
    if not names or any(not n.strip() for n in names):
        raise DataError(path, "empty classes file or blank line inside", "one class name per line, background first")
    names = [n.strip() for n in names]
    if not 2 <= len(names) <= IGNORE_INDEX:  # as --num-classes: masks are 8-bit, 255 is void
        raise DataError(path, f"{len(names)} class name{'s' * (len(names) != 1)}, expected 2 to {IGNORE_INDEX} "
                        "(background and at least one class; mask value 255 is void)",
                        "one class name per line, background first")
    twice = first_repeated(names)
    if twice is not None:  # two classes of one name would merge in every per-class table
        raise DataError(path, f"class name '{twice}' on lines {names.index(twice) + 1} and "
                        f"{names.index(twice, names.index(twice) + 1) + 1}", "give every class its own name")
    return names


SCORE_FILE_MARK = "hetseg score"  # the "written_by" value: an existing --json with it may be replaced


def check_json_out(path: str | Path) -> None:
    """Refuse a ``--json`` path that a scores write would destroy or could not make, before any work.

    An existing file is replaced only if it is a scores file ``hetseg score`` wrote (its
    ``"written_by"`` marker): ``--json`` pointed at a run's model.json or a mask must not eat it.
    The nearest existing folder above it must be a writable folder (checked first so a full table is
    not printed before a late refusal); the atomic write still names any failure it meets.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(path, "--json is a folder", "give a file name, e.g. scores.json")
    if path.exists() or path.is_symlink():
        try:
            old = parse_json(path.read_text(encoding="utf-8"))
            # files from before the marker: score's own top-level keys (eval nests its scores)
            ours = old.get("written_by") == SCORE_FILE_MARK or {"pred", "gt", "classes", "protocol"} <= old.keys()
        except (OSError, ValueError, AttributeError):  # unreadable, not UTF-8/JSON, or not an object
            ours = False
        if not ours:
            raise DataError(path, "already exists and is not a scores file written by hetseg score, "
                            "nothing was overwritten", "choose another --json path, or move that file away")
    check_can_write(path, "--json")


def cli_score(pred: str | Path, gt: str | Path, num_classes: int | None = None,
              classes_file: str | Path | None = None, json_out: str | Path | None = None) -> int:
    """``hetseg score --pred DIR --gt DIR (--num-classes N | --classes FILE) [--json OUT]``.

    ``--json`` is written atomically and only over a scores file of an earlier ``hetseg score``.
    """
    if json_out is not None:
        check_json_out(json_out)
    names = read_classes_file(classes_file) if classes_file is not None else None
    if names is not None and num_classes is not None and num_classes != len(names):
        raise DataError(classes_file, f"has {len(names)} classes but --num-classes is {num_classes}",
                        "give one of them, or make them agree")
    if names is None:
        if num_classes is None:
            raise DataError(None, "the number of classes is unknown", "pass --num-classes N or --classes FILE")
        names = [str(i) for i in range(num_classes)]
    scores = score_dirs(pred, gt, len(names))
    print(format_table(scores, names))
    if json_out is not None:
        out = {"written_by": SCORE_FILE_MARK, "pred": str(pred), "gt": str(gt), "classes": names,
               **scores.to_dict(names)}
        write_text(json_out, json.dumps(out, indent=1) + "\n")  # atomic; makes missing parent folders
    return 0

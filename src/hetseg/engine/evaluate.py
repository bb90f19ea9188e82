"""One device-aware evaluation loop over ``Segmenter.predict``, for every method.

Each image is zero-padded to a square, resized to the model's input side, run through the model's
own ``predict`` on the model's device in channels_last (measured 1.40x faster at fp32, same maths),
and its per-pixel class scores are resized back to the padded square, cropped and argmax-ed
(docs/REFERENCE.md §1.10) -- in bands of rows, so memory stays bounded for any image size
(docs/GUARANTEES.md). Used by ``hetseg eval``, ``hetseg predict``, the benches and the demo.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hetseg.config import Config
from hetseg.data.io import check_pair, read_image, read_mask
from hetseg.data.records import Split
from hetseg.data.transforms import prepare, restore_argmax
from hetseg.errors import HetsegError
from hetseg.io_atomic import parse_json
from hetseg.metrics import ConfusionMatrix, Scores
from hetseg.palette import save_index_png


@dataclass
class Prediction:
    """One image's result at its original size."""

    label_map: np.ndarray            # (H, W) uint8 mask indices
    class_scores: np.ndarray | None  # (K,) image-level label scores (None for masks-only models)
    identified: list[int]            # mask indices of identified labels (SegOutput.identified + 1)


def model_device(net: nn.Module) -> torch.device:
    """Where ``net``'s parameters live (inputs are moved there)."""
    return next(net.parameters()).device


def _check_images(images: Sequence[np.ndarray]) -> None:
    if isinstance(images, np.ndarray) or not isinstance(images, Sequence) or not images:
        raise HetsegError(f"images: expected a non-empty list of (H, W, 3) uint8 arrays, got {type(images).__name__}; "
                          "fix: pass [array] for one image")
    for i, im in enumerate(images):
        if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            what = (f"{im.dtype} array of shape {im.shape}" if isinstance(im, np.ndarray) else type(im).__name__)
            raise HetsegError(f"images[{i}]: expected an (H, W, 3) uint8 RGB array, got a {what}; fix: e.g. "
                              "hetseg.data.io.read_image(path), or np.asarray(pil_image.convert('RGB'))")


@torch.no_grad()
def predict_images(net: nn.Module, images: Sequence[np.ndarray], threshold: float | None = None,
                   labels: Sequence[Sequence[int]] | None = None, predict_kwargs: dict | None = None
                   ) -> list[Prediction]:
    """Label maps for RGB uint8 images (each (H, W, 3), any size), in one ``predict`` call on the model's
    device. ``threshold``: None uses the model's own default (0.5; 0.6 for the transfer family), a trained
    run's is ``load_model(run)[2]["threshold"]`` (what ``hetseg predict`` and ``hetseg eval`` use).

    ``labels`` (mask indices 1..K per image) replaces the model's label identification (the "-GT"
    variants, or labels chosen by a shared classifier). Other inputs (float or grey images, a PIL image,
    one array not in a list) are refused in one line: a float image was silently cast to near-black.
    """
    _check_images(images)
    check_threshold(threshold)
    k = getattr(net, "num_classes", None)
    for i, ls in enumerate(labels or []):
        if isinstance(k, int) and any(not 1 <= int(c) <= k for c in ls):
            raise HetsegError(f"labels[{i}] = {list(ls)}: mask indices must be in 1..{k} (0 is background, never a "
                              "label); fix: pass each image's object classes as mask indices")
    device = model_device(net)  # eval mode: every model's predict switches to it (models/base.py)
    prepped = [prepare(im, net.input_size) for im in images]
    x = torch.stack([t for t, _ in prepped]).to(device).contiguous(memory_format=torch.channels_last)
    obj = None if labels is None else [[int(c) - 1 for c in ls] for ls in labels]
    thr = {} if threshold is None else {"threshold": threshold}
    out = net.predict(x, labels=obj, **thr, **(predict_kwargs or {}))
    results = []
    for i, (_, geom) in enumerate(prepped):
        results.append(Prediction(
            label_map=restore_argmax(out.probs[i].float(), geom),
            class_scores=None if out.class_scores is None else out.class_scores[i].float().cpu().numpy(),
            identified=[int(k) + 1 for k in out.identified[i]]))
    return results


def scored_records(split: Split) -> list:
    """The records an evaluation scores: all of ``split``, each with a mask. A split with none, or with
    some images unmasked, is refused in one line rather than scored on the rest without a word."""
    recs = [r for r in split.records if r.mask is not None]
    where = split.meta.get("split_file", split.name)  # its file where it has one (its name is a bare stem)
    if not recs:
        raise HetsegError(f"{where}: no image with a mask to score; fix: evaluate on a split with masks")
    if len(recs) < len(split.records):
        first = next(r for r in split.records if r.mask is None)
        raise HetsegError(f"{where}: {len(split.records) - len(recs)} of "
                          f"{len(split.records)} images have no mask (first: {first.image}), so the score would "
                          "leave them out; fix: restore their masks (a bare id's: SegmentationClass/<id>.png or "
                          "SegmentationClassAug/<id>.png) or list only images with masks")
    return recs


@torch.no_grad()
def evaluate_split(net: nn.Module, split: Split, num_classes: int, threshold: float | None = 0.5,
                   batch_size: int = 16, pred_dir: str | Path | None = None, use_gt_labels: bool = False,
                   predict_kwargs: dict | None = None) -> Scores:
    """Devkit scoring over the records of ``split`` at original resolution; every one needs a mask (a
    split with some images unmasked is refused rather than scored on the rest without a word).

    Labels: the model's own (default) or the ground truth (``use_gt_labels``).
    Writes palette PNG predictions into ``pred_dir`` when given (re-scorable by ``hetseg score``).
    """
    recs = scored_records(split)
    cm = ConfusionMatrix(num_classes)
    for start in range(0, len(recs), batch_size):
        chunk = recs[start:start + batch_size]
        imgs = [read_image(split.path(r.image)) for r in chunk]
        labels = [r.labels for r in chunk] if use_gt_labels else None
        for rec, img, pred in zip(chunk, imgs, predict_images(net, imgs, threshold, labels, predict_kwargs)):
            mask = read_mask(split.path(rec.mask), num_classes)
            check_pair(split.path(rec.image), split.path(rec.mask), img, mask)  # one line naming both files
            cm.update(pred.label_map, mask)
            if pred_dir is not None:
                save_index_png(Path(pred_dir) / f"{rec.id}.png", pred.label_map)
    return cm.compute()


__all__ = ["Prediction", "evaluate_split", "evaluate_run", "model_device", "predict_images", "scored_records"]


def check_threshold(threshold: float | None) -> None:
    """Refuse a ``--threshold`` outside [0, 1] (or not finite) in one line, before the model is loaded."""
    if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise HetsegError(f"--threshold {threshold}: must be a number in [0, 1]; fix: e.g. --threshold 0.5")


def check_label_options(net: nn.Module, method: str, threshold: float | None, use_gt_labels: bool = False) -> None:
    """Refuse ``--threshold`` / ``--gt-labels`` for a model that identifies no image labels (a masks-only
    :class:`hetseg.models.base.MasksOnlySegmenter` ignores both), instead of changing nothing silently."""
    from hetseg.models.base import MasksOnlySegmenter

    if isinstance(net, MasksOnlySegmenter) and (use_gt_labels or threshold is not None):
        flag = "--gt-labels" if use_gt_labels else f"--threshold {threshold}"
        raise HetsegError(f"{flag}: a {method} run identifies no image labels (trained on masks alone), so it "
                          "would change nothing; fix: drop it")


def label_threshold(net: nn.Module, info: dict, cfg: Config, threshold: float | None) -> float | None:
    """The label threshold ``eval`` and ``predict`` use and record: ``threshold`` when given, else the run's
    (:func:`~hetseg.engine.checkpoint.model_threshold`); None for a masks-only model, which reads none
    (its scores.json / eval json said 0.5, a threshold that changed nothing)."""
    from hetseg.engine.checkpoint import model_threshold
    from hetseg.models.base import MasksOnlySegmenter

    if isinstance(net, MasksOnlySegmenter):
        return None
    return model_threshold(info, cfg) if threshold is None else threshold


def check_same_split(results: Path, checksum: str, split: str) -> None:
    """Refuse to replace ``results`` (an eval_<tag>.json) written for a split of other content: the tag
    is the split file's stem, so another file named val.txt would replace the run's val results, which
    benches reuse as the cell's score. Re-evaluating the same split (same checksum) replaces them."""
    try:
        old = parse_json(results.read_text(encoding="utf-8")).get("split_checksum")
    except (OSError, ValueError, AttributeError):
        return  # no results there, or none this code wrote
    if isinstance(old, str) and old != checksum:
        raise HetsegError(f"{split}: its images differ from those {results} was scored on (split checksum "
                          f"{checksum[:12]} vs {old[:12]}); fix: rename the split file, or move {results.name} "
                          "away if the data set was regenerated")


def evaluate_run(run: str | Path, split: str | None = None, threshold: float | None = None, use_gt_labels: bool = False,
                 batch_size: int = 16, root: str | Path | None = None, device: str | None = None,
                 predict_kwargs: dict | None = None, suffix: str = "") -> tuple[Scores, dict]:
    """Score any method's trained run on a split; writes predictions and eval_<split>.json/.md.

    ``split`` is weak | strong | val, a split of the run's dataset, or a split file of another
    dataset, read against its own root (``root`` overrides; see ``engine.context.load_split``);
    None: the run's ``eval.split`` (default val).
    The threshold defaults to the one the run's method recorded in model.json. ``suffix`` tells
    apart evaluations of one run with other ``predict_kwargs`` (eval_<split><suffix>.json).
    """
    from hetseg.engine.checkpoint import load_model, run_dir
    from hetseg.engine.context import class_names, command_line, load_split
    from hetseg.io_atomic import replaced_folder, write_json, write_text
    from hetseg.metrics import format_table, read_classes_file

    check_threshold(threshold)
    net, cfg, info = load_model(run, device or ("cuda" if torch.cuda.is_available() else "cpu"))
    check_label_options(net, cfg.model.name, threshold, use_gt_labels)
    run = run_dir(run)
    split = cfg.eval.split if split is None else split
    data_root = Path(cfg.data.root)
    if root is None and not data_root.exists() and not Path(split).is_file():
        # read_split's fix ("build fashion-scenes there") is the training one; eval cannot set data.root
        where = "" if data_root.is_absolute() else f" (relative to the folder the run was trained in, not {Path.cwd()})"
        fix = "give --split the split file of the data set (and --root DIR)"  # an absolute root: no folder helps
        raise HetsegError(f"{run / 'model.json'}: the run's data.root {cfg.data.root} is not there{where}; fix: "
                          + (fix if data_root.is_absolute() else f"run eval from that folder, or {fix}"))
    names = info.get("class_names") or class_names(cfg)
    sp = load_split(cfg, split, root)
    # Another dataset's split is named after its root too, so its val.txt never replaces the run's eval_val.json.
    foreign = Path(sp.root).resolve() != Path(cfg.data.root).resolve()
    theirs = Path(sp.root) / "classes.txt"
    other = read_classes_file(theirs) if foreign and theirs.is_file() else list(names)
    if other != list(names):
        raise HetsegError(f"{theirs}: {len(other)} classes ({', '.join(other[:3])}, ...) where the run predicts "
                          f"{len(names)} ({', '.join(names[:3])}, ...), so mask indices would mean other classes; "
                          "fix: evaluate on a data set with the run's classes")
    tag = (f"{Path(sp.root).name}_" if foreign else "") + Path(split).stem + ("_gt" if use_gt_labels else "") + suffix
    check_same_split(run / f"eval_{tag}.json", sp.checksum(), split)
    thr = label_threshold(net, info, cfg, threshold)
    with replaced_folder(run / f"predictions_{tag}") as pred_dir:  # no stale PNG of an earlier evaluation
        scores = evaluate_split(net, sp, cfg.data.num_classes, thr, batch_size, pred_dir=pred_dir,
                                use_gt_labels=use_gt_labels, predict_kwargs=predict_kwargs)
    report = {
        "run": str(run), "split": sp.name, "split_root": str(sp.root), "split_checksum": sp.checksum(),
        "images": len(sp.strong()), "scale": cfg.model.scale, "seed": cfg.seed, "threshold": thr,
        "gt_labels": use_gt_labels, "model": cfg.model.name, "predict_kwargs": predict_kwargs or {},
        "evaluation": "single scale, whole image, original resolution",
        "scores": scores.to_dict(names), "command": command_line(),
        "train": info.get("stages", {}), "train_splits": info.get("splits", {}),
    }
    write_json(run / f"eval_{tag}.json", report)
    report["results"] = str(run / f"eval_{tag}.json")  # where it went (not stored in the file itself)
    write_text(run / f"eval_{tag}.md",
               f"# {cfg.model.name} on {sp.name} ({len(sp.strong())} images, checksum {sp.checksum()[:12]})\n\n"
               f"scale {cfg.model.scale}, seed {cfg.seed}, threshold {'none (masks only)' if thr is None else thr}, "
               f"command `{report['command']}`\n\n"
               + format_table(scores, names) + "\n")
    return scores, report

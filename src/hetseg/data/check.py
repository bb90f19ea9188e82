"""``hetseg data check``: decode every image and mask a run would read, before the run.

A stage reads the headers of its images before its first step and decodes the masks of the splits it trains
on (:func:`hetseg.data.datasets.check_strong_masks`), but a file that is corrupt past its header -- a JPEG
cut short by a failed copy, say -- is found only when a batch first draws it: mid-stage, hours into a
paper-scale run (docs/GUARANTEES.md, "Bad input"). This check decodes every file of the given splits in
full, with the same readers and rules as training, and reports every bad file at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from hetseg.data.datasets import check_mask_labels
from hetseg.data.io import check_sizes, image_size, read_image, read_mask
from hetseg.data.records import Record, Split, labels_from_mask
from hetseg.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class CheckReport:
    """What :func:`check_splits` read: files decoded, the problems found (first found first) and the splits
    with the labels their masks give (where a split reads its labels from its masks)."""

    images: int = 0
    masks: int = 0
    problems: list[DataError] = field(default_factory=list)
    splits: list[Split] = field(default_factory=list)


def _check_record(split: Split, num_classes: int, rec: Record, image_done: bool, from_mask: bool,
                  check_labels: bool) -> tuple[DataError | None, tuple[int, ...]]:
    """Decode one record's image (its header only when another record decoded it) and mask: (the first
    problem or None, the record's labels: its mask's classes where ``from_mask``)."""
    labels = rec.labels
    try:
        ip = split.path(rec.image)
        hw = image_size(ip) if image_done else read_image(ip).shape[:2]
        if rec.mask is None:
            return None, labels
        mask_path = split.path(rec.mask)
        mask = read_mask(mask_path, num_classes)
        check_sizes(ip, mask_path, hw, mask.shape[:2])
        if from_mask:
            labels = labels_from_mask(mask)
        elif check_labels:
            check_mask_labels(rec, mask_path, mask)
    except DataError as e:
        return e, labels
    return None, labels


def check_splits(splits: Sequence[Split], num_classes: int, workers: int = 2,
                 label_checked: Sequence[bool] | None = None) -> CheckReport:
    """Decode every image and mask of ``splits`` once (a file several splits list is read once, by its
    resolved path; a record's mask is checked against its image's size) on ``workers`` threads (Pillow decodes
    without the GIL). ``label_checked[i]``: split i's masks must hold exactly its labels (as training checks
    the splits it trains masks on, ``Method.mask_splits``; default: none). Splits read with
    ``mask_labels=False`` (:func:`hetseg.data.records.read_split`) get their labels from the masks decoded here.
    Returns the counts, every problem in split order and the splits with their labels; raises nothing for
    bad files."""
    report, images, masks = CheckReport(), set(), set()
    done: dict[tuple, tuple[int, ...]] = {}  # (image, mask, labels given or "mask", checked) -> labels
    label_checked = list(label_checked or [False] * len(splits))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for split, check_labels in zip(splits, label_checked):
            from_mask = set(split.meta.get("labels_from_mask", ()))
            real = [(os.path.realpath(split.path(r.image)), r.mask and os.path.realpath(split.path(r.mask)))
                    for r in split.records]
            key = [(im, m, "mask" if r.id in from_mask else r.labels, check_labels and m is not None)
                   for (im, m), r in zip(real, split.records)]
            todo = [i for i, (im, m) in enumerate(real) if key[i] not in done and (m is not None or im not in images)]
            recs, image_done = [split.records[i] for i in todo], [real[i][0] in images for i in todo]
            images.update(real[i][0] for i in todo)
            results = pool.map(partial(_check_record, split, num_classes), recs, image_done,
                               [r.id in from_mask for r in recs], [check_labels] * len(recs))
            for i, rec, again, (problem, labels) in zip(todo, recs, image_done, results):
                report.images += not again
                if real[i][1] is not None and real[i][1] not in masks:
                    masks.add(real[i][1])
                    report.masks += 1
                done[key[i]] = labels  # a later record of the same files is not read again
                if problem is not None:
                    log.info("%s", problem)  # hetseg -v lists every bad file; the error line names the first
                    report.problems.append(problem)
            if from_mask:  # the labels read from the masks, in the split's records
                split = Split(split.root, [dataclasses.replace(r, labels=done.get(key[i], r.labels)) for i, r in
                                           enumerate(split.records)], split.name, split.num_classes,
                              {k: v for k, v in split.meta.items() if k != "labels_from_mask"})
            report.splits.append(split)
    return report


def raise_first(report: CheckReport) -> None:
    """Refuse in one line naming the first bad file and how many others fail (``hetseg -v`` lists them)."""
    if not report.problems:
        return
    first, n = report.problems[0], len(report.problems)
    more = f" (1 of {n} bad files; hetseg -v data check lists each)" if n > 1 else ""
    raise DataError(first.path, first.problem + more, first.fix)

"""torch Datasets over a :class:`~hetseg.data.records.Split` for each training stage.

Every random choice is drawn from a generator seeded by (seed, epoch, index), so a run is
reproducible for a seed whatever the number of DataLoader workers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hetseg.data.crops import (binary_target, crop_pad, enclosing_box, foreground_box, label_subsets,
                               proposals, warp)
from hetseg.data.io import check_pair, check_pair_files, read_image, read_mask
from hetseg.data.records import Record, Split
from hetseg.data.transforms import prepare, random_crop_flip, to_tensor
from hetseg.errors import DataError


def multi_hot(labels: tuple[int, ...], num_classes: int) -> torch.Tensor:
    """Mask indices in [1, C) -> (C-1,) float multi-hot over object classes (index k = class k+1)."""
    v = torch.zeros(num_classes - 1)
    for c in labels:
        v[c - 1] = 1.0
    return v


CACHE_BYTES = 2 << 30  # decoded strong images one process keeps (each DataLoader worker has its own)
_CHECKED: set[tuple[str, str, int]] = set()  # (root, split checksum, C) whose masks passed, in this process


def check_strong_masks(split: Split, num_classes: int) -> None:
    """Decode every mask of ``split`` once and refuse, in one line naming the file: a mask of another size
    than its image, a colour mask or a value outside [0, C) and 255 (:func:`read_mask`), or image labels
    (``labels.json`` or ``data.labels``) other than the classes the mask holds. Those labels choose
    DecoupledNet's label subsets, crops and binary targets (docs/REFERENCE.md §1.9), so a disagreement
    trained a decoder on wrong targets without a word; and a bad mask stopped training only when a crop
    first sampled it, mid-stage, or never. Each (root, split, C) is checked once per process."""
    key = (str(split.root), split.checksum(), num_classes)
    if key in _CHECKED:
        return
    for r in split.records:
        if r.mask is None:
            continue
        image, mask_path = split.path(r.image), split.path(r.mask)
        check_pair_files(image, mask_path)
        check_mask_labels(r, mask_path, read_mask(mask_path, num_classes))
    _CHECKED.add(key)


def check_mask_labels(rec: Record, mask_path: str | Path, mask: np.ndarray) -> None:
    """Refuse a record whose image labels are not the classes its (H, W) ``mask`` holds (255 = void)."""
    held = sorted(int(c) for c in np.unique(mask) if 0 < c < 255)
    if held != sorted(rec.labels):
        raise DataError(mask_path, f"holds classes {held}, but the labels file gives image '{rec.id}' "
                                   f"{sorted(rec.labels)}", "make the labels file agree with the mask, or drop "
                                   "the image from it (a masked image's labels are then read from its mask)")


class SeededDataset(Dataset):
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self, index: int) -> np.random.Generator:
        """The generator of sample ``index`` in the current epoch: a function of (seed, epoch, index) only."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def image_files(self) -> list[Path]:
        """Every image file the dataset reads (the engine checks their headers before a stage's first
        step: ``engine.train.run_stage``); default: none (items not read from image files)."""
        return []


class ImageLabelDataset(SeededDataset):
    """Stage cls: (image (3,S,S), multi-hot (C-1,)). Random crop + flip when ``train``."""

    def __init__(self, split: Split, num_classes: int, size: int, train: bool = True, seed: int = 0) -> None:
        super().__init__(seed)
        self.split, self.num_classes, self.size, self.train = split, num_classes, size, train

    def __len__(self) -> int:
        return len(self.split)

    def image_files(self) -> list[Path]:
        """Every record's image."""
        return [self.split.path(r.image) for r in self.split.records]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rec = self.split.records[i]
        img = read_image(self.split.path(rec.image))
        if not self.train:  # validation sees exactly what inference sees (pad to square, resize)
            return prepare(img, self.size)[0], multi_hot(rec.labels, self.num_classes)
        img = random_crop_flip(img, self.size, self.rng(i))
        return to_tensor(img), multi_hot(rec.labels, self.num_classes)


def crop_pairs(records: list[Record], target: str = "binary") -> list[tuple[Record, tuple[int, ...]]]:
    """The (strong record, label subset) pairs :class:`CropDataset` crops: every non-empty subset of an
    image's labels (``target="binary"``, DecoupledNet Sec. 5) or its whole label set ("multiclass");
    records without a mask or labels give none. ``len(pairs) * crops_per_subset`` is the stage's size."""
    subsets_of = (lambda r: label_subsets(r.labels)) if target == "binary" else (lambda r: [r.labels])
    return [(r, s) for r in records if r.mask is not None for s in subsets_of(r) if s]


class CropDataset(SeededDataset):
    """Stage seg (and DeconvNet): combinatorial crops of the strong set.

    Item i -> (pair i // N_p, crop i % N_p) where a pair is (strong image, non-empty label subset).
    ``target="binary"`` gives DecoupledNet's (image, subset multi-hot (C-1,), binary mask (S,S));
    ``target="multiclass"`` gives the full class mask of the crop (DeconvNet), subset all labels.
    Decoded strong images are cached in memory up to :data:`CACHE_BYTES` per process (a 5/10/25 split
    whole; at VOC Full or COCO scale every worker would otherwise hold tens of GB). Every mask is
    checked when the dataset is built (:func:`check_strong_masks`: size, values, labels; a
    :class:`~hetseg.errors.DataError` raised in the main process rather than inside a DataLoader
    worker), and the sizes again after decoding.
    """

    def __init__(self, split: Split, num_classes: int, size: int, crops_per_subset: int = 200,
                 full_image_prob: float = 0.1, max_scale: float = 1.6, use_proposals: bool = False,
                 target: str = "binary", seed: int = 0) -> None:
        super().__init__(seed)
        strong = [r for r in split.records if r.mask is not None]
        if not strong:
            raise DataError(split.meta.get("split_file", split.name), "the split has no strong (masked) images",
                            "train the segmentation stage on a split whose lines name a mask")
        check_strong_masks(split, num_classes)
        self.split, self.num_classes, self.size = split, num_classes, size
        self.n_p, self.full_image_prob, self.max_scale = crops_per_subset, full_image_prob, max_scale
        if target not in ("binary", "multiclass"):  # anything else used to act as "multiclass"
            raise ValueError(f"target={target!r}: expected 'binary' or 'multiclass'")
        self.target = target
        self.pairs = crop_pairs(strong, target)
        self.use_proposals = use_proposals
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._cache_bytes = 0
        self._fg: dict[tuple[str, tuple[int, ...]], tuple[int, int, int, int]] = {}

    def __len__(self) -> int:
        return len(self.pairs) * self.n_p

    def image_files(self) -> list[Path]:
        """The images of the strong records that give pairs."""
        return list(dict.fromkeys(self.split.path(rec.image) for rec, _ in self.pairs))

    def _load(self, rec: Record) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if rec.id not in self._cache:
            img = read_image(self.split.path(rec.image))
            mask = read_mask(self.split.path(rec.mask), self.num_classes)
            check_pair(self.split.path(rec.image), self.split.path(rec.mask), img, mask)
            boxes = proposals(img) if self.use_proposals else np.zeros((0, 4), np.int64)
            size = img.nbytes + mask.nbytes + boxes.nbytes
            if self._cache_bytes + size > CACHE_BYTES:  # VOC Full or COCO: read again next time, memory bounded
                return img, mask, boxes
            self._cache[rec.id] = (img, mask, boxes)
            self._cache_bytes += size
        return self._cache[rec.id]

    def box(self, rec: Record, subset: tuple[int, ...], rng: np.random.Generator) -> tuple[int, int, int, int]:
        """The crop box (x0, y0, x1, y1) in ``rec``'s image pixels for the class ``subset`` (DecoupledNet Sec. 5):
        the whole image with probability ``full_image_prob``; else, half the time, a proposal that contains the
        subset's foreground box (when one does); else a random box enclosing it, up to ``max_scale``."""
        img, mask, props = self._load(rec)
        h, w = mask.shape
        if rng.random() < self.full_image_prob:
            return 0, 0, w, h
        key = (rec.id, subset)
        if key not in self._fg:  # the same for all N_p crops of a pair: compute once
            self._fg[key] = foreground_box(mask, subset)
        fg = self._fg[key]
        if len(props) and rng.random() < 0.5:
            ok = props[(props[:, 0] <= fg[0]) & (props[:, 1] <= fg[1]) & (props[:, 2] >= fg[2]) & (props[:, 3] >= fg[3])]
            if len(ok):
                return tuple(int(v) for v in ok[rng.integers(len(ok))])
        return enclosing_box(fg, w, h, rng, self.max_scale)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rec, subset = self.pairs[i // self.n_p]
        rng = self.rng(i)
        img, mask, _ = self._load(rec)
        box = self.box(rec, subset, rng)
        cimg, cmask = crop_pad(img, mask, box)
        cimg, cmask = warp(cimg, cmask, self.size, flip=bool(rng.random() < 0.5))
        tgt = binary_target(cmask, subset) if self.target == "binary" else cmask
        return to_tensor(cimg), multi_hot(subset, self.num_classes), torch.from_numpy(tgt.astype(np.int64))

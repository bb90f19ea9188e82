"""A mixed dataset: images with a mask and images with tags only (DIS, docs/DIS.md).

DIS trains from labelmaps (the strong split) and from tags (the weak split, the paper's "IDW"
images). Weak rows never get a fake mask: their target is all void (255) and ``has_mask`` is
False, so the method decides what supervises them (DIS: its inferred, tag-constrained labelmap).

With few masks (5 per class: 34 of 10,034 images) a plain shuffle would put a masked image in one
batch of ten, so item i pairs a strong row with a weak row, like TransferNet's domain pairs: a
batch of B items is B masked rows + B tag-only rows. The strong row is i mod |S|; the weak row is
drawn through a per-epoch permutation. Without weak rows (every image has a mask) both halves are
strong rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hetseg.data.crops import augment
from hetseg.data.datasets import SeededDataset, multi_hot
from hetseg.data.io import read_image, read_mask
from hetseg.data.records import Split
from hetseg.data.transforms import to_tensor
from hetseg.errors import DataError


class MixedDataset(SeededDataset):
    """Item i: (image_s, target_s, tags_s, has_mask_s, image_w, target_w, tags_w, has_mask_w) with
    images (3, S, S), targets (S, S) int64 mask indices (all 255 for tag-only rows), tags (K,) float
    multi-hot, has_mask bool. Weak records whose image is also strong are left out of the weak half."""

    def __init__(self, strong: Split, weak: Split | None, num_classes: int, size: int, seed: int = 0) -> None:
        super().__init__(seed)
        self.size, self.num_classes = size, num_classes
        self.strong = [(strong, r) for r in strong.records if r.mask is not None]
        if not self.strong:
            raise DataError(strong.root / "splits" / f"{strong.name}.txt", "the strong split has no masked image",
                            "give data.strong_split a split whose lines name masks")
        seen = {strong.path(r.image) for _, r in self.strong}
        self.weak = [] if weak is None else [(weak, r) for r in weak.records if weak.path(r.image) not in seen]
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, 1]).permutation(len(self.weak) or len(self.strong))

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self._perm = self._permutation(epoch)

    def __len__(self) -> int:
        return max(len(self.strong), len(self.weak))

    def image_files(self) -> list[Path]:
        """The masked half's images, then the tag-only half's."""
        return [split.path(r.image) for split, r in (*self.strong, *self.weak)]

    def _row(self, split: Split, rec, has_mask: bool, rng: np.random.Generator):
        img = read_image(split.path(rec.image))
        mask = read_mask(split.path(rec.mask), self.num_classes) if has_mask else np.full(img.shape[:2], 255, np.uint8)
        img, mask = augment(img, mask, self.size, rng)
        return (to_tensor(img), torch.from_numpy(mask.astype(np.int64)), multi_hot(rec.labels, self.num_classes),
                torch.tensor(has_mask))

    def __getitem__(self, i: int):
        rng = self.rng(i)
        s = self._row(*self.strong[i % len(self.strong)], True, rng)
        j = int(self._perm[i % len(self._perm)])
        w = self._row(*self.weak[j], False, rng) if self.weak else self._row(*self.strong[j], True, rng)
        return (*s, *w)

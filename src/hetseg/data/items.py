"""fashion-items: single-item images for CPU-scale backbone pretraining (our stand-in for ImageNet).

Why: every method of DecoupledNet's Table 1 starts from an ImageNet-trained VGG-16 (paper Sec. 6.1):
ImageNet is single-object classification over categories that include VOC's. At CPU scale there is
no such network, and a masks-only DeconvNet trained from scratch never leaves "all background"
within the benchmark's budget (measured, docs/BENCHMARKS.md). The same role is played here by
single-label classification of *one* Fashion-MNIST **train** item on the fashion-scenes clutter:
object-centric, the same categories, no masks, and no val item (val scenes use the t10k items).

Images are rendered on the fly by the scene renderer with ``count=1``; item ``i`` with the RNG
seeded by (seed, epoch, i), so a run is reproducible whatever the number of DataLoader workers.
The last ``holdout`` items (default 2,000) are kept for the pretraining's own validation accuracy.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from hetseg.data.datasets import SeededDataset
from hetseg.data.scenes_render import render_scene
from hetseg.data.transforms import to_tensor


class ItemDataset(SeededDataset):
    """(image (3, S, S) normalised, class index in 0..9) for one Fashion-MNIST item on clutter.

    Args:
        items: (N, 28, 28) uint8 item pixels; labels: (N,) ints in 0..9 (Fashion-MNIST order).
        size: rendered image side (the model scale's input size).
        train: a fresh rendering every epoch when True; a fixed one per item when False.
    """

    def __init__(self, items: np.ndarray, labels: np.ndarray, size: int, train: bool = True, seed: int = 0) -> None:
        super().__init__(seed)
        if len(items) != len(labels):
            raise ValueError(f"{len(items)} items but {len(labels)} labels")
        self.items, self.labels, self.size, self.train = items, np.asarray(labels, np.int64), size, train

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self.rng(i) if self.train else np.random.default_rng([self.seed, 1 << 20, i])
        scene = render_scene(rng, self.items[i:i + 1], self.labels[i:i + 1], self.size, count=1)
        return to_tensor(scene.image), torch.tensor(self.labels[i])


def item_splits(fashion_mnist_dir: str | None, size: int, seed: int, holdout: int = 2000
                ) -> tuple[ItemDataset, ItemDataset]:
    """(train, held-out) ItemDatasets over the Fashion-MNIST *train* items (never the t10k ones)."""
    from hetseg.data.scenes import load_fashion_mnist

    x, y, _, _ = load_fashion_mnist(fashion_mnist_dir)
    if not 0 < holdout < len(x):
        raise ValueError(f"holdout must be in (0, {len(x)}), got {holdout}")
    return (ItemDataset(x[:-holdout], y[:-holdout], size, True, seed),
            ItemDataset(x[-holdout:], y[-holdout:], size, False, seed))


def items_checksum(ds: ItemDataset) -> str:
    """sha256 of an ItemDataset's source items and labels (uint8 pixels, then int64 labels): which
    Fashion-MNIST items a backbone's accuracy was measured on (benchmarks/results/backbone.md)."""
    h = hashlib.sha256(np.ascontiguousarray(ds.items, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(ds.labels, dtype=np.int64).tobytes())
    return h.hexdigest()

"""TransferNet's data (docs/REFERENCE.md §3.8): the augmenting loader, one row per (image, label), and the
pairing of a whole target sub-batch with a whole source sub-batch (see :mod:`hetseg.methods.transfernet`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hetseg.config import Config
from hetseg.data.crops import augment, binary_target
from hetseg.data.datasets import SeededDataset
from hetseg.data.io import read_image, read_mask
from hetseg.data.records import Record, Split, build_root_fix, write_split
from hetseg.data.transforms import to_tensor
from hetseg.engine.context import load_config_split, load_split
from hetseg.errors import HetsegError
from hetseg.io_atomic import parse_json


class LabelRows(SeededDataset):
    """One row per (image, label) of a split with the label in ``classes`` (inferred: one line
    per image and class, one-hot, docs/REFERENCE.md §3.8). Items: (image (3,S,S), object index) and, with ``masks``, the
    binary target (S,S) int64 of that label (other classes background, void 255)."""

    def __init__(self, split: Split, classes: Sequence[int], size: int, masks: bool, seed: int = 0) -> None:
        super().__init__(seed)
        allowed = set(classes)
        self.split, self.size, self.masks = split, size, masks
        self.rows = [(r, c) for r in split.records for c in r.labels if c in allowed]
        where, side = split.meta.get("split_file", split.name), "source" if masks else "target"
        if masks and any(r.mask is None for r, _ in self.rows):
            bad = next(r for r, _ in self.rows if r.mask is None)
            raise HetsegError(f"{where}: image {bad.id} has a source-class label but no mask, and the source split "
                              "trains the decoder on masks; fix: give transfer.source_split a split whose lines "
                              "name a mask (the source classes' masks)")
        if not self.rows:
            raise HetsegError(f"{where}: no image with a label among the {side} classes {sorted(allowed)}; fix: "
                              f"check that transfer.{side}_split is the {side} split (not swapped with the other) "
                              f"and transfer.{side}_classes")

    def __len__(self) -> int:
        return len(self.rows)

    def image_files(self) -> list[Path]:
        """The images of the split's rows, each once."""
        return list(dict.fromkeys(self.split.path(r.image) for r, _ in self.rows))

    def __getitem__(self, i: int):
        rec, c = self.rows[i]
        img = read_image(self.split.path(rec.image))
        mask = read_mask(self.split.path(rec.mask)) if self.masks else np.zeros(img.shape[:2], np.uint8)
        img, mask = augment(img, mask, self.size, self.rng(i))
        if not self.masks:
            return to_tensor(img), c - 1
        return to_tensor(img), c - 1, torch.from_numpy(binary_target(mask, (c,)).astype(np.int64))


class DomainPairs(Dataset):
    """Item i = (target row, source row): a batch of B items is a whole target sub-batch plus a
    whole source sub-batch. The source row is drawn through a per-epoch permutation."""

    def __init__(self, target: LabelRows, source: LabelRows, seed: int = 0) -> None:
        self.target, self.source, self.seed, self.epoch = target, source, seed, 0
        self._perm = np.random.default_rng([seed, 0]).permutation(len(source))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.target.set_epoch(epoch)
        self.source.set_epoch(epoch)
        self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.source))

    def __len__(self) -> int:
        return max(len(self.target), len(self.source))

    def image_files(self) -> list[Path]:
        """The target domain's images, then the source domain's."""
        return [*self.target.image_files(), *self.source.image_files()]

    def __getitem__(self, i: int):
        return (*self.target[i % len(self.target)], *self.source[int(self._perm[i % len(self.source)])])


def transfer_classes(cfg: Config) -> tuple[list[int], list[int]]:
    """(source, target) class lists (mask indices): ``transfer.source_classes`` / ``target_classes``,
    or when empty the dataset's own, from ``<root>/meta.json`` (fashion-scenes writes them)."""
    t = cfg.transfer
    if t.source_classes and t.target_classes:
        return _checked(cfg, list(t.source_classes), list(t.target_classes), "transfer.")
    meta = Path(cfg.data.root) / "meta.json"
    try:
        m = parse_json(meta.read_text(encoding="utf-8"))
        source, target = list(t.source_classes or m["source_classes"]), list(t.target_classes or m["target_classes"])
    except (OSError, ValueError, KeyError, TypeError):
        if not Path(cfg.data.root).is_dir():
            raise HetsegError(f"{cfg.data.root}: dataset root not found; fix: {build_root_fix(cfg.data.root)}") from None
        raise HetsegError(f"{meta}: no source_classes/target_classes for the transfer split; fix: set "
                          "transfer.source_classes=[...] and transfer.target_classes=[...] (mask indices)") from None
    return _checked(cfg, source, target, "transfer." if t.source_classes or t.target_classes else f"{meta}: ")


def _checked(cfg: Config, source: list, target: list, where: str) -> tuple[list[int], list[int]]:
    """The two lists, refused in one line unless each is a non-empty list of distinct object-class mask
    indices (1 .. data.num_classes - 1) and no class is in both: a class past the last one failed as an
    IndexError when the model was built, after the shared classifier had trained."""
    k = cfg.data.num_classes
    for name, classes in (("source_classes", source), ("target_classes", target)):
        bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, int) or not 0 < c < k]
        if not classes or bad or len(set(classes)) != len(classes):
            problem = (f"{bad[0]!r} is not an object class of data.num_classes={k}" if bad
                       else "empty" if not classes else "a class is listed twice")
            raise HetsegError(f"{where}{name}: {problem}; fix: list distinct mask indices 1..{k - 1} "
                              "(0 is the background)")
    both = sorted(set(source) & set(target))
    if both:
        raise HetsegError(f"{where}target_classes: class {both[0]} is also a source class; fix: give each class "
                          "to one side (source classes have masks, target classes only image labels)")
    return source, target


def domain_rows(cfg: Config, which: str, size: int) -> LabelRows:
    """The source rows (with masks) or the target rows (labels only) of a transfer run, at the
    model's input side ``size``."""
    source, target = transfer_classes(cfg)
    if which == "source":
        return LabelRows(load_config_split(cfg, "transfer.source_split"), source, size, True, cfg.seed)
    return LabelRows(load_config_split(cfg, "transfer.target_split"), target, size, False, cfg.seed)


def both_domains_records(cfg: Config) -> list[Record]:
    """The shared classifier's images: source-train then target-train, each image once (first seen kept)."""
    records: list[Record] = []
    seen: set[str] = set()
    for side in ("source", "target"):
        for r in load_config_split(cfg, f"transfer.{side}_split").records:
            if r.image not in seen:
                seen.add(r.image)
                records.append(Record(r.id, r.image, r.labels, r.mask))
    return records


def both_domains_split(cfg: Config, path: str | Path) -> Split:
    """Write (atomically) and read the shared classifier's weak split: source-train + target-train
    images; ``path`` is absolute, its lines are relative to ``cfg.data.root``. A masked image keeps its
    mask in the file, so its labels are read as the source split read them (from the mask where
    labels.json does not list it: a labels-only line refused an own data set whose labels.json lists
    only the unmasked images); the classifier sees ``.weak()`` of it, the masks dropped."""
    write_split(path, both_domains_records(cfg))
    cfg2 = Config.from_dict({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "weak_split": str(Path(path))}})
    return load_split(cfg2, "weak")

"""``hetseg data splits``: write a k-strong-per-class split file and print its checksum."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from hetseg.data.records import per_class_subset, read_split, write_split
from hetseg.errors import DataError
from hetseg.io_atomic import write_text


def cli_splits(split: str, per_class: int, seed: int, root: str | None = None, num_classes: int | None = None,
               out: str | None = None) -> int:
    """``hetseg data splits``: k strong images per class of ``split``; writes the split and its .sha256."""
    src = read_split(split, root, num_classes=num_classes)
    n = num_classes or (max((c for r in src.records for c in r.labels), default=0) + 1)
    if not any(r.strong for r in src.records):
        raise DataError(split, "no line names a mask, so there is nothing to choose strong images from",
                        "pass a split of image + mask lines (e.g. train_full or train_aug)")
    chosen = per_class_subset(src.records, per_class, n, seed)
    dest = Path(out) if out else src.root / "splits" / f"strong_{per_class}_s{seed}.txt"
    checksum = write_split(dest, chosen)
    counts = Counter(c for r in chosen for c in r.labels)
    print(f"{dest}: {len(chosen)} images, {per_class} per class (seed {seed}), sha256 {checksum}")
    print("images per class: " + ", ".join(f"{c}:{counts[c]}" for c in range(1, n)))
    write_text(dest.with_suffix(".sha256"), f"{checksum}  {dest.name}\n")
    return 0

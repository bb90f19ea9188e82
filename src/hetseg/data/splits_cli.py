"""``hetseg data splits``: write a k-strong-per-class split file and print its checksum."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from hetseg.data.records import per_class_subset, read_split, split_checksum, split_text, write_split
from hetseg.data.staging import refuse_other_file
from hetseg.errors import DataError
from hetseg.io_atomic import write_text


def cli_splits(split: str, per_class: int, seed: int, root: str | None = None, num_classes: int | None = None,
               out: str | None = None) -> int:
    """``hetseg data splits``: k strong images per class of ``split``; writes the split and its .sha256.

    Both files are written atomically and never over a file holding something else."""
    src = read_split(split, root, num_classes=num_classes)
    seen = max((c for r in src.records for c in r.labels), default=0) + 1
    named = _class_names(src.root, seen)
    # Without --num-classes the root's classes.txt says how many there are, so a class no image of the
    # split has is reported short (it was left out of the counts); the draw is the same either way,
    # since classes are visited in index order and the absent ones come last.
    n = num_classes or (len(named) if named else seen)
    if not any(r.strong for r in src.records):
        raise DataError(split, "no line names a mask, so there is nothing to choose strong images from",
                        "pass a split of image + mask lines (e.g. train_full or train_aug)")
    chosen = per_class_subset(src.records, per_class, n, seed)
    dest = Path(out) if out else src.root / "splits" / f"strong_{per_class}_s{seed}.txt"
    sidecar = dest.with_suffix(".sha256")
    if sidecar == dest:
        raise DataError(dest, "a .sha256 name is where the split's checksum goes", "name the split file .txt")
    checksum = split_checksum(chosen)  # what write_split returns: every chosen record has its mask
    sidecar_text = f"{checksum}  {dest.name}\n"
    refuse_other_file(dest, split_text(chosen), "split file")
    refuse_other_file(sidecar, sidecar_text, "its checksum file")
    write_split(dest, chosen)
    counts = Counter(c for r in chosen for c in r.labels)
    # a class with fewer masked images than asked gets all it has: say so instead of "K per class"
    short = [c for c in range(1, n) if counts[c] < per_class]
    drawn = (f"at least {per_class} per class" if not short else
             f"{per_class} per class where a class has that many; class{'es' * (len(short) > 1)} "
             f"{', '.join(map(str, short))} {'have' if len(short) > 1 else 'has'} fewer masked images, all taken")
    print(f"{dest}: {len(chosen)} images, {drawn} (seed {seed}), sha256 {checksum}")
    names = named if named and len(named) >= n else None  # _class_names(src.root, n), read once above
    print("images per class: " + ", ".join(f"{c}{f' {names[c]}' if names else ''}:{counts[c]}" for c in range(1, n)))
    write_text(sidecar, sidecar_text)
    return 0


def _class_names(root: Path, n: int) -> list[str] | None:
    """The names of ``ROOT/classes.txt`` when it names at least the ``n`` classes counted, else None (then the
    counts are by index alone): printing names beside indices spares a lookup, never a refusal."""
    from hetseg.metrics import read_classes_file

    path = root / "classes.txt"
    try:
        names = read_classes_file(path) if path.is_file() else None
    except DataError:
        return None
    return names if names and len(names) >= n else None

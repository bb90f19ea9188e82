"""Records and split files: the heterogeneous-annotation core.

One record = an image, its image-level label set and an *optional* mask (+ optional boxes).
A weak record has no mask, ever: no fake masks for weak images.

Split file (the hetseg format, UniMatch-compatible): one line per image, paths relative to a root::

    JPEGImages/a.jpg SegmentationClass/a.png     # strong: image + mask
    JPEGImages/b.jpg                             # weak: labels come from <root>/labels.json

Also read: bare-id lists (VOC ImageSets, irn), DeepLab pairs with a leading ``/`` (psa), pair lists
without a trailing newline (UniMatch). Labels are *mask indices* in [1, C) (0 = background).
"""

from __future__ import annotations

import hashlib
import json
import pickle  # only for its exception type; nothing is unpickled here except via np.load
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from hetseg.errors import DataError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Record:
    """One image. ``image``/``mask`` are root-relative POSIX paths; ``labels`` sorted mask indices."""

    id: str
    image: str
    labels: tuple[int, ...]
    mask: str | None = None
    boxes: tuple[tuple[int, float, float, float, float], ...] = ()  # (class, x1, y1, x2, y2)

    @property
    def strong(self) -> bool:
        return self.mask is not None


@dataclass
class Split:
    """An ordered list of records under one root; ``name`` is the split file's stem."""

    root: Path
    records: list[Record]
    name: str = "split"
    num_classes: int | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def checksum(self) -> str:
        """sha256 of the canonical split text (paths + labels), stable across machines."""
        return split_checksum(self.records)

    def strong(self) -> Split:
        return Split(self.root, [r for r in self.records if r.strong], self.name + "+strong", self.num_classes)

    def weak(self) -> Split:
        """Every record as a weak one (the mask dropped): what a classifier may see."""
        recs = [Record(r.id, r.image, r.labels) for r in self.records]
        return Split(self.root, recs, self.name + "+weak", self.num_classes)

    def path(self, rel: str) -> Path:
        return self.root / rel


def canonical_line(rec: Record) -> str:
    return " ".join([rec.image, rec.mask or "-", ",".join(map(str, rec.labels))])


def split_checksum(records: Iterable[Record]) -> str:
    h = hashlib.sha256()
    for rec in records:
        h.update(canonical_line(rec).encode() + b"\n")
    return h.hexdigest()


def _safe_rel(token: str, root: Path, split_path: Path, lineno: int) -> str:
    """Normalise a path token to root-relative POSIX; refuse anything that escapes the root."""
    rel = token.lstrip("/")  # DeepLab lists write "/JPEGImages/x.jpg" meaning root-relative
    p = PurePosixPath(rel)
    if rel == "" or p.is_absolute() or ".." in p.parts:
        raise DataError(split_path, f"line {lineno}: path '{token}' escapes the dataset root {root}",
                        "use paths relative to the root, without '..'")
    return str(p)


def record_id(image_rel: str) -> str:
    return PurePosixPath(image_rel).stem


def parse_split_lines(text: str, split_path: Path, root: Path) -> list[tuple[str, str | None]]:
    """Parse any supported list format into (image_rel, mask_rel | None) pairs.

    Bare ids (no '/' and no image extension) map to ``JPEGImages/<id>.jpg`` and, if it exists,
    ``SegmentationClass/<id>.png`` (VOC layout).
    """
    out: list[tuple[str, str | None]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        toks = line.split()
        if len(toks) > 2:
            raise DataError(split_path, f"line {lineno}: expected 'image [mask]' or a bare id, got {len(toks)} fields",
                            "write one image (and optionally its mask) per line")
        first = toks[0]
        if len(toks) == 1 and "/" not in first and not first.lower().endswith(IMAGE_EXTS):
            img = f"JPEGImages/{first}.jpg"
            mask = f"SegmentationClass/{first}.png"
            out.append((img, mask if (root / mask).exists() else None))
            continue
        img = _safe_rel(first, root, split_path, lineno)
        mask = _safe_rel(toks[1], root, split_path, lineno) if len(toks) == 2 else None
        out.append((img, mask))
    return out


def read_split(path: str | Path, root: str | Path | None = None, labels: Mapping[str, Sequence[int]] | None = None,
               num_classes: int | None = None, check_files: bool = True) -> Split:
    """Read a split file into a :class:`Split`.

    Labels come from ``labels`` (id -> mask indices), else ``<root>/labels.json``, else (strong
    records only) from the mask's values. ``root`` defaults to the split file's dataset root: the
    parent of a ``splits/`` or ``ImageSets/...`` folder, else the file's folder. Missing files and
    paths escaping the root raise :class:`DataError` naming the split file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "split file not found", "check the path or run 'hetseg data splits'")
    root = Path(root) if root is not None else default_root(path)
    pairs = parse_split_lines(path.read_text(), path, root)
    if labels is None and (root / "labels.json").is_file():
        labels = load_labels_json(root / "labels.json")
    records = []
    for img, mask in pairs:
        rid = record_id(img)
        if check_files:
            for rel in (img, mask):
                if rel is not None and not (root / rel).is_file():
                    raise DataError(path, f"'{rel}' (id {rid}) does not exist under {root}",
                                    "fix the split file or pass the right --root")
        if labels is not None and rid in labels:
            labs = normalise_labels(labels[rid], num_classes, path, rid)
        elif mask is not None:
            from hetseg.data.io import read_mask  # local import: io pulls in Pillow decoding helpers
            labs = labels_from_mask(read_mask(root / mask, num_classes))
        else:
            raise DataError(path, f"weak image '{img}' has no image-level labels",
                            f"add '{rid}' to {root / 'labels.json'} or give a labels file")
        records.append(Record(rid, img, labs, mask))
    return Split(root, records, path.stem, num_classes)


def default_root(split_path: Path) -> Path:
    # absolute(), not resolve(): a dataset reached through a symlink keeps the path the user gave
    parts = split_path.absolute().parts
    for marker in ("splits", "ImageSets"):
        if marker in parts:
            i = len(parts) - 1 - parts[::-1].index(marker)
            return Path(*parts[:i])
    return split_path.absolute().parent


def write_split(path: str | Path, records: Sequence[Record], weak: bool = False) -> str:
    """Write records in the hetseg format (mask column dropped if ``weak``); return the checksum."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r.image if (weak or r.mask is None) else f"{r.image} {r.mask}" for r in records]
    path.write_text("\n".join(lines) + "\n")
    recs = [Record(r.id, r.image, r.labels, None if weak else r.mask) for r in records]
    return split_checksum(recs)


def normalise_labels(labs: Iterable[int], num_classes: int | None, src: Path | str, rid: str) -> tuple[int, ...]:
    out = tuple(sorted({int(x) for x in labs}))
    bad = [x for x in out if x < 1 or (num_classes is not None and x >= num_classes)]
    if bad:
        hi = f"[1, {num_classes})" if num_classes else ">= 1"
        raise DataError(src, f"image '{rid}' has labels {bad} outside {hi}",
                        "labels are mask indices; 0 is background and is never an image label")
    return out


def labels_from_mask(mask: np.ndarray) -> tuple[int, ...]:
    """Object classes present in an (H, W) mask: values other than 0 (background) and 255 (void)."""
    vals = np.unique(mask)
    return tuple(int(v) for v in vals if v not in (0, 255))


def load_labels_json(path: str | Path) -> dict[str, tuple[int, ...]]:
    """``{"id": [mask indices], ...}`` -> dict."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(path, f"cannot read labels JSON ({e})", "write {\"<id>\": [class indices]}") from None
    return {str(k): tuple(int(x) for x in v) for k, v in data.items()}


def save_labels_json(path: str | Path, labels: Mapping[str, Sequence[int]]) -> None:
    Path(path).write_text(json.dumps({k: list(map(int, v)) for k, v in labels.items()}, indent=0) + "\n")


def load_cls_labels_npy(path: str | Path) -> dict[str, tuple[int, ...]]:
    """irn/psa ``cls_labels.npy``: a pickled dict id -> 20-d multi-hot (background excluded).

    Keys are ``numpy.int32`` (irn, 2007000032 -> "2007_000032") or ``str`` (psa). Returned labels are
    mask indices (vector index + 1). The pickle is only loaded because the file format *is* a
    pickle; only call this on files you obtained yourself.
    """
    try:
        obj = np.load(path, allow_pickle=True).item()
    except (OSError, ValueError, EOFError, TypeError, AttributeError, pickle.UnpicklingError) as e:
        # missing file, not .npy / not a pickle, or not a 0-d object array
        raise DataError(path, f"cannot read cls_labels.npy ({type(e).__name__}: {e})",
                        "pass irn/psa's voc12/cls_labels.npy (a pickled dict id -> 20-d multi-hot)") from None
    if not isinstance(obj, dict):
        raise DataError(path, f"holds a {type(obj).__name__}, not a dict", "pass irn/psa's voc12/cls_labels.npy")
    out: dict[str, tuple[int, ...]] = {}
    for k, vec in obj.items():
        if isinstance(k, str):
            rid = k
        else:
            k = int(k)
            rid = f"{k // 1000000}_{k % 1000000:06d}"
        out[rid] = tuple(int(i) + 1 for i in np.flatnonzero(np.asarray(vec) > 0))
    return out


def per_class_subset(records: Sequence[Record], k: int, num_classes: int, seed: int) -> list[Record]:
    """DESIGN.md §6 "k strong per class": visit classes in index order; for each, draw (seeded)
    images containing it until k selected images contain it. An image counts for every class it has.

    Only records with masks are eligible. Returns the selection in the input order. If a class has
    fewer than k eligible images, all of them are taken.
    """
    rng = random.Random(seed)
    pool = [r for r in records if r.mask is not None]
    chosen: set[str] = set()
    for c in range(1, num_classes):
        have = sum(1 for r in pool if r.id in chosen and c in r.labels)
        cands = [r.id for r in pool if c in r.labels and r.id not in chosen]
        rng.shuffle(cands)
        for rid in cands:
            if have >= k:
                break
            chosen.add(rid)
            have += 1
    return [r for r in pool if r.id in chosen]

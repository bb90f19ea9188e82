"""Records and split files: the heterogeneous-annotation core.

One record = an image, its image-level label set and an *optional* mask (+ optional boxes).
A weak record has no mask, ever: no fake masks for weak images.

Split file (the hetseg format, UniMatch-compatible): one line per image, paths relative to a root::

    JPEGImages/a.jpg SegmentationClass/a.png     # strong: image + mask
    JPEGImages/b.jpg                             # weak: labels come from <root>/labels.json

Also read: bare-id lists (VOC ImageSets, irn), DeepLab pairs with a leading ``/`` (psa), pair lists
without a trailing newline (UniMatch). Labels are *mask indices* in [1, C) (0 = background).

Refused with a one-line :class:`~hetseg.errors.DataError` naming the split file and line: a file
that is not UTF-8 (a leading BOM is allowed) or lists no image, a line with more than two fields,
a path that is absolute, has ``..`` or leads outside the root through a file symlink (rule:
:mod:`hetseg.data.paths`), an image listed twice, and two lines whose images share an id (the file
stem: predictions and labels are keyed by it).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from hetseg.data.labels import (labels_from_mask, load_cls_labels_npy, load_labels_json, normalise_labels,
                                save_labels_json)
from hetseg.data.paths import RootGuard, link_problem, unsafe_rel
from hetseg.errors import DataError, path_problem
from hetseg.io_atomic import write_text

# Label readers live in hetseg.data.labels; re-exported here, where callers have always found them.
__all__ = ["IMAGE_EXTS", "Record", "Split", "canonical_line", "default_root", "labels_from_mask",
           "load_cls_labels_npy", "load_labels_json", "normalise_labels", "parse_split_lines",
           "per_class_subset", "read_list_text", "read_split", "record_id", "save_labels_json",
           "split_checksum", "write_split"]

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
        """Whether the record has a pixel mask."""
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
        """Only the records with a mask (same root; meta keeps only the split file it came from)."""
        return Split(self.root, [r for r in self.records if r.strong], self.name + "+strong", self.num_classes,
                     self._origin())

    def weak(self) -> Split:
        """Every record as a weak one (the mask dropped): what a classifier may see."""
        recs = [Record(r.id, r.image, r.labels) for r in self.records]
        return Split(self.root, recs, self.name + "+weak", self.num_classes, self._origin())

    def _origin(self) -> dict:
        # a derived split keeps the file it came from (for error messages), not e.g. its checksum
        return {k: v for k, v in self.meta.items() if k == "split_file"}

    def path(self, rel: str) -> Path:
        """``root / rel``: where a record's image or mask lives."""
        return self.root / rel


def canonical_line(rec: Record) -> str:
    """The record as the checksum reads it: ``image mask|- l1,l2`` (labels in stored order)."""
    return " ".join([rec.image, rec.mask or "-", ",".join(map(str, rec.labels))])


def split_checksum(records: Iterable[Record]) -> str:
    """sha256 hex of the records' canonical lines, in order: the split checksum every result names."""
    h = hashlib.sha256()
    for rec in records:
        h.update(canonical_line(rec).encode() + b"\n")
    return h.hexdigest()


def _safe_rel(token: str, root: Path, split_path: Path, lineno: int) -> str:
    """Normalise a path token to root-relative POSIX; refuse anything that escapes the root."""
    rel = token.lstrip("/")  # DeepLab lists write "/JPEGImages/x.jpg" meaning root-relative
    if unsafe_rel(rel):
        raise DataError(split_path, f"line {lineno}: path '{token}' escapes the dataset root {root}",
                        "use paths relative to the root, without '..'")
    return str(PurePosixPath(rel))


def record_id(image_rel: str) -> str:
    """A record's id: the image file's stem (``JPEGImages/2007_000032.jpg`` -> ``2007_000032``)."""
    return PurePosixPath(image_rel).stem


def build_root_fix(root: str | Path) -> str:
    """The fix for a dataset root that does not exist (the default one is generated fashion-scenes)."""
    return f"set data.root to your data set, or build fashion-scenes there (hetseg data scenes --out {root})"


def read_list_text(path: str | Path, what: str = "split file") -> str:
    """The text of a list file, decoded as UTF-8 (a BOM is dropped); anything else raises DataError."""
    p = Path(path)
    if not p.is_file():
        # A whole dataset root that is missing needs building, not a split file (the default is fashion-scenes).
        root = next((a for a in p.parents if a.name in ("splits", "ImageSets")), None)
        missing_root = root is not None and not root.parent.is_dir()
        fix = build_root_fix(root.parent) if missing_root else "check the path or run 'hetseg data splits'"
        raise DataError(p, path_problem(p, what), fix)
    data = p.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(p, f"line {line}: byte 0x{data[e.start]:02x} (offset {e.start}) is not UTF-8 text; is this "
                           f"really a {what}?", "save the list as UTF-8 text, one image per line") from None


# Where a bare id's mask is looked up, in order (VOC layout; SegmentationClassAug: hetseg data voc-aug).
BARE_ID_MASK_DIRS = ("SegmentationClass", "SegmentationClassAug")


def _parse(text: str, split_path: Path, root: Path) -> list[tuple[int, str, str | None]]:
    """(line number, image_rel, mask_rel | None) per record line; see :func:`parse_split_lines`."""
    out: list[tuple[int, str, str | None]] = []
    first_line: dict[str, tuple[int, str]] = {}  # id -> (line, image) of its first occurrence
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
            img = _safe_rel(f"JPEGImages/{first}.jpg", root, split_path, lineno)
            # VOC's own masks first, then the SBD-augmented ones `hetseg data voc-aug` writes (train_aug's SBD
            # ids have no SegmentationClass PNG); an id with neither is a weak image.
            mask = next((m for d in BARE_ID_MASK_DIRS if (root / (m := f"{d}/{first}.png")).exists()), None)
        else:
            img = _safe_rel(first, root, split_path, lineno)
            mask = _safe_rel(toks[1], root, split_path, lineno) if len(toks) == 2 else None
        rid = record_id(img)
        if rid in first_line:
            prev, prev_img = first_line[rid]
            if prev_img == img:
                raise DataError(split_path, f"line {lineno}: id '{rid}' is listed again (first on line {prev})",
                                "list each image once")
            raise DataError(split_path, f"line {lineno}: '{img}' has the id '{rid}' of '{prev_img}' on line {prev} "
                            "(ids are file stems)", "rename one of the two files: outputs are keyed by id")
        first_line[rid] = (lineno, img)
        out.append((lineno, img, mask))
    if not out:
        raise DataError(split_path, "lists no images (empty, or only blank and comment lines)",
                        "write one image per line, or pass the split file you meant")
    return out


def parse_split_lines(text: str, split_path: Path, root: Path) -> list[tuple[str, str | None]]:
    """Parse any supported list format into (image_rel, mask_rel | None) pairs.

    Bare ids (no '/' and no image extension) map to ``JPEGImages/<id>.jpg`` and the first of
    ``SegmentationClass/<id>.png`` and ``SegmentationClassAug/<id>.png`` that exists (VOC layout;
    :data:`BARE_ID_MASK_DIRS`), else no mask (a weak image). Raises :class:`DataError` for more than two
    fields, paths escaping the root, repeated or colliding ids and a list without any image.
    """
    return [(img, mask) for _, img, mask in _parse(text, split_path, root)]


def _check_path(guard: RootGuard, root: Path, rel: str, split_path: Path, lineno: int, rid: str,
                check_files: bool) -> None:
    bad = link_problem(guard, rel, f"the dataset root {root}")
    if bad is not None:
        raise DataError(split_path, f"line {lineno}: '{rel}' {bad[0]}", bad[1])
    p = root / rel
    if check_files and not p.is_file():
        what = f"under {root} is a directory, not a file" if p.is_dir() else f"does not exist under {root}"
        raise DataError(split_path, f"line {lineno}: '{rel}' (id {rid}) {what}",
                        "fix the split file, or read it against its dataset root (data.root; --root of "
                        "'hetseg eval' and 'hetseg data splits')")


def read_split(path: str | Path, root: str | Path | None = None, labels: Mapping[str, Sequence[int]] | None = None,
               num_classes: int | None = None, check_files: bool = True, mask_labels: bool = True) -> Split:
    """Read a split file into a :class:`Split`.

    Labels come from ``labels`` (id -> mask indices), else ``<root>/labels.json``, else (strong
    records only) from the mask's values. ``root`` defaults to the split file's dataset root: the
    parent of a ``splits/`` or ``ImageSets/...`` folder, else the file's folder. Every path must
    stay inside the root, symlinks included (:mod:`hetseg.data.paths`: folder links are followed,
    a file link must not lead outside). Missing files (``check_files``), escaping paths and bad
    lines raise :class:`DataError` naming the split file and line. ``mask_labels`` False leaves the masks
    undecoded: labels that would come from a mask are left empty and the record ids listed in
    ``meta["labels_from_mask"]`` (``hetseg data check`` decodes them itself, every bad mask at once).
    """
    path = Path(path)
    text = read_list_text(path)
    root = Path(root) if root is not None else default_root(path)
    entries = _parse(text, path, root)
    if labels is None and (root / "labels.json").is_file():
        labels = load_labels_json(root / "labels.json")  # range vs num_classes: per record, below
    records, from_mask = [], []
    guard = RootGuard(root)
    for lineno, img, mask in entries:
        rid = record_id(img)
        for rel in (img, mask):
            if rel is not None:
                _check_path(guard, root, rel, path, lineno, rid, check_files)
        if labels is not None and rid in labels:
            labs = normalise_labels(labels[rid], num_classes, path, rid)
        elif mask is not None and not mask_labels:
            labs = ()
            from_mask.append(rid)
        elif mask is not None:
            from hetseg.data.io import read_mask  # local import: io pulls in Pillow decoding helpers
            labs = labels_from_mask(read_mask(root / mask, num_classes))
        else:
            raise DataError(path, f"line {lineno}: weak image '{img}' has no image-level labels",
                            f"add '{rid}' to {root / 'labels.json'} or give a labels file")
        records.append(Record(rid, img, labs, mask))
    meta = {"split_file": str(path), **({"labels_from_mask": from_mask} if from_mask else {})}
    return Split(root, records, path.stem, num_classes, meta=meta)


def default_root(split_path: Path) -> Path:
    """The dataset root a split file belongs to: the folder holding the path's last ``splits`` folder (else
    its last ``ImageSets`` folder, as in VOC), else the split file's own folder."""
    # absolute(), not resolve(): a dataset reached through a symlink keeps the path the user gave
    parts = split_path.absolute().parts
    for marker in ("splits", "ImageSets"):
        if marker in parts:
            i = len(parts) - 1 - parts[::-1].index(marker)
            return Path(*parts[:i])
    return split_path.absolute().parent


def split_text(records: Sequence[Record], weak: bool = False) -> str:
    """The text :func:`write_split` writes: one ``image [mask]`` line per record."""
    return "\n".join(r.image if (weak or r.mask is None) else f"{r.image} {r.mask}" for r in records) + "\n"


def write_split(path: str | Path, records: Sequence[Record], weak: bool = False) -> str:
    """Write records in the hetseg format (mask column dropped if ``weak``); return the checksum."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, split_text(records, weak))  # atomic: runs trust a split by its checksum
    recs = [Record(r.id, r.image, r.labels, None if weak else r.mask) for r in records]
    return split_checksum(recs)


def per_class_subset(records: Sequence[Record], k: int, num_classes: int, seed: int) -> list[Record]:
    """docs/DECISIONS.md "k strong per class": visit classes in index order; for each, draw (seeded)
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

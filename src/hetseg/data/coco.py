"""MS-COCO: category remaps (as data) and conversion to the VOC layout.

Reading and decoding live in :mod:`hetseg.data.coco_json` (re-exported here). The conversion
(:func:`build_coco_split`) is all or nothing and refuses, with one line naming the JSON and the
image: a ``file_name`` that is absolute, has ``..`` or leads out of ``--images`` through a file
symlink; two images with one basename (or one stem: outputs are keyed by it); an output image
that already exists and is another image. Annotations whose segmentation covers no pixel
(e.g. every polygon part has fewer than 3 points) are dropped, with their label, and counted
(see :func:`coco_image_target`).
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from hetseg.data.classes import IGNORE_INDEX, VOC_CLASSES
from hetseg.data.coco_json import decode_segmentation, load_coco, read_panoptic_png
from hetseg.data.paths import RootGuard, link_problem, unsafe_rel
from hetseg.data.records import Record, Split, load_labels_json, save_labels_json, split_text, write_split
from hetseg.data.staging import refuse_other_file, staged
from hetseg.errors import DataError
from hetseg.io_atomic import parse_json
from hetseg.palette import save_index_png

__all__ = ["REMAP_DIR", "Remap", "build_coco_split", "coco_image_target", "coco_semantic_mask",
           "decode_segmentation", "load_coco", "load_remap", "read_panoptic_png"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Remap:
    """A category remap as data: COCO category id -> mask index.

    ``drop_if_any``: categories whose presence excludes an image (TransferNet drops every COCO image
    containing a VOC class). ``names``: mask index -> name of the mapped classes.
    ``voc_equivalents``: COCO id -> VOC mask index for the categories that are VOC classes.
    """

    mapping: dict[int, int]
    drop_if_any: set[int] = field(default_factory=set)
    names: dict[int, str] = field(default_factory=dict)
    name: str = "remap"
    voc_equivalents: dict[int, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Mask indices run 0..max(mapping); indices below the first mapped one stay reserved."""
        return max(self.mapping.values(), default=0) + 1

    def voc(self) -> Remap:
        """The second mapping: the 20 VOC-equivalent COCO categories -> VOC indices 1..20, no drops."""
        return Remap(dict(self.voc_equivalents), set(), {i: VOC_CLASSES[i] for i in self.voc_equivalents.values()},
                     self.name + ":voc")


REMAP_DIR = "remaps"


def load_remap(name_or_path: str | Path) -> Remap:
    """Load a remap JSON: a shipped name (``"coco60_transfernet"``) or a file path.

    Format: ``{"name", "mapping": {"<coco id>": index}, "drop_if_any": [ids], "names": {"<index>":
    name}, "voc_equivalents": {"<coco id>": voc index}}``; only ``mapping`` is required. Indices must
    lie in 1..254 and a category cannot be both mapped and dropped.
    """
    p = Path(name_or_path)
    if p.is_file() and p.suffix != ".json":  # it exists: "no such remap" would be false
        raise DataError(p, "a remap file must be JSON named *.json", "rename it to .json, or give a shipped remap name")
    if p.suffix != ".json" or not p.is_file():
        shipped = resources.files("hetseg.data") / REMAP_DIR / f"{name_or_path}.json"
        if not shipped.is_file():
            avail = sorted(f.name[:-5] for f in (resources.files("hetseg.data") / REMAP_DIR).iterdir()
                           if f.name.endswith(".json"))
            raise DataError(name_or_path, "no such remap file or shipped remap", f"use a JSON path or one of {avail}")
        text, src = shipped.read_text(), str(name_or_path)
    else:
        try:
            text, src = p.read_bytes().decode("utf-8-sig"), str(p)
        except UnicodeDecodeError as e:
            raise DataError(p, f"not UTF-8 text (offset {e.start})", "save the remap JSON as UTF-8") from None
    try:
        d = parse_json(text)
        mapping = {int(k): int(v) for k, v in d["mapping"].items()}
        drop = {int(x) for x in d.get("drop_if_any", [])}
        names = {int(k): str(v) for k, v in d.get("names", {}).items()}
        voc_eq = {int(k): int(v) for k, v in d.get("voc_equivalents", {}).items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise DataError(src, f"not a remap JSON ({type(e).__name__}: {e})",
                        'write {"mapping": {"<coco category id>": <mask index>}, "drop_if_any": [...]}') from None
    bad = sorted(v for v in mapping.values() if not 1 <= v < IGNORE_INDEX)
    clash = sorted(set(mapping) & drop)
    if bad or clash:
        raise DataError(src, f"mask indices {bad} outside 1..254" if bad else f"categories {clash} are both mapped "
                        "and dropped", "0 is background, 255 void; map each category or drop it, not both")
    return Remap(mapping, drop, names, str(d.get("name", Path(src).stem)), voc_eq)


def coco_image_target(coco: COCO, img_id: int, remap: Remap, ann_json: str | Path = "annotations"
                      ) -> tuple[np.ndarray, tuple[int, ...], list[int]]:
    """One image's (H, W) uint8 mask of remapped indices, its image-level labels, and the ids of
    the annotations dropped because their segmentation decodes to no pixel (``ann_json`` names the
    file in an error about one of them).

    Painting: annotations by *decreasing* decoded pixel count (ties by annotation id), so smaller
    objects end up on top of the larger ones they overlap. Mapped categories paint their index;
    crowd regions paint 255 (void: a crowd box mixes instances and background); categories in
    ``remap.drop_if_any`` (when the image was kept anyway) paint 255, since they are known objects
    outside the label space; any other unmapped category paints 0 (background).

    Labels (the rule): a mapped class is a label iff at least one pixel of the mask carries its
    index, or one of its *crowd* annotations covers at least one pixel (void in the mask, but the
    objects are in the image). So an annotation that covers no pixel (every polygon part under 3
    points, a zero-area polygon, an empty RLE) is dropped and never leaves a label behind whose
    class has no pixel.
    """
    info = coco.imgs[img_id]
    h, w = int(info["height"]), int(info["width"])
    decoded, empty = [], []
    for ann in coco.imgToAnns.get(img_id, []):
        m = decode_segmentation(ann.get("segmentation", []), h, w, source=f"{ann_json} ann {ann.get('id')} (image {img_id})")
        n = int(m.sum())
        if n == 0:
            empty.append(ann["id"])
            continue
        decoded.append((-n, ann["id"], ann, m))
    decoded.sort(key=lambda t: (t[0], t[1]))
    out = np.zeros((h, w), dtype=np.uint8)
    crowd_labels = set()
    for _, _, ann, m in decoded:
        cat = ann["category_id"]
        if ann.get("iscrowd", 0) or cat in remap.drop_if_any:
            out[m] = IGNORE_INDEX
            if cat in remap.mapping:
                crowd_labels.add(remap.mapping[cat])
        else:
            out[m] = remap.mapping.get(cat, 0)
    present = {int(v) for v in np.unique(out)} - {0, IGNORE_INDEX}
    return out, tuple(sorted(present | crowd_labels)), empty


def coco_semantic_mask(coco: COCO, img_id: int, remap: Remap) -> np.ndarray:
    """The (H, W) uint8 mask of :func:`coco_image_target` (painting rules there)."""
    return coco_image_target(coco, img_id, remap)[0]


def _image_size(src: Path) -> tuple[int, int]:
    """(W, H) from the file header only: decoding 100k COCO images just to check them is too slow."""
    if not src.is_file():
        raise DataError(src, "image file not found", "pass the image folder the annotation JSON belongs to")
    try:
        with Image.open(src) as im:
            return im.size
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(src, f"cannot read image header ({type(e).__name__})", "re-download the image") from None


def _check_file_names(ann_json: Path, coco: COCO, image_dir: Path) -> None:
    """Every ``file_name`` stays inside ``image_dir``; basenames and stems are unique."""
    by_name: dict[str, int] = {}
    by_stem: dict[str, int] = {}
    guard = RootGuard(image_dir)
    for img_id in sorted(coco.imgs):
        fn = coco.imgs[img_id]["file_name"]
        if not isinstance(fn, str) or not fn or fn.endswith(("/", "\\")):  # "x.jpg/" linked to nothing readable
            raise DataError(ann_json, f"image {img_id}: file_name {fn!r} is not a file name",
                            "give each image its file name, relative to the image folder")
        if unsafe_rel(fn):
            raise DataError(ann_json, f"image {img_id}: file_name '{fn}' is absolute or has '..', so it would be "
                            f"read from outside --images {image_dir}", "file names are relative to the image folder")
        bad = link_problem(guard, str(PurePosixPath(fn)), f"--images {image_dir}")
        if bad is not None:
            raise DataError(ann_json, f"image {img_id}: '{image_dir / fn}' {bad[0]}", bad[1])
        base = PurePosixPath(fn.replace("\\", "/")).name
        for key, seen, what in ((base, by_name, "basename"), (Path(base).stem, by_stem, "stem")):
            if key in seen:
                other = coco.imgs[seen[key]]["file_name"]
                raise DataError(ann_json, f"images {seen[key]} ('{other}') and {img_id} ('{fn}') share the {what} "
                                f"'{key}': their outputs would overwrite each other",
                                "give every image a unique file name (outputs are keyed by it)")
            seen[key] = img_id


def _source_link(out: Path, image_dir: Path) -> tuple[str, bool]:
    """``sources/<folder>-<hash>``, the folder link the image links go through; (rel, must create)."""
    real = image_dir.resolve()
    rel = f"sources/{real.name or 'images'}-{hashlib.sha1(str(real).encode()).hexdigest()[:8]}"
    p = out / rel
    if p.is_symlink() and Path(os.path.realpath(p)) == real:
        return rel, False
    if p.is_symlink() or p.exists():
        raise DataError(p, f"exists and is not a link to {real}", "remove it or convert into a fresh --out")
    return rel, True


def _check_existing(dst: Path, src: Path, stems: dict[str, str]) -> None:
    """Refuse to replace an output image that is another image (same name or same stem)."""
    other = stems.get(dst.stem)
    if other is not None and other != dst.name:
        raise DataError(dst.parent / other, f"already exists with the id '{dst.stem}' of {src.name}",
                        "convert into a fresh --out, or give the images unique stems")
    if not dst.exists():  # absent, or a dangling link (no data to lose)
        return
    same = os.path.samefile(dst, src) or (not dst.is_symlink() and filecmp.cmp(dst, src, shallow=False))
    if not same:
        raise DataError(dst, f"already exists and is another image than {src}",
                        "convert into a fresh --out; nothing was written")


def build_coco_split(ann_json: str | Path, image_dir: str | Path, out_dir: str | Path, remap: Remap | str | Path,
                     drop_if_any: bool = True, name: str | None = None, keep_empty: bool = False,
                     link: bool = True) -> Split:
    """Convert a COCO instances JSON into hetseg's VOC layout under ``out_dir`` and return the split.

    Skips images containing any ``remap.drop_if_any`` category (when ``drop_if_any``; every
    annotation counts here, even one that covers no pixel), and images with no label unless
    ``keep_empty``. Writes ``JPEGImages/<basename>`` (with ``link``: a relative symlink through
    the folder link ``sources/<folder>-<hash> -> <image_dir>``, which keeps the output inside its
    root under :mod:`hetseg.data.paths`; else, or when linking fails, a copy),
    ``SegmentationClass/<stem>.png`` (palette PNG, see :func:`coco_image_target`, which also
    gives the labels), merges the labels into ``labels.json`` and writes ``splits/<name>.txt``
    (``name`` defaults to the JSON's stem). Image files must exist and match the JSON size.
    All or nothing: outputs are staged and moved into ``out_dir`` at the end, so a
    :class:`DataError` leaves it as it was. ``meta["dropped_annotations"]`` lists the annotations
    dropped for covering no pixel (also logged as a warning).
    """
    remap = remap if isinstance(remap, Remap) else load_remap(remap)
    ann_json, image_dir, out = Path(ann_json), Path(image_dir), Path(out_dir)
    coco = load_coco(ann_json)
    name = name or ann_json.stem
    if name in ("", ".", "..") or name != PurePosixPath(name.replace("\\", "/")).name:
        # it names splits/<name>.txt: '../x' or an absolute name wrote a split over any file outside --out
        raise DataError(f"--name {name}", "not a plain file name", "give a name such as train or val (no folders)")
    _check_file_names(ann_json, coco, image_dir)
    jpeg = out / "JPEGImages"
    stems = {p.stem: p.name for p in jpeg.iterdir()} if jpeg.is_dir() else {}
    link_rel, make_link = _source_link(out, image_dir) if link else (None, False)
    records, labels, no_pixel = [], {}, []
    mapped = set(remap.mapping)
    dropped = empty = 0
    with staged(out) as tmp:
        (tmp / "JPEGImages").mkdir()
        if make_link:
            (tmp / link_rel).parent.mkdir(parents=True)
            try:
                os.symlink(image_dir.resolve(), tmp / link_rel, target_is_directory=True)
            except OSError:  # e.g. no symlink privilege on Windows: copy instead
                link_rel = None
        for img_id in sorted(coco.imgs):
            info = coco.imgs[img_id]
            cats = {a["category_id"] for a in coco.imgToAnns.get(img_id, [])}
            if drop_if_any and cats & remap.drop_if_any:
                dropped += 1
                continue
            if not keep_empty and not cats & mapped:  # no label possible: skipped unread, as before
                empty += 1
                continue
            fn = info["file_name"]
            src = image_dir / fn
            size = _image_size(src)  # the header, before a JSON size is trusted to rasterise masks
            if size != (info["width"], info["height"]):
                raise DataError(src, f"image is {size[0]}x{size[1]} (WxH) but the JSON says "
                                f"{info['width']}x{info['height']}", "use the images the annotation file was made for")
            mask, labs, gone = coco_image_target(coco, img_id, remap, ann_json)
            no_pixel += gone
            if not labs and not keep_empty:
                empty += 1
                continue
            fname = PurePosixPath(fn.replace("\\", "/")).name
            rid = Path(fname).stem
            _check_existing(jpeg / fname, src, stems)
            mask_rel = f"SegmentationClass/{rid}.png"
            if (out / mask_rel).exists() and not (jpeg / fname).exists():
                raise DataError(out / mask_rel, "already exists, with no image of that name in JPEGImages (a mask "
                                "this converter did not write)", "convert into a fresh --out; nothing was written")
            if link_rel is not None:
                os.symlink(f"../{link_rel}/{fn}", tmp / "JPEGImages" / fname)
            else:
                shutil.copyfile(src, tmp / "JPEGImages" / fname)
            save_index_png(tmp / mask_rel, mask)
            labels[rid] = labs
            records.append(Record(rid, f"JPEGImages/{fname}", labs, mask_rel))
        if not records:  # an empty split would only be refused later, by training, after this wrote files
            raise DataError(ann_json, f"no image kept: {len(coco.imgs)} in the file, {dropped} with a dropped "
                            f"category, {empty} with no category of the remap '{remap.name}'",
                            "check the annotation file and --remap (or --keep-empty for images with no label)")
        lj = out / "labels.json"
        merged = load_labels_json(lj) if lj.is_file() else {}  # several splits may share one out_dir
        merged.update(labels)
        save_labels_json(tmp / "labels.json", merged)
        refuse_other_file(out / "splits" / f"{name}.txt", split_text(records), "split file")  # e.g. the set's val.txt
        checksum = write_split(tmp / "splits" / f"{name}.txt", records)
    if no_pixel:
        log.warning("%s: dropped %d annotations that cover no pixel (e.g. ann %d), with their labels",
                    ann_json, len(no_pixel), no_pixel[0])
    meta = {"checksum": checksum, "skipped_dropped": dropped, "skipped_empty": empty, "remap": remap.name,
            "source": str(ann_json), "dropped_annotations": no_pixel}
    return Split(out, records, name, remap.num_classes, meta)

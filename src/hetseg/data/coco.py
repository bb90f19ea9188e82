"""MS-COCO: segmentation decoding, category remaps (as data) and conversion to the VOC layout.

COCO stores three segmentation kinds: polygons (a list of flat [x0, y0, x1, y1, ...] parts),
uncompressed RLE (``counts`` a list of run lengths, column-major, ``size`` = [h, w]; used for
crowds) and compressed RLE (``counts`` a string). ``area`` in the JSON is *not* the decoded pixel
count (a real crowd annotation says 890 and decodes to 791 px), so nothing here relies on it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from hetseg.data.classes import IGNORE_INDEX, VOC_CLASSES
from hetseg.data.io import _open
from hetseg.data.records import Record, Split, load_labels_json, save_labels_json, write_split
from hetseg.errors import DataError
from hetseg.palette import save_index_png


def decode_segmentation(segm, height: int, width: int, source: str | Path | None = None) -> np.ndarray:
    """Rasterise one COCO ``segmentation`` into an (height, width) bool mask.

    Polygons (one or more parts; parts with fewer than 3 points have no area and are skipped),
    uncompressed RLE (list ``counts``, column-major, ``size`` must equal [height, width]) and
    compressed RLE (str/bytes ``counts``). Malformed input raises :class:`DataError` naming
    ``source`` (e.g. "annotations.json ann 42") when given.
    """
    h, w = int(height), int(width)
    try:
        if isinstance(segm, list):
            parts = [list(map(float, p)) for p in segm]
            if any(len(p) % 2 for p in parts):
                raise DataError(source, "polygon with an odd number of coordinates", "write x, y pairs")
            # pycocotools reads a 4-number "polygon" as a bbox: drop degenerate parts (< 3 points).
            parts = [p for p in parts if len(p) >= 6]
            if not parts:
                return np.zeros((h, w), dtype=bool)
            rle = mask_utils.merge(mask_utils.frPyObjects(parts, h, w))
        elif isinstance(segm, dict) and "counts" in segm and "size" in segm:
            if [int(x) for x in segm["size"]] != [h, w]:
                raise DataError(source, f"RLE size {list(segm['size'])} differs from the image's [h, w] = [{h}, {w}]",
                                "RLE size is [height, width] of the image it belongs to")
            if isinstance(segm["counts"], list):
                if sum(segm["counts"]) != h * w:
                    raise DataError(source, f"RLE counts sum to {sum(segm['counts'])}, not h*w = {h * w}",
                                    "uncompressed RLE must cover the whole image, column-major")
                rle = mask_utils.frPyObjects(segm, h, w)
            else:
                rle = {"size": [h, w], "counts": segm["counts"]}
        else:
            raise DataError(source, f"unknown segmentation of type {type(segm).__name__}",
                            "use a polygon list or an RLE dict with counts and size")
        with warnings.catch_warnings():
            # pycocotools' Cython decode trips numpy 2's copy-keyword DeprecationWarning; harmless.
            warnings.simplefilter("ignore", DeprecationWarning)
            m = mask_utils.decode(rle)
    except DataError:
        raise
    except Exception as e:  # pycocotools raises TypeError/ValueError/IndexError on malformed data
        raise DataError(source, f"cannot decode segmentation ({type(e).__name__}: {e})",
                        "check the annotation's segmentation field") from None
    return np.asarray(m, dtype=bool).reshape(h, w)


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
    if p.suffix != ".json" or not p.is_file():
        shipped = resources.files("hetseg.data") / REMAP_DIR / f"{name_or_path}.json"
        if not shipped.is_file():
            avail = sorted(f.name[:-5] for f in (resources.files("hetseg.data") / REMAP_DIR).iterdir()
                           if f.name.endswith(".json"))
            raise DataError(name_or_path, "no such remap file or shipped remap", f"use a JSON path or one of {avail}")
        text, src = shipped.read_text(), str(name_or_path)
    else:
        text, src = p.read_text(), str(p)
    try:
        d = json.loads(text)
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


def load_coco(ann_json: str | Path) -> COCO:
    """Load an instances JSON into pycocotools' COCO (quietly); bad files raise :class:`DataError`."""
    p = Path(ann_json)
    try:
        data = json.loads(p.read_text())
        coco = COCO()
        coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            coco.createIndex()
    except FileNotFoundError:
        raise DataError(p, "annotation JSON not found", "check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise DataError(p, f"not a COCO instances JSON ({type(e).__name__}: {e})",
                        "pass instances_<split>.json with images, annotations and categories") from None
    return coco


def coco_semantic_mask(coco: COCO, img_id: int, remap: Remap) -> np.ndarray:
    """Paint one image's annotations into an (H, W) uint8 mask of remapped indices.

    Annotations are painted by *decreasing* decoded pixel count (ties by annotation id), so smaller
    objects end up on top of the larger ones they overlap. Mapped categories paint their index;
    crowd regions paint 255 (void: a crowd box mixes instances and background); categories in
    ``remap.drop_if_any`` (when the image was kept anyway) paint 255, since they are known objects
    outside the label space; any other unmapped category paints 0 (background).
    """
    info = coco.imgs[img_id]
    h, w = int(info["height"]), int(info["width"])
    decoded = []
    for ann in coco.imgToAnns.get(img_id, []):
        m = decode_segmentation(ann.get("segmentation", []), h, w, source=f"ann {ann.get('id')} (image {img_id})")
        decoded.append((-int(m.sum()), ann.get("id", 0), ann, m))
    decoded.sort(key=lambda t: (t[0], t[1]))
    out = np.zeros((h, w), dtype=np.uint8)
    for _, _, ann, m in decoded:
        cat = ann["category_id"]
        if ann.get("iscrowd", 0) or cat in remap.drop_if_any:
            out[m] = IGNORE_INDEX
        else:
            out[m] = remap.mapping.get(cat, 0)
    return out


def _place_image(src: Path, dst: Path, link: bool) -> None:
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if link:
        try:
            os.symlink(src.resolve(), dst)
            return
        except OSError:  # e.g. no symlink privilege on Windows: fall back to a copy
            pass
    shutil.copyfile(src, dst)


def _image_size(src: Path) -> tuple[int, int]:
    """(W, H) from the file header only: decoding 100k COCO images just to check them is too slow."""
    if not src.is_file():
        raise DataError(src, "image file not found", "pass the image folder the annotation JSON belongs to")
    try:
        with Image.open(src) as im:
            return im.size
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(src, f"cannot read image header ({type(e).__name__})", "re-download the image") from None


def build_coco_split(ann_json: str | Path, image_dir: str | Path, out_dir: str | Path, remap: Remap | str | Path,
                     drop_if_any: bool = True, name: str | None = None, keep_empty: bool = False,
                     link: bool = True) -> Split:
    """Convert a COCO instances JSON into hetseg's VOC layout under ``out_dir`` and return the split.

    Skips images containing any ``remap.drop_if_any`` category (when ``drop_if_any``), and images
    with no mapped category unless ``keep_empty``. Writes ``JPEGImages/<file>`` (symlink, or copy
    if ``link`` is False or linking fails), ``SegmentationClass/<stem>.png`` (palette PNG of
    remapped indices, see :func:`coco_semantic_mask`), merges image-level labels (mapped
    categories of all annotations, crowd included) into ``labels.json`` and writes
    ``splits/<name>.txt`` (``name`` defaults to the JSON's stem). Image files must exist and
    match the JSON size.
    """
    remap = remap if isinstance(remap, Remap) else load_remap(remap)
    coco = load_coco(ann_json)
    image_dir, out = Path(image_dir), Path(out_dir)
    name = name or Path(ann_json).stem
    (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
    records, labels = [], {}
    dropped = empty = 0
    for img_id in sorted(coco.imgs):
        info = coco.imgs[img_id]
        cats = {a["category_id"] for a in coco.imgToAnns.get(img_id, [])}
        if drop_if_any and cats & remap.drop_if_any:
            dropped += 1
            continue
        labs = tuple(sorted({remap.mapping[c] for c in cats if c in remap.mapping}))
        if not labs and not keep_empty:
            empty += 1
            continue
        src = image_dir / info["file_name"]
        size = _image_size(src)
        if size != (info["width"], info["height"]):
            raise DataError(src, f"image is {size[0]}x{size[1]} (WxH) but the JSON says "
                            f"{info['width']}x{info['height']}", "use the images the annotation file was made for")
        fname = Path(info["file_name"]).name
        rid = Path(fname).stem
        _place_image(src, out / "JPEGImages" / fname, link)
        mask_rel = f"SegmentationClass/{rid}.png"
        save_index_png(out / mask_rel, coco_semantic_mask(coco, img_id, remap))
        labels[rid] = labs
        records.append(Record(rid, f"JPEGImages/{fname}", labs, mask_rel))
    lj = out / "labels.json"
    merged = load_labels_json(lj) if lj.is_file() else {}  # several splits may share one out_dir
    merged.update(labels)
    save_labels_json(lj, merged)
    checksum = write_split(out / "splits" / f"{name}.txt", records)
    meta = {"checksum": checksum, "skipped_dropped": dropped, "skipped_empty": empty, "remap": remap.name,
            "source": str(ann_json)}
    return Split(out, records, name, remap.num_classes, meta)


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """COCO panoptic PNG -> (H, W) int32 segment ids = R + 256 G + 65536 B (0 = void)."""
    p, im = _open(path, "panoptic PNG")
    if im.mode != "RGB":
        raise DataError(p, f"panoptic PNG is mode {im.mode}, expected RGB", "pass the RGB panoptic_<split> PNGs")
    a = np.asarray(im).astype(np.int32)
    return a[..., 0] + 256 * a[..., 1] + 65536 * a[..., 2]

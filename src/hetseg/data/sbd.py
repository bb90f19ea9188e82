"""SBD (Semantic Boundaries Dataset) class annotations and the VOC "train_aug" merge.

SBD ships ``benchmark_RELEASE/dataset/{img, cls/*.mat, inst/*.mat, train.txt, val.txt}`` (8498 +
2857 = 11355 images). Each ``cls/<id>.mat`` holds a 1x1 struct ``GTcls`` with ``Segmentation``
((H, W) uint8 indices 0..20, *no* 255 border), ``Boundaries`` (20 sparse per-class boundary
maps) and ``CategoriesPresent`` (the classes, 1-based). train_aug = VOC train ∪ SBD train ∪
SBD val − VOC val = 10,582 images on the real data.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import scipy.io

from hetseg.data.io import check_sizes, image_size, read_mask
from hetseg.data.records import parse_split_lines, read_list_text, record_id
from hetseg.data.staging import staged
from hetseg.errors import DataError, HetsegError, one_line
from hetseg.io_atomic import write_text
from hetseg.palette import save_index_png

VOC_AUG_COUNT = 10582  # |train_aug| on the full VOC2012 + SBD release (mmseg asserts the same number)


def _load_gtcls(path: str | Path) -> np.ndarray:
    """The ``GTcls`` struct of an SBD cls .mat as a (1, 1) structured array."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "SBD .mat file not found", "check the cls/ folder of benchmark_RELEASE/dataset")
    try:
        m = scipy.io.loadmat(p)
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError... on foreign bytes
        raise DataError(p, f"cannot read MATLAB file ({type(e).__name__}: {e})",
                        "re-extract the SBD archive; the file is corrupt or not a .mat") from None
    g = m.get("GTcls")
    if not isinstance(g, np.ndarray) or g.dtype.names is None or "Segmentation" not in g.dtype.names:
        found = sorted(k for k in m if not k.startswith("__"))
        raise DataError(p, f"no GTcls.Segmentation struct (variables: {found})",
                        "pass an SBD cls/*.mat file (inst/*.mat hold GTinst)")
    return g


def load_sbd_cls(path: str | Path) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD cls .mat: (H, W) uint8 class indices 0..20 (no void)."""
    seg = np.asarray(_load_gtcls(path)["Segmentation"][0, 0])
    # real numbers only: a complex or boolean map has no class indices (np.mod raised on complex)
    if seg.ndim != 2 or not (np.issubdtype(seg.dtype, np.integer) or np.issubdtype(seg.dtype, np.floating)):
        raise DataError(path, f"GTcls.Segmentation is {seg.dtype} {seg.shape}, expected a 2-D class map",
                        "re-extract the SBD archive")
    if seg.dtype != np.uint8:
        # Re-saved files sometimes hold doubles; accept them only if they are exact indices.
        if seg.size and (seg.min() < 0 or seg.max() > 255 or not np.all(np.equal(np.mod(seg, 1), 0))):
            raise DataError(path, f"GTcls.Segmentation holds non-index values ({seg.dtype})",
                            "re-extract the SBD archive")
        seg = seg.astype(np.uint8)
    return np.ascontiguousarray(seg)


def load_sbd_boundaries(path: str | Path) -> list:
    """``GTcls.Boundaries``: 20 scipy sparse (H, W) maps, one per VOC class (index 0 = aeroplane).

    The sparse type is whatever scipy returns: ``csc_array`` (scipy >= 1.15 or so) or ``csc_matrix``.
    """
    b = _load_gtcls(path)["Boundaries"][0, 0]
    return [b.ravel()[i] for i in range(b.size)]


def load_sbd_categories(path: str | Path) -> list[int]:
    """``GTcls.CategoriesPresent`` as a list of mask indices (1-based VOC classes)."""
    return [int(x) for x in np.asarray(_load_gtcls(path)["CategoriesPresent"][0, 0]).ravel()]


def resolve_voc_root(path: str | Path) -> Path:
    """Accept ``VOC2012/``, ``VOCdevkit/`` or the folder holding ``VOCdevkit/``; return ``.../VOC2012``."""
    p = Path(path)
    for cand in (p, p / "VOC2012", p / "VOCdevkit" / "VOC2012"):
        if (cand / "ImageSets" / "Segmentation").is_dir():
            return cand
    raise DataError(p, "no ImageSets/Segmentation found here, under VOC2012/ or under VOCdevkit/VOC2012/",
                    "pass the VOC2012 folder of the extracted VOCtrainval_11-May-2012.tar")


def resolve_sbd_root(path: str | Path) -> Path:
    """Accept ``benchmark_RELEASE/``, its ``dataset/`` or their parent; return the ``dataset`` folder."""
    p = Path(path)
    for cand in (p, p / "dataset", p / "benchmark_RELEASE" / "dataset"):
        if (cand / "cls").is_dir() and (cand / "train.txt").is_file() and (cand / "val.txt").is_file():
            return cand
    raise DataError(p, "no cls/, train.txt and val.txt found here, under dataset/ or under "
                       "benchmark_RELEASE/dataset/", "pass the extracted SBD benchmark_RELEASE folder")


def read_ids(path: Path) -> list[str]:
    """Ids of a list file (bare ids or path pairs), in file order; non-UTF-8, empty and repeated ids raise."""
    if not path.is_file():
        raise DataError(path, "id list not found", "check the dataset folder")
    return [record_id(img) for img, _ in parse_split_lines(read_list_text(path, "id list"), path, path.parent)]


def build_voc_aug(voc_root: str | Path, sbd_root: str | Path, out_mask_dir: str = "SegmentationClassAug",
                  expect_count: int | None = None) -> dict:
    """Merge VOC2012 and SBD into the 10,582-image ``train_aug`` set.

    train_aug = VOC train ∪ SBD train ∪ SBD val − VOC val. Writes ``<voc_root>/<out_mask_dir>/<id>.png``
    for every train_aug id *and* every VOC val id (so val can be read from the same folder, as in
    the usual SegmentationClassAug download): the VOC ``SegmentationClass`` PNG when it exists
    (copied byte for byte: keeps its 255 border), else the SBD ``cls/<id>.mat`` as a VOC-palette
    PNG (no border). Writes ``ImageSets/Segmentation/train_aug.txt`` (sorted bare ids; atomically, last,
    replacing an earlier list as the masks replace earlier masks). The count is
    checked against ``expect_count`` before anything is written. Every mask must have its image's
    size (from the JPEG header). All or nothing: masks are written to a staging folder and moved
    into ``<out_mask_dir>`` only once every id passed, so a refusal (:class:`DataError`) leaves the
    VOC folder untouched. Returns the counts.
    """
    voc = resolve_voc_root(voc_root)
    sbd = resolve_sbd_root(sbd_root)
    sets = voc / "ImageSets" / "Segmentation"
    voc_train, voc_val = set(read_ids(sets / "train.txt")), set(read_ids(sets / "val.txt"))
    sbd_train, sbd_val = set(read_ids(sbd / "train.txt")), set(read_ids(sbd / "val.txt"))
    union = voc_train | sbd_train | sbd_val
    train_aug = sorted(union - voc_val)
    stats = {"voc_train": len(voc_train), "voc_val": len(voc_val), "sbd_train": len(sbd_train),
             "sbd_val": len(sbd_val), "removed_voc_val": len(union & voc_val), "train_aug": len(train_aug)}
    if expect_count is not None and len(train_aug) != expect_count:
        raise DataError(sbd, f"train_aug has {len(train_aug)} ids, expected {expect_count} (VOC train "
                        f"{len(voc_train)} + SBD train {len(sbd_train)} + SBD val {len(sbd_val)}, minus overlaps "
                        f"and {stats['removed_voc_val']} VOC val ids)",
                        "use the full VOC2012 trainval (1464/1449) and SBD (8498/2857) lists, or pass "
                        "--expect-count 0 to skip the check (a partial data set)")
    missing_img = [i for i in train_aug if not (voc / "JPEGImages" / f"{i}.jpg").is_file()]
    if missing_img:
        raise DataError(voc / "JPEGImages", f"{len(missing_img)} train_aug images are missing, e.g. "
                        f"{missing_img[0]}.jpg", "extract the full VOC2012 trainval JPEGImages "
                        "(SBD's images are a subset of it)")
    out = voc / out_mask_dir
    list_path = sets / "train_aug.txt"
    if list_path.absolute() in (out.absolute(), *out.absolute().parents):  # the masks would become that path
        raise DataError(f"--out-mask-dir {out_mask_dir}", f"is where the id list {list_path} goes, nothing was written",
                        "choose another mask folder, e.g. SegmentationClassAug")
    if list_path.is_dir():  # checked before the masks move in, as staged() checks the mask folder
        raise DataError(list_path, "a folder is in the way of the output, nothing was written",
                        f"move or delete {list_path} and rerun")
    from_voc = from_sbd = 0
    with staged(out) as tmp:  # a refusal below leaves <out_mask_dir> exactly as it was
        for rid in sorted(set(train_aug) | voc_val):
            src = voc / "SegmentationClass" / f"{rid}.png"
            img = voc / "JPEGImages" / f"{rid}.jpg"
            if src.is_file():
                mask = read_mask(src, num_classes=21)  # validate (mode P/L, indices 0..20 + 255) before copying
                if img.is_file():  # every train_aug image exists (checked above); a val image may not
                    check_sizes(img, src, image_size(img), mask.shape)
                if src.resolve() != (out / f"{rid}.png").resolve():
                    shutil.copyfile(src, tmp / f"{rid}.png")
                from_voc += 1
            elif rid in voc_val:
                raise DataError(src, f"VOC val id {rid} has no ground-truth mask",
                                "extract the full VOC2012 SegmentationClass folder")
            else:
                mat = sbd / "cls" / f"{rid}.mat"
                if not mat.is_file():
                    raise DataError(mat, f"id {rid} is in the SBD lists but has neither this file nor {src.name} "
                                    "in VOC SegmentationClass", "re-extract the SBD archive")
                seg = load_sbd_cls(mat)
                if seg.size and seg.max() > 20:
                    raise DataError(mat, f"class index {int(seg.max())} > 20", "pass genuine SBD cls/*.mat files")
                ih, iw = image_size(img)
                if seg.shape != (ih, iw):
                    raise DataError(mat, f"GTcls.Segmentation is {seg.shape[0]}x{seg.shape[1]} (HxW) but its image "
                                    f"{img} is {ih}x{iw}", "pair the SBD release with the VOC2012 JPEGImages it was "
                                    "annotated on; nothing was written")
                save_index_png(tmp / f"{rid}.png", seg)
                from_sbd += 1
    # Atomic, and after the masks: a train_aug.txt never names a mask that is not there. Like the masks
    # in <out_mask_dir>, it is this command's output and a rerun replaces it.
    text = "".join(f"{i}\n" for i in train_aug)
    try:  # told in the summary, so a replaced list of another origin is not replaced silently
        replaced = list_path.is_file() and list_path.read_bytes() != text.encode()
    except OSError:
        replaced = True
    write_text(list_path, text)
    stats.update(from_voc=from_voc, from_sbd=from_sbd, mask_dir=str(out), list=str(list_path),
                 list_replaced=replaced)
    return stats


def cli_voc_aug(voc_root: str, sbd_root: str, out_mask_dir: str = "SegmentationClassAug",
                expect_count: int | None = VOC_AUG_COUNT) -> int:
    """``hetseg data voc-aug``: build train_aug, print a summary; exit status 0, or 2 on bad data."""
    try:
        s = build_voc_aug(voc_root, sbd_root, out_mask_dir, expect_count)
    except HetsegError as e:
        print(f"hetseg: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    print(f"train_aug: {s['train_aug']} ids (VOC train {s['voc_train']}, SBD train {s['sbd_train']}, "
          f"SBD val {s['sbd_val']}, minus {s['removed_voc_val']} VOC val ids)")
    print(f"masks: {s['from_voc']} copied from VOC SegmentationClass, {s['from_sbd']} converted from SBD "
          f"-> {s['mask_dir']}")
    print(f"list: {s['list']}" + (" (replaced an earlier list with other ids or lines)" if s["list_replaced"] else ""))
    return 0

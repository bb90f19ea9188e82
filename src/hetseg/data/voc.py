"""PASCAL VOC 2012: annotation XML, instance masks and the ImageSets/Segmentation split lists.

Layout: ``VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, SegmentationObject, Annotations,
ImageSets/Segmentation/{train,val}.txt}``. Class masks are mode-P PNGs of indices 0..20 with a
255 void border (see :mod:`hetseg.data.io`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hetseg.data.classes import IGNORE_INDEX, VOC_CLASSES
from hetseg.data.io import read_mask
from hetseg.data.records import (Record, Split, labels_from_mask, normalise_labels, parse_split_lines, read_list_text,
                                 record_id)
from hetseg.errors import DataError


@dataclass(frozen=True)
class VocObject:
    """One ``<object>``: bbox is (xmin, ymin, xmax, ymax) in pixels as floats (VOC is 1-based)."""

    name: str
    bbox: tuple[float, float, float, float]
    difficult: bool = False
    truncated: bool | None = None  # None: the element is absent (e.g. the action-task XMLs)
    pose: str | None = None

    @property
    def class_index(self) -> int | None:
        """Mask index of ``name`` in :data:`VOC_CLASSES` (1..20), or None for a non-VOC name."""
        return VOC_CLASSES.index(self.name) if self.name in VOC_CLASSES[1:] else None


@dataclass(frozen=True)
class VocAnnotation:
    """One ``Annotations/<id>.xml`` file."""

    filename: str
    folder: str | None
    width: int
    height: int
    depth: int | None
    segmented: bool
    objects: list[VocObject] = field(default_factory=list)


@dataclass(frozen=True)
class VocInstance:
    """One instance of ``SegmentationObject/<id>.png``: its id (1..254), class and pixel count."""

    id: int
    class_index: int
    pixel_count: int


def _text(elem: ET.Element | None, tag: str) -> str | None:
    child = elem.find(tag) if elem is not None else None
    return child.text.strip() if child is not None and child.text is not None else None


def _num(path: Path, elem: ET.Element | None, tag: str, required: bool = True) -> float | None:
    s = _text(elem, tag)
    if s is None:
        if required:
            raise DataError(path, f"missing <{tag}>", "every VOC XML needs <size> and <bndbox> coordinates")
        return None
    try:
        return float(s)
    except ValueError:
        raise DataError(path, f"<{tag}> is '{s}', not a number", "write plain numbers in the XML") from None


def _flag(path: Path, elem: ET.Element, tag: str) -> bool | None:
    v = _num(path, elem, tag, required=False)
    return None if v is None else bool(v)


def read_voc_xml(path: str | Path) -> VocAnnotation:
    """Parse a VOC annotation XML.

    Tolerant of what real files do: any child order, float coordinates (e.g. ``45.70000076293945``),
    missing ``<truncated>``/``<pose>``/``<difficult>``/``<segmented>``, and extra elements
    (``<actions>``, ``<point>``, ``<part>``: only direct ``<object>`` children are objects).
    Missing file or malformed XML raise :class:`DataError`.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "annotation XML not found", "check the Annotations/ folder")
    try:
        # Python's bundled expat (>= 2.4) guards against entity-expansion bombs.
        root = ET.parse(p).getroot()
    except (ET.ParseError, OSError) as e:
        raise DataError(p, f"malformed XML ({e})", "re-download the annotation file") from None
    if root.tag != "annotation":
        raise DataError(p, f"root element is <{root.tag}>, expected <annotation>", "pass a VOC annotation XML")
    size = root.find("size")
    if size is None:
        raise DataError(p, "missing <size>", "every VOC XML needs <size><width/><height/></size>")
    depth = _num(p, size, "depth", required=False)
    objects = []
    for i, obj in enumerate(root.findall("object"), 1):
        name = _text(obj, "name")
        box = obj.find("bndbox")
        if not name or box is None:
            raise DataError(p, f"object {i} lacks <name> or <bndbox>", "every <object> needs both")
        bbox = tuple(_num(p, box, t) for t in ("xmin", "ymin", "xmax", "ymax"))
        objects.append(VocObject(name, bbox, bool(_flag(p, obj, "difficult")), _flag(p, obj, "truncated"),
                                 _text(obj, "pose")))
    return VocAnnotation(
        filename=_text(root, "filename") or p.stem + ".jpg",
        folder=_text(root, "folder"),
        width=int(_num(p, size, "width")),
        height=int(_num(p, size, "height")),
        depth=None if depth is None else int(depth),
        segmented=bool(_flag(p, root, "segmented")),
        objects=objects,
    )


def xml_labels(path: str | Path) -> tuple[int, ...]:
    """Image-level labels (sorted mask indices) from an annotation XML.

    Like irn/psa's ``cls_labels.npy``, every object counts, difficult ones included. An object
    name that is not a VOC class raises :class:`DataError` (dropping it would corrupt the labels).
    """
    ann = read_voc_xml(path)
    unknown = sorted({o.name for o in ann.objects if o.class_index is None})
    if unknown:
        raise DataError(path, f"object names {unknown} are not VOC classes",
                        f"use the names {', '.join(VOC_CLASSES[1:])}")
    return tuple(sorted({o.class_index for o in ann.objects}))


def read_voc_instance_map(object_png: str | Path) -> np.ndarray:
    """``SegmentationObject/<id>.png`` -> (H, W) uint8 instance ids (0 none, 1..254 instances, 255 void)."""
    return read_mask(object_png)


def read_voc_instances(object_png: str | Path, class_png: str | Path) -> list[VocInstance]:
    """Instances of an object mask, each with its class from the class mask, sorted by id.

    Instance ids follow the order of the ``<object>`` elements in the XML. Void (255) is not an
    instance. An instance whose pixels carry more than one class (void aside), or only
    background, raises :class:`DataError`; so do masks of different sizes.
    """
    inst = read_voc_instance_map(object_png)
    cls = read_mask(class_png)
    if inst.shape != cls.shape:
        raise DataError(object_png, f"object mask is {inst.shape} but class mask {class_png} is {cls.shape}",
                        "pair SegmentationObject and SegmentationClass files of the same id")
    out = []
    for k in np.unique(inst):
        if k in (0, IGNORE_INDEX):
            continue
        sel = inst == k
        classes = [int(c) for c in np.unique(cls[sel]) if c != IGNORE_INDEX]
        if len(classes) != 1 or classes[0] == 0:
            raise DataError(object_png, f"instance {int(k)} covers classes {classes} in {class_png}, expected one "
                            "object class", "regenerate the object/class masks from the same annotation")
        out.append(VocInstance(int(k), classes[0], int(sel.sum())))
    return out


def voc_split(voc_root: str | Path, image_set: str = "train", mask_dir: str | None = "SegmentationClass",
              labels: Mapping[str, Sequence[int]] | None = None, num_classes: int = 21,
              check_files: bool = True) -> Split:
    """Read ``<voc_root>/ImageSets/Segmentation/<image_set>.txt`` (an id list) into a :class:`Split`.

    Each id gives ``JPEGImages/<id>.jpg`` and, when ``<mask_dir>/<id>.png`` exists, that mask
    (``mask_dir=None``: every record weak). Labels, as mask indices: from ``labels`` (e.g.
    :func:`~hetseg.data.records.load_cls_labels_npy`) when it has the id, else from the mask, else
    from ``Annotations/<id>.xml``. With ``check_files`` a missing image raises :class:`DataError`
    naming the split file; so do a non-UTF-8 or empty list and an id listed twice. Path-pair lists
    are read with :func:`~hetseg.data.records.read_split`.

    Paths here are built from ids under the fixed VOC folders (no ``..`` can occur), and
    per-file symlinks into other folders are accepted: a VOC root assembled by linking each image
    from VOC and SBD is common. The symlink rule of :mod:`hetseg.data.paths` applies to
    :func:`~hetseg.data.records.read_split`, the reader of training configs.
    """
    root = Path(voc_root)
    split_path = root / "ImageSets" / "Segmentation" / f"{image_set}.txt"
    if not split_path.is_file():
        raise DataError(split_path, "split file not found",
                        "pass the VOC2012 folder (the one holding ImageSets/) and an existing image set; "
                        "for train_aug run 'hetseg data voc-aug' first")
    ids = [record_id(img) for img, _ in parse_split_lines(read_list_text(split_path), split_path, root)]
    records = []
    for lineno, rid in enumerate(ids, 1):
        img = f"JPEGImages/{rid}.jpg"
        if check_files and not (root / img).is_file():
            raise DataError(split_path, f"entry {lineno}: '{img}' (id {rid}) does not exist under {root}",
                            "fix the split file or point voc_root at the complete VOC2012 folder")
        mask = f"{mask_dir}/{rid}.png" if mask_dir else None
        if mask is not None and not (root / mask).is_file():
            mask = None
        xml = root / "Annotations" / f"{rid}.xml"
        if labels is not None and rid in labels:
            labs = normalise_labels(labels[rid], num_classes, split_path, rid)
        elif mask is not None:
            labs = labels_from_mask(read_mask(root / mask, num_classes))
        elif xml.is_file():
            labs = normalise_labels(xml_labels(xml), num_classes, xml, rid)
        else:
            raise DataError(split_path, f"id {rid} has no {mask_dir or 'mask'}/{rid}.png, no Annotations/{rid}.xml "
                            "and no entry in the given labels", "complete the VOC folder or pass labels")
        records.append(Record(rid, img, labs, mask))
    return Split(root, records, image_set, num_classes, meta={"split_file": str(split_path)})

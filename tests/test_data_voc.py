"""VOC2012 readers against genuine VOC files (tests/fixtures, see its PROVENANCE.md), and image decoding."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES, VOC_ROOT
from PIL import Image

from hetseg.data.classes import VOC_CLASSES
from hetseg.data.io import read_image, read_mask, read_pair
from hetseg.data.records import Record, load_cls_labels_npy
from hetseg.data.voc import (VocInstance, VocObject, read_voc_instance_map, read_voc_instances, read_voc_xml,
                             voc_split, xml_labels)
from hetseg.errors import DataError
from hetseg.palette import voc_colormap

pytestmark = pytest.mark.usefixtures("fixtures")

# PROVENANCE.md §1: (H, W) and exact index -> pixel count of each genuine SegmentationClass PNG.
MASKS = {
    "2007_000032": ((281, 500), {0: 129545, 1: 4734, 15: 866, 255: 5355}),
    "2007_000033": ((366, 500), {0: 143868, 1: 30937, 255: 8195}),
    "2007_000039": ((375, 500), {0: 154539, 20: 30031, 255: 2930}),
    "2007_000063": ((375, 500), {0: 72224, 9: 78930, 12: 27632, 255: 8714}),
    "2007_000129": ((500, 334), {0: 54389, 2: 34183, 15: 61143, 255: 17285}),
}
TRAIN_IDS, VAL_IDS = ["2007_000032", "2007_000039", "2007_000063"], ["2007_000033", "2007_000129"]


def counts(a: np.ndarray) -> dict[int, int]:
    vals, n = np.unique(a, return_counts=True)
    return {int(v): int(c) for v, c in zip(vals, n)}


@pytest.mark.parametrize("rid", sorted(MASKS))
def test_class_mask_indices_exact(rid):
    shape, expected = MASKS[rid]
    path = VOC_ROOT / "SegmentationClass" / f"{rid}.png"
    m = read_mask(path, num_classes=21)
    assert m.dtype == np.uint8 and m.shape == shape
    assert counts(m) == expected
    # The file is palette-mode with the devkit colormap; the reader returns the stored indices.
    with Image.open(path) as im:
        assert im.mode == "P"
        assert np.array_equal(np.array(im.getpalette(), dtype=np.uint8).reshape(-1, 3), voc_colormap(256))
        assert np.array_equal(m, np.array(im))


@pytest.mark.parametrize("rid", sorted(MASKS))
def test_image_pairs_with_mask(rid):
    img, mask = read_pair(VOC_ROOT, Record(rid, f"JPEGImages/{rid}.jpg", (), f"SegmentationClass/{rid}.png"), 21)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[:2] == mask.shape == MASKS[rid][0]


def test_portrait_image_and_void_border():
    m = read_mask(VOC_ROOT / "SegmentationClass" / "2007_000129.png")
    assert m.shape == (500, 334)  # portrait: H=500, W=334
    assert read_image(VOC_ROOT / "JPEGImages" / "2007_000129.jpg").shape == (500, 334, 3)
    assert int((m == 255).sum()) == 17285  # void kept as 255, never folded into a class


def test_rgb_conversion_is_the_pitfall(tmp_path):
    """Converting a VOC mask to RGB gives colours, not indices: read_mask refuses such a file."""
    src = VOC_ROOT / "SegmentationClass" / "2007_000032.png"
    rgb = np.array(Image.open(src).convert("RGB"))
    assert tuple(rgb[read_mask(src) == 15][0]) == (192, 128, 128)  # person's colour, not 15
    Image.fromarray(rgb).save(tmp_path / "2007_000032.png")
    with pytest.raises(DataError, match="palette"):
        read_mask(tmp_path / "2007_000032.png")


def test_instances_2007_000063():
    obj = VOC_ROOT / "SegmentationObject" / "2007_000063.png"
    cls = VOC_ROOT / "SegmentationClass" / "2007_000063.png"
    inst = read_voc_instances(obj, cls)
    assert inst == [VocInstance(1, 12, 27632), VocInstance(2, 9, 78930)]  # dog, chair
    imap = read_voc_instance_map(obj)
    assert imap.shape == (375, 500) and counts(imap) == {0: 72224, 1: 27632, 2: 78930, 255: 8714}
    assert np.array_equal(imap == 255, read_mask(cls) == 255)  # the same void pixels in both maps
    # Instance k is the k-th <object> of the XML.
    objs = read_voc_xml(VOC_ROOT / "Annotations" / "2007_000063.xml").objects
    assert [objs[i.id - 1].class_index for i in inst] == [i.class_index for i in inst]
    assert [VOC_CLASSES[i.class_index] for i in inst] == ["dog", "chair"]


def test_xml_2007_000063():
    ann = read_voc_xml(VOC_ROOT / "Annotations" / "2007_000063.xml")
    assert (ann.filename, ann.folder, ann.width, ann.height, ann.depth, ann.segmented) == (
        "2007_000063.jpg", "VOC2012", 500, 375, 3, True)
    assert ann.objects == [
        VocObject("dog", (123.0, 115.0, 379.0, 275.0), difficult=False, truncated=False, pose="Unspecified"),
        VocObject("chair", (75.0, 1.0, 428.0, 375.0), difficult=False, truncated=True, pose="Frontal"),
    ]
    assert [o.class_index for o in ann.objects] == [12, 9]


def test_xml_action_variant_2011_003353():
    """Non-standard child order, float ymin, <actions>/<point> extras, no <truncated>."""
    root = FIXTURES / "voc_xml_variants"
    ann = read_voc_xml(root / "Annotations" / "2011_003353.xml")
    assert (ann.width, ann.height, ann.segmented) == (375, 500, False)
    assert len(ann.objects) == 1
    (o,) = ann.objects
    assert o.name == "person" and o.truncated is None and o.difficult is False
    assert o.bbox == (130.0, 45.70000076293945, 375.0, 470.0)
    assert read_image(root / "JPEGImages" / "2011_003353.jpg").shape == (500, 375, 3)


def _voc_subset(tmp_path, train=TRAIN_IDS, val=VAL_IDS):
    """A VOC root with the genuine files and split lists restricted to the ids present."""
    root = tmp_path / "VOC2012"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for d in ("JPEGImages", "SegmentationClass", "SegmentationObject", "Annotations"):
        (root / d).symlink_to(VOC_ROOT / d, target_is_directory=True)
    for name, ids in (("train", train), ("val", val)):
        (root / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def test_voc_split_labels_from_masks(tmp_path):
    root = _voc_subset(tmp_path)
    s = voc_split(root, "train")
    assert [r.id for r in s.records] == TRAIN_IDS and s.name == "train" and s.num_classes == 21
    assert [r.labels for r in s.records] == [(1, 15), (20,), (9, 12)]
    assert all(r.mask == f"SegmentationClass/{r.id}.png" and r.image == f"JPEGImages/{r.id}.jpg" for r in s.records)
    assert [r.labels for r in voc_split(root, "val").records] == [(1,), (2, 15)]


def test_voc_split_labels_agree_across_sources(tmp_path):
    """Mask-derived labels == irn's cls_labels.npy; XML labels == mask labels for 2007_000063."""
    root = _voc_subset(tmp_path)
    cls = load_cls_labels_npy(FIXTURES / "weak_labels" / "irn" / "voc12" / "cls_labels.npy")
    for image_set in ("train", "val"):
        from_masks = voc_split(root, image_set)
        from_npy = voc_split(root, image_set, labels=cls)
        assert [r.labels for r in from_masks.records] == [r.labels for r in from_npy.records]
    assert xml_labels(root / "Annotations" / "2007_000063.xml") == (9, 12)
    weak = voc_split(root, "train", mask_dir=None, labels={"2007_000032": (1, 15), "2007_000039": (20,)})
    assert [r.mask for r in weak.records] == [None, None, None]
    assert weak.records[2].labels == (9, 12)  # no mask, not in labels: from Annotations/2007_000063.xml


def test_voc_split_reports_missing_files_of_the_fixture_list():
    """The fixture train.txt lists 1464 ids, only 3 of which have files here."""
    with pytest.raises(DataError) as e:
        voc_split(VOC_ROOT, "train")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(VOC_ROOT / "ImageSets" / "Segmentation" / "train.txt"))
    assert "entry 4: 'JPEGImages/2007_000068.jpg' (id 2007_000068) does not exist" in msg


def test_voc_split_without_file_checks_uses_given_labels():
    cls = load_cls_labels_npy(FIXTURES / "weak_labels" / "psa" / "voc12" / "cls_labels.npy")
    s = voc_split(VOC_ROOT, "train", labels=cls, check_files=False)
    assert len(s) == 1464 and len(voc_split(VOC_ROOT, "val", labels=cls, check_files=False)) == 1449
    by_id = {r.id: r for r in s.records}
    assert by_id["2007_000063"].labels == (9, 12) and by_id["2007_000063"].mask == "SegmentationClass/2007_000063.png"
    # 2007_000068 has no mask file here: a weak record, labelled from cls_labels.
    assert by_id["2007_000068"].mask is None and by_id["2007_000068"].labels == cls["2007_000068"]


# --- image decoding: every storage mode comes back (H, W, 3) uint8 RGB -------------------------


@pytest.mark.parametrize("mode,value,fmt,expected", [
    ("L", 100, "PNG", (100, 100, 100)),
    ("LA", (100, 0), "PNG", (100, 100, 100)),  # alpha dropped, stored grey kept
    ("RGBA", (10, 20, 30, 0), "PNG", (10, 20, 30)),
    ("CMYK", (0, 0, 0, 0), "TIFF", (255, 255, 255)),
    ("1", 1, "PNG", (255, 255, 255)),
    ("F", 0.5, "TIFF", (128, 128, 128)),  # floats in [0, 1] scale by 255
])
def test_read_image_modes(tmp_path, mode, value, fmt, expected):
    p = tmp_path / f"x.{fmt.lower()}"
    Image.new(mode, (3, 2), value).save(p, fmt)
    a = read_image(p)
    assert a.shape == (2, 3, 3) and a.dtype == np.uint8
    assert {tuple(px) for px in a.reshape(-1, 3)} == {expected}


def test_read_image_palette_and_16bit(tmp_path):
    im = Image.fromarray(np.array([[0, 1], [15, 255]], dtype=np.uint8), mode="P")
    im.putpalette(voc_colormap(256).reshape(-1).tolist())
    im.save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png")[1, 0].tolist() == [192, 128, 128]  # palette applied for images
    Image.fromarray(np.full((2, 3), 0x1234, dtype=np.uint16)).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as g:
        assert g.mode == "I;16"
    assert np.all(read_image(tmp_path / "g16.png") == 0x12)  # 16-bit grey: fixed >> 8 scaling


def test_read_image_applies_exif_orientation(tmp_path):
    im = Image.new("RGB", (4, 2), (200, 0, 0))
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "o.jpg", exif=exif)
    assert read_image(tmp_path / "o.jpg").shape == (4, 2, 3)  # displayed as 2 wide, 4 high

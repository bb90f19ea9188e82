"""COCO decoding, remaps and conversion, on real COCO 2017 / panopticapi files (PROVENANCE.md §7)."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
from conftest import FIXTURES
from PIL import Image

from hetseg.data.coco import (build_coco_split, coco_semantic_mask, decode_segmentation, load_coco, load_remap,
                              read_panoptic_png)
from hetseg.data.io import read_image, read_mask
from hetseg.data.records import load_labels_json, read_split

pytestmark = pytest.mark.usefixtures("fixtures")

ICE = FIXTURES / "coco" / "icevision"
PAN = FIXTURES / "coco" / "panopticapi" / "sample_data"
VOC_EQUIVALENT = [1, 2, 3, 4, 5, 6, 7, 9, 16, 17, 18, 19, 20, 21, 44, 62, 63, 64, 67, 72]


@pytest.fixture(scope="module")
def ice():
    return load_coco(ICE / "annotations.json")


@pytest.fixture(scope="module")
def remap():
    return load_remap("coco60_transfernet")


def counts(a: np.ndarray) -> dict[int, int]:
    vals, n = np.unique(a, return_counts=True)
    return {int(v): int(c) for v, c in zip(vals, n)}


def test_fixture_shape(ice):
    assert len(ice.anns) == 36 and len(ice.cats) == 80 and len(ice.imgs) == 6
    for img in ice.imgs.values():
        assert read_image(ICE / "images" / img["file_name"]).shape == (img["height"], img["width"], 3)


def test_polygon_rasterises_to_exact_count_not_area(ice):
    ann = ice.anns[150977]
    assert (ann["image_id"], ann["category_id"], round(ann["area"], 1)) == (343934, 4, 43522.8)
    m = decode_segmentation(ann["segmentation"], 480, 640)
    assert m.dtype == bool and m.shape == (480, 640) and int(m.sum()) == 43516


def test_multi_part_polygon(ice):
    ann = ice.anns[257712]
    assert ann["image_id"] == 128372 and ann["category_id"] == 1
    assert [len(p) for p in ann["segmentation"]] == [170, 74]
    m = decode_segmentation(ann["segmentation"], 427, 640)
    parts = [decode_segmentation([p], 427, 640) for p in ann["segmentation"]]
    assert m.shape == (427, 640) and np.array_equal(m, parts[0] | parts[1]) and int(m.sum()) == 952
    assert all(p.sum() > 0 for p in parts)


def test_uncompressed_rle_column_major_791_vs_area_890(ice):
    ann = ice.anns[904400464689]
    segm = ann["segmentation"]
    assert (ann["iscrowd"], ann["category_id"], ann["area"], segm["size"]) == (1, 44, 890, [640, 586])
    assert isinstance(segm["counts"], list) and sum(segm["counts"]) == 375040 == 640 * 586
    m = decode_segmentation(segm, 640, 586)
    assert m.shape == (640, 586) and int(m.sum()) == 791  # never assert area == pixel count
    # Independent decode: alternating 0/1 runs, column-major (Fortran) order.
    flat = np.repeat(np.arange(len(segm["counts"])) % 2, segm["counts"]).astype(bool)
    assert np.array_equal(m, flat.reshape((640, 586), order="F"))


def test_compressed_rle_decodes_to_exact_area():
    det = load_coco(PAN / "panoptic_coco_detection_format.json")
    anns = list(det.anns.values())
    assert len(anns) == 50 and len(det.imgs) == 2 and len(det.cats) == 133
    assert all(isinstance(a["segmentation"]["counts"], str) for a in anns)
    assert sorted(a["iscrowd"] for a in anns).count(1) == 3
    for a in anns:
        img = det.imgs[a["image_id"]]
        m = decode_segmentation(a["segmentation"], img["height"], img["width"])
        assert m.shape == (img["height"], img["width"]) and int(m.sum()) == a["area"]
    assert int(decode_segmentation(det.anns[0]["segmentation"], det.imgs[det.anns[0]["image_id"]]["height"],
                                   det.imgs[det.anns[0]["image_id"]]["width"]).sum()) == 3528


def test_panoptic_png_ids_match_segments_info():
    info = json.loads((PAN / "panoptic_examples.json").read_text())
    expected = {"000000142238.png": (18, 1, (427, 640)), "000000439180.png": (32, 2, (360, 640))}
    for ann in info["annotations"]:
        ids = read_panoptic_png(PAN / "panoptic_examples" / ann["file_name"])
        n, crowd, shape = expected[ann["file_name"]]
        segs = ann["segments_info"]
        assert ids.dtype == np.int32 and ids.shape == shape
        assert len(segs) == n and sum(s["iscrowd"] for s in segs) == crowd
        c = counts(ids)
        assert {s["id"]: s["area"] for s in segs} == {k: v for k, v in c.items() if k != 0}  # 0 = void
        # 2-channel format: channel 0 = category id, channel 2 always 0.
        two = np.array(Image.open(PAN / "panoptic_examples_2ch_format" / ann["file_name"]))
        assert not two[..., 2].any()
        for s in segs:
            assert set(np.unique(two[..., 0][ids == s["id"]]).tolist()) == {s["category_id"]}


def test_remap_is_shipped_data(remap):
    assert (resources.files("hetseg.data") / "remaps" / "coco60_transfernet.json").is_file()
    assert len(remap.mapping) == 60 and remap.num_classes == 81
    assert [remap.mapping[k] for k in sorted(remap.mapping)] == list(range(21, 81))  # COCO id order
    assert (remap.mapping[8], remap.names[21], remap.mapping[90], remap.names[80]) == (21, "truck", 80, "toothbrush")
    assert sorted(remap.drop_if_any) == VOC_EQUIVALENT and not set(remap.mapping) & remap.drop_if_any
    voc = remap.voc()
    assert sorted(voc.mapping) == VOC_EQUIVALENT and sorted(voc.mapping.values()) == list(range(1, 21))
    assert {c: voc.names[voc.mapping[c]] for c in (1, 4, 5, 63, 64, 67, 72)} == {
        1: "person", 4: "motorbike", 5: "aeroplane", 63: "sofa", 64: "pottedplant", 67: "diningtable",
        72: "tvmonitor"}
    assert load_remap(resources.files("hetseg.data") / "remaps" / "coco60_transfernet.json") == remap


def test_semantic_masks(ice, remap):
    voc = remap.voc()
    assert counts(coco_semantic_mask(ice, 194216, remap)) == {0: 185353, 28: 2807}  # 3 bears -> 23 -> 28
    assert counts(coco_semantic_mask(ice, 343934, remap)) == {0: 263684, 255: 43516}  # VOC class kept: void
    assert counts(coco_semantic_mask(ice, 343934, voc)) == {0: 263684, 14: 43516}  # motorcycle -> motorbike
    assert counts(coco_semantic_mask(ice, 89, remap)) == {0: 640 * 480}  # no annotations
    # Bottles: the crowd region (791 px) is painted first as void, the smaller single bottles on top.
    m = coco_semantic_mask(ice, 464689, voc)
    assert m.shape == (640, 586) and counts(m) == {0: 372506, 5: 1757, 255: 777}
    assert counts(coco_semantic_mask(ice, 128372, voc)) == {0: 165965, 6: 92830, 7: 141, 15: 14344}


def test_build_coco_split(tmp_path, remap):
    out = tmp_path / "coco60"
    s = build_coco_split(ICE / "annotations.json", ICE / "images", out, remap, name="train")
    # Every image with a VOC category is dropped; 000000000089 has no annotation at all.
    assert [r.id for r in s.records] == ["000000194216"] and s.records[0].labels == (28,)
    assert (s.meta["skipped_dropped"], s.meta["skipped_empty"], s.num_classes) == (4, 1, 81)
    assert (out / "JPEGImages" / "000000194216.jpg").read_bytes() == (ICE / "images" / "000000194216.jpg").read_bytes()
    with Image.open(out / "SegmentationClass" / "000000194216.png") as im:
        assert im.mode == "P"
    assert counts(read_mask(out / "SegmentationClass" / "000000194216.png", 81)) == {0: 185353, 28: 2807}
    assert load_labels_json(out / "labels.json") == {"000000194216": (28,)}
    back = read_split(out / "splits" / "train.txt", num_classes=81)
    assert back.root == out and back.records == s.records and back.checksum() == s.meta["checksum"]
    kept = build_coco_split(ICE / "annotations.json", ICE / "images", out, remap, drop_if_any=False, name="all",
                            keep_empty=True)
    assert len(kept) == 6 and kept.meta["skipped_dropped"] == 0
    assert {r.id: r.labels for r in kept.records}["000000128372"] == (33,)  # handbag 31 -> 33; VOC cats void
    assert set(load_labels_json(out / "labels.json")) == {r.id for r in kept.records}  # merged, not replaced

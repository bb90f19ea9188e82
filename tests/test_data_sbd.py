"""SBD .mat reading and the VOC train_aug merge, on a genuine SBD cls file (PROVENANCE.md §4)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.sparse
from conftest import FIXTURES, VOC_ROOT
from PIL import Image

from hetseg.data.io import read_image, read_mask, rgb_to_index
from hetseg.data.records import load_cls_labels_npy
from hetseg.data.sbd import (build_voc_aug, cli_voc_aug, load_sbd_boundaries, load_sbd_categories, load_sbd_cls)
from hetseg.data.voc import voc_split
from hetseg.errors import DataError
from hetseg.palette import voc_colormap

pytestmark = pytest.mark.usefixtures("fixtures")

SBD = FIXTURES / "sbd"
MAT = SBD / "cls" / "2008_000783.mat"


def counts(a: np.ndarray) -> dict[int, int]:
    vals, n = np.unique(a, return_counts=True)
    return {int(v): int(c) for v, c in zip(vals, n)}


def test_load_sbd_cls():
    seg = load_sbd_cls(MAT)
    assert seg.dtype == np.uint8 and seg.shape == (333, 500)
    assert counts(seg) == {0: 147168, 13: 13488, 15: 5844}  # horse, person; no 255 border in SBD
    assert read_image(SBD / "img" / "2008_000783.jpg").shape == (333, 500, 3)


def test_rgb_render_decodes_to_the_mat():
    with Image.open(SBD / "rgb_render" / "2008_000783.png") as im:
        assert im.mode == "RGB"
        rgb = np.array(im)
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) == 3
    assert np.array_equal(rgb_to_index(rgb), load_sbd_cls(MAT))
    with pytest.raises(DataError, match="palette"):
        read_mask(SBD / "rgb_render" / "2008_000783.png")  # a colour rendering is not an index mask


def test_boundaries_and_categories():
    b = load_sbd_boundaries(MAT)
    assert len(b) == 20
    assert all(scipy.sparse.issparse(x) and x.shape == (333, 500) for x in b)
    assert {i: int(x.nnz) for i, x in enumerate(b) if x.nnz} == {12: 661, 14: 443}  # classes 13, 15
    assert load_sbd_categories(MAT) == [13, 15]
    labels = load_cls_labels_npy(FIXTURES / "weak_labels" / "irn" / "voc12" / "cls_labels.npy")
    assert labels["2008_000783"] == (13, 15)


def _layout(tmp_path, nested: bool):
    """VOC root (5 genuine images + masks, 1 SBD image) and an SBD release with small lists."""
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    for p in (VOC_ROOT / "JPEGImages").glob("*.jpg"):
        (voc / "JPEGImages" / p.name).symlink_to(p)
    (voc / "JPEGImages" / "2008_000783.jpg").symlink_to(SBD / "img" / "2008_000783.jpg")
    (voc / "SegmentationClass").symlink_to(VOC_ROOT / "SegmentationClass", target_is_directory=True)
    sets = voc / "ImageSets" / "Segmentation"
    sets.joinpath("train.txt").write_text("2007_000032\n2007_000039\n2007_000063\n")
    sets.joinpath("val.txt").write_text("2007_000033\n2007_000129\n")
    ds = tmp_path / "benchmark_RELEASE" / "dataset"
    (ds / "cls").mkdir(parents=True)
    shutil.copyfile(MAT, ds / "cls" / "2008_000783.mat")
    ds.joinpath("train.txt").write_text("2007_000032\n2007_000063\n")  # overlaps VOC train
    ds.joinpath("val.txt").write_text("2007_000033\n2008_000783\n")  # 2007_000033 is VOC val: removed
    return voc, (tmp_path / "benchmark_RELEASE" if nested else ds)


@pytest.mark.parametrize("nested", [True, False], ids=["benchmark_RELEASE", "dataset"])
def test_build_voc_aug(tmp_path, nested):
    voc, sbd = _layout(tmp_path, nested)
    stats = build_voc_aug(tmp_path / "VOCdevkit", sbd)  # VOCdevkit/ accepted as well as VOC2012/
    assert {k: stats[k] for k in ("voc_train", "voc_val", "sbd_train", "sbd_val", "removed_voc_val", "train_aug",
                                  "from_voc", "from_sbd")} == {
        "voc_train": 3, "voc_val": 2, "sbd_train": 2, "sbd_val": 2, "removed_voc_val": 1, "train_aug": 4,
        "from_voc": 5, "from_sbd": 1}
    ids = ["2007_000032", "2007_000039", "2007_000063", "2008_000783"]
    assert (voc / "ImageSets" / "Segmentation" / "train_aug.txt").read_text() == "".join(f"{i}\n" for i in ids)
    aug = voc / "SegmentationClassAug"
    # VOC masks copied byte for byte (255 border kept); val masks written too.
    for rid in ("2007_000032", "2007_000033", "2007_000129"):
        assert (aug / f"{rid}.png").read_bytes() == (VOC_ROOT / "SegmentationClass" / f"{rid}.png").read_bytes()
    assert counts(read_mask(aug / "2007_000032.png")) == {0: 129545, 1: 4734, 15: 866, 255: 5355}
    # The SBD-only id becomes a VOC-palette PNG equal to the .mat array (no 255).
    with Image.open(aug / "2008_000783.png") as im:
        assert im.mode == "P"
        assert np.array_equal(np.array(im.getpalette(), dtype=np.uint8).reshape(-1, 3), voc_colormap(256))
    assert np.array_equal(read_mask(aug / "2008_000783.png"), load_sbd_cls(MAT))
    s = voc_split(voc, "train_aug", mask_dir="SegmentationClassAug")
    assert [(r.id, r.labels) for r in s.records] == [
        ("2007_000032", (1, 15)), ("2007_000039", (20,)), ("2007_000063", (9, 12)), ("2008_000783", (13, 15))]


def test_train_aug_bare_ids_read_their_masks_from_segmentationclassaug(tmp_path):
    """The documented pipeline: voc-aug writes train_aug.txt as bare ids, and the SBD-only id's mask exists only in
    SegmentationClassAug -- it used to be read as a weak image without labels, so `data splits` and training on
    train_aug.txt stopped with "weak image ... has no image-level labels"."""
    from hetseg.cli import main
    from hetseg.data.records import read_split

    voc, sbd = _layout(tmp_path, True)
    for link in [p for p in voc.rglob("*") if p.is_symlink()]:  # a root's file links may not lead outside it
        target = link.resolve()
        link.unlink()
        shutil.copytree(target, link) if target.is_dir() else shutil.copyfile(target, link)
    build_voc_aug(voc, sbd)
    s = read_split(voc / "ImageSets" / "Segmentation" / "train_aug.txt")
    assert [(r.id, r.mask, r.labels) for r in s.records] == [
        ("2007_000032", "SegmentationClass/2007_000032.png", (1, 15)),
        ("2007_000039", "SegmentationClass/2007_000039.png", (20,)),
        ("2007_000063", "SegmentationClass/2007_000063.png", (9, 12)),
        ("2008_000783", "SegmentationClassAug/2008_000783.png", (13, 15))]
    out = tmp_path / "strong_1.txt"
    assert main(["data", "splits", "--split", str(voc / "ImageSets" / "Segmentation" / "train_aug.txt"),
                 "--per-class", "1", "--seed", "0", "--out", str(out)]) == 0
    assert out.is_file()


def test_build_voc_aug_count_check_writes_nothing(tmp_path):
    voc, sbd = _layout(tmp_path, True)
    with pytest.raises(DataError) as e:
        build_voc_aug(voc, sbd, expect_count=10582)
    msg = str(e.value)
    assert "\n" not in msg and "train_aug has 4 ids, expected 10582" in msg and "SBD" in msg
    assert not (voc / "SegmentationClassAug").exists()
    assert not (voc / "ImageSets" / "Segmentation" / "train_aug.txt").exists()


def test_build_voc_aug_missing_mat(tmp_path):
    voc, sbd = _layout(tmp_path, True)
    (sbd / "dataset" / "train.txt").write_text("2007_000032\n2008_000123\n")
    (voc / "JPEGImages" / "2008_000123.jpg").symlink_to(SBD / "img" / "2008_000783.jpg")
    with pytest.raises(DataError, match="2008_000123.mat"):
        build_voc_aug(voc, sbd)


def test_cli_voc_aug(tmp_path, capsys):
    voc, sbd = _layout(tmp_path, True)
    assert cli_voc_aug(str(voc), str(sbd)) == 2  # default expects the real 10,582
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "10582" in err
    assert cli_voc_aug(str(voc), str(sbd), expect_count=None) == 0
    out = capsys.readouterr().out
    assert "train_aug: 4 ids" in out and "1 converted from SBD" in out

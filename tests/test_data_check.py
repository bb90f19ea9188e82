"""``hetseg data check``: every image and mask of a run's splits decoded before training, each bad file found.

A training stage reads image headers only (a JPEG cut short past its header passes) and decodes only the
masks it trains on, so these files used to stop a run mid-stage (src/hetseg/data/check.py).
"""

from __future__ import annotations

import logging
import shutil

import pytest
from conftest import VOC_ROOT

from hetseg.cli import main
from hetseg.data.io import image_size

pytestmark = pytest.mark.usefixtures("fixtures")

JPG32, JPG33 = VOC_ROOT / "JPEGImages" / "2007_000032.jpg", VOC_ROOT / "JPEGImages" / "2007_000033.jpg"
PNG32, PNG33 = VOC_ROOT / "SegmentationClass" / "2007_000032.png", VOC_ROOT / "SegmentationClass" / "2007_000033.png"


def voc_root(tmp_path):
    """Four images (two copies of each fixture pair): a weak split, a strong split of two, a val split of two."""
    root = tmp_path / "ds"
    for sub in ("JPEGImages", "SegmentationClass", "splits"):
        (root / sub).mkdir(parents=True)
    for rid, (jpg, png) in {"a": (JPG32, PNG32), "b": (JPG33, PNG33), "c": (JPG32, PNG32), "d": (JPG33, PNG33)}.items():
        shutil.copyfile(jpg, root / "JPEGImages" / f"{rid}.jpg")
        shutil.copyfile(png, root / "SegmentationClass" / f"{rid}.png")
    line = "JPEGImages/{0}.jpg SegmentationClass/{0}.png\n".format
    (root / "splits" / "weak.txt").write_text("".join(line(r) for r in "abcd"))
    (root / "splits" / "strong.txt").write_text(line("a") + line("b"))
    (root / "splits" / "val.txt").write_text(line("c") + line("d"))
    return root


def args(root, *extra):
    return ["data", "check", f"data.root={root}", "data.num_classes=21", "data.weak_split=splits/weak.txt",
            "data.strong_split=splits/strong.txt", "data.val_split=splits/val.txt", "cls.batch_size=2",
            "seg.batch_size=2", "deconv.batch_size=2", *extra]


def test_a_sound_dataset_passes_and_each_file_is_decoded_once(tmp_path, capsys):
    root = voc_root(tmp_path)
    assert main(args(root)) == 0
    out = capsys.readouterr().out
    # the weak split lists all four images; strong and val repeat them with the same masks and labels
    assert "data check: 4 images and 4 masks decoded, no problem found" in out, out
    assert "data.weak_split: 4 images" in out and "data.val_split: 2 images" in out, out
    # one image with the same mask in a second split is still decoded (a review's finding: keyed by the mask)
    (root / "splits" / "other.txt").write_text("JPEGImages/b.jpg SegmentationClass/c.png\n")
    assert main(args(root, "--split", "val", "--split", "splits/other.txt")) == 2  # b's image is not c's size
    err = capsys.readouterr().err
    assert "b.jpg" in err and "c.png" in err and "bad files" not in err, err


def test_every_bad_file_is_found_and_the_first_is_named_on_one_line(tmp_path, capsys, caplog):
    root = voc_root(tmp_path)
    half = root / "JPEGImages" / "b.jpg"
    half.write_bytes(JPG33.read_bytes()[: JPG33.stat().st_size // 2])
    assert image_size(half) == (366, 500)  # its header is whole: a stage's header check lets it through
    # d's mask holds a value above C = 21 (as if a colour palette index had leaked in)
    from PIL import Image
    import numpy as np

    m = np.array(Image.open(PNG33))
    m[0, 0] = 40
    Image.fromarray(m).save(root / "SegmentationClass" / "d.png")
    before = sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*"))
    with caplog.at_level(logging.INFO, logger="hetseg.data.check"):
        assert main(args(root)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hetseg: error: ") and "Traceback" not in err, err
    assert "b.jpg: cannot decode image" in err and "truncated" in err and "(1 of 2 bad files" in err, err
    assert "; fix: re-download or re-encode the file" in err, err
    logged = "\n".join(r.getMessage() for r in caplog.records)  # hetseg -v lists each bad file
    assert "b.jpg" in logged and "d.png" in logged and "40" in logged, logged
    assert sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*")) == before  # nothing written or moved


def test_labels_that_disagree_with_a_mask_are_refused(tmp_path, capsys):
    root = voc_root(tmp_path)
    (root / "labels.json").write_text('{"a": [1, 15], "b": [1, 15], "c": [1, 15], "d": [2]}')  # b, d: [1]
    assert main(args(root)) == 2
    err = capsys.readouterr().err
    assert "b.png: holds classes [1], but the labels file gives image 'b' [1, 15]" in err, err
    # d (val) disagrees too, but training holds only the masks it trains on (the strong split) to their labels
    assert "bad files" not in err, err


def test_the_method_decides_which_splits_are_read(tmp_path, capsys):
    """DeconvNet reads no weak set: a missing weak split does not concern it; DecoupledNet's check refuses it."""
    root = voc_root(tmp_path)
    (root / "splits" / "weak.txt").unlink()
    assert main(args(root, "--method", "deconvnet")) == 0
    out = capsys.readouterr().out
    assert "data.weak_split" not in out and "data check: 4 images and 4 masks decoded" in out, out
    assert main(args(root)) == 2
    err = capsys.readouterr().err
    assert err.startswith("hetseg: error: data.weak_split=splits/weak.txt: no such split file"), err
    # what training refuses before its first step, the check refuses too (a review's finding)
    too_big = [a if a != "deconv.batch_size=2" else "deconv.batch_size=4096" for a in args(root, "--method", "deconvnet")]
    assert main(too_big) == 2
    assert "stage 'deconv':" in capsys.readouterr().err
    # --split checks the named split alone
    assert main(args(root, "--split", "splits/strong.txt")) == 0
    assert "data check: 2 images and 2 masks decoded" in capsys.readouterr().out


def test_every_method_checks_the_splits_it_trains_on():
    """Each method's data_splits name config settings and include the mask splits it trains on."""
    from hetseg.config import Config
    from hetseg.methods import METHODS

    cfg = Config()
    for name, method in METHODS.items():
        settings = method.data_splits(cfg)
        for key in settings:
            section, field = key.split(".")
            assert isinstance(getattr(getattr(cfg, section), field), str), (name, key)
        assert set(method.mask_splits(cfg)) <= set(settings), name


@pytest.fixture(scope="module")
def tiny_scenes(tmp_path_factory):
    from conftest import make_scenes

    return make_scenes(tmp_path_factory, "data_check_scenes", seed=5, num_train=16, num_val=4)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_file_corrupt_past_its_header_mid_stage_is_one_line_naming_data_check(tiny_scenes, tmp_path, capsys,
                                                                                   workers):
    """Found only when a batch draws it; from a DataLoader worker it was torch's RuntimeError, a traceback
    of 90 lines (every paper config sets data.workers: 8)."""
    root = tmp_path / "scenes"
    shutil.copytree(tiny_scenes, root)
    bad = root / (root / "splits" / "train_weak.txt").read_text().split()[2]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    overrides = [f"data.root={root}", f"data.workers={workers}", "cls.steps=2", "cls.batch_size=8"]
    assert main(["train", "--run-dir", str(tmp_path / "run"), "--stage", "cls", "--no-progress", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hetseg: error: {bad}: cannot decode image") and "Traceback" \
        not in err, err
    assert err.rstrip().endswith("then hetseg data check with the same --config and settings finds any other bad "
                                 "file, and the same command resumes"), err
    assert main(["data", "check", *overrides]) == 2  # the check finds it before a rerun
    assert f"{bad}: cannot decode image" in capsys.readouterr().err

"""Split files and image-level labels against the real lists of irn, psa and UniMatch (PROVENANCE.md §5-6)."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from conftest import FIXTURES, VOC_ROOT

from hetseg.data.records import (Record, Split, load_cls_labels_npy, per_class_subset, read_split, split_checksum,
                                 write_split)

pytestmark = pytest.mark.usefixtures("fixtures")

IRN = FIXTURES / "weak_labels" / "irn" / "voc12"
PSA = FIXTURES / "weak_labels" / "psa" / "voc12"
UNI = FIXTURES / "semi_splits" / "unimatch" / "splits" / "pascal"
SETS = VOC_ROOT / "ImageSets" / "Segmentation"


@pytest.fixture(scope="module")
def cls_irn():
    return load_cls_labels_npy(IRN / "cls_labels.npy")


def ids(split: Split) -> list[str]:
    return [r.id for r in split.records]


def test_list_formats_parse_to_the_same_ids(cls_irn):
    bare = read_split(SETS / "train.txt", check_files=False, labels=cls_irn)  # irn / VOC ImageSets
    psa = read_split(PSA / "train.txt", root=VOC_ROOT, check_files=False, labels=cls_irn)  # "/JPEGImages/..."
    assert (PSA / "train.txt").read_text().startswith("/JPEGImages/2007_000032.jpg /SegmentationClassAug/")
    assert len(bare) == len(psa) == 1464 and ids(bare) == ids(psa)
    assert psa.records[0] == Record("2007_000032", "JPEGImages/2007_000032.jpg", (1, 15),
                                    "SegmentationClassAug/2007_000032.png")  # leading '/' = root-relative
    uni = read_split(UNI / "1464" / "labeled.txt", check_files=False, labels=cls_irn)
    assert sorted(ids(uni)) == ids(bare)
    val = read_split(UNI / "val.txt", check_files=False, labels=cls_irn)
    assert (UNI / "val.txt").read_text().endswith("\n")
    assert sorted(ids(val)) == ids(read_split(SETS / "val.txt", check_files=False, labels=cls_irn))
    assert len(val) == 1449 and not set(ids(val)) & set(ids(bare))


def test_unimatch_92_without_trailing_newline(cls_irn):
    text = (UNI / "92" / "labeled.txt").read_text()
    assert not text.endswith("\n") and text.count("\n") == 91
    lab = read_split(UNI / "92" / "labeled.txt", check_files=False, labels=cls_irn)
    assert len(lab) == 92 and lab.root == UNI.parents[1]  # the parent of splits/
    assert lab.records[-1].id == "2008_004822"  # the unterminated last line is kept
    assert all(r.mask == f"SegmentationClass/{r.id}.png" for r in lab.records)
    assert set(ids(lab)) <= set(ids(read_split(SETS / "train.txt", check_files=False, labels=cls_irn)))
    unl = read_split(UNI / "92" / "unlabeled.txt", check_files=False, labels=cls_irn)
    aug = read_split(IRN / "train_aug.txt", root=VOC_ROOT, check_files=False, labels=cls_irn)
    assert len(unl) == 10490 and len(aug) == 10582
    assert not set(ids(lab)) & set(ids(unl)) and set(ids(lab)) | set(ids(unl)) == set(ids(aug))


def test_cls_labels_int_and_str_keys_agree(cls_irn):
    raw_irn = np.load(IRN / "cls_labels.npy", allow_pickle=True).item()
    raw_psa = np.load(PSA / "cls_labels.npy", allow_pickle=True).item()
    assert type(next(iter(raw_irn))) is np.int32 and type(next(iter(raw_psa))) is str
    assert raw_irn[np.int32(2007000063)].shape == (20,) and raw_irn[np.int32(2007000063)].dtype == np.float32
    psa = load_cls_labels_npy(PSA / "cls_labels.npy")
    assert len(cls_irn) == 12031 and cls_irn == psa
    # Mask indices (vector index + 1): 2007_000063 is chair (9) and dog (12).
    assert {k: cls_irn[k] for k in ("2007_000032", "2007_000033", "2007_000039", "2007_000063", "2007_000129",
                                    "2008_000783")} == {
        "2007_000032": (1, 15), "2007_000033": (1,), "2007_000039": (20,), "2007_000063": (9, 12),
        "2007_000129": (2, 15), "2008_000783": (13, 15)}
    assert Counter(len(v) for v in cls_irn.values()) == {1: 7176, 2: 3479, 3: 1090, 4: 233, 5: 49, 6: 4}


def _fixture_records() -> list[Record]:
    strong = [Record(i, f"JPEGImages/{i}.jpg", labs, f"SegmentationClass/{i}.png") for i, labs in (
        ("2007_000032", (1, 15)), ("2007_000033", (1,)), ("2007_000039", (20,)))]
    weak = [Record(i, f"JPEGImages/{i}.jpg", labs) for i, labs in (("2007_000063", (9, 12)), ("2007_000129", (2, 15)))]
    return strong + weak


def test_write_read_round_trip_and_stable_checksum(tmp_path):
    root = tmp_path / "voc"
    root.mkdir()
    for d in ("JPEGImages", "SegmentationClass"):
        (root / d).symlink_to(VOC_ROOT / d, target_is_directory=True)
    recs = _fixture_records()
    (root / "labels.json").write_text('{"2007_000063": [9, 12], "2007_000129": [15, 2]}\n')
    c1 = write_split(root / "splits" / "mixed.txt", recs)
    first = (root / "splits" / "mixed.txt").read_bytes()
    assert first.decode().splitlines()[0] == "JPEGImages/2007_000032.jpg SegmentationClass/2007_000032.png"
    back = read_split(root / "splits" / "mixed.txt", num_classes=21)  # strong labels from masks, weak from JSON
    assert back.records == recs and back.name == "mixed" and back.root == root
    assert back.checksum() == c1 == split_checksum(recs)
    assert write_split(root / "splits" / "mixed.txt", back.records) == c1
    assert (root / "splits" / "mixed.txt").read_bytes() == first  # byte-identical rewrite
    # Stable across machines: sha256 of the canonical text only (not the root), i.e. of
    # 'JPEGImages/2007_000032.jpg SegmentationClass/2007_000032.png 1,15\n' ... 'JPEGImages/2007_000129.jpg - 2,15\n'
    # (checked independently with sha256sum).
    assert c1 == "71198293530f6824613537e9c284e79c496a5553f1c1e95eca0e1b15609b4246"
    weak_sum = write_split(root / "splits" / "weak.txt", recs, weak=True)
    assert weak_sum == back.weak().checksum() != c1


def _synthetic(n=300, seed=0) -> list[Record]:
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        # Class 7 is rare (3 images) to exercise "take all when fewer than k".
        labs = sorted(set(rng.sample(range(1, 7), rng.choice([1, 1, 2, 3]))) | ({7} if i in (5, 77, 150) else set()))
        recs.append(Record(f"im{i:04d}", f"JPEGImages/im{i:04d}.jpg", tuple(labs),
                           None if i % 10 == 9 else f"SegmentationClass/im{i:04d}.png"))
    return recs


@pytest.mark.parametrize("k", [1, 5, 25])
def test_per_class_subset_contract(k):
    recs = _synthetic()
    sel = per_class_subset(recs, k, num_classes=8, seed=3)
    assert all(r.strong for r in sel)  # only records with masks are eligible
    assert sel == [r for r in recs if r in sel]  # input order
    for c in range(1, 8):
        available = sum(1 for r in recs if r.strong and c in r.labels)
        assert sum(1 for r in sel if c in r.labels) >= min(k, available)
    assert per_class_subset(recs, k, 8, seed=3) == sel  # deterministic for a seed
    assert per_class_subset(recs, k, 8, seed=4) != sel  # and seed-dependent


def test_per_class_subset_on_voc_train_labels(cls_irn):
    train = read_split(SETS / "train.txt", check_files=False, labels=cls_irn)
    strong = [Record(r.id, r.image, r.labels, f"SegmentationClass/{r.id}.png") for r in train.records]
    sel = per_class_subset(strong, 5, num_classes=21, seed=0)
    assert all(sum(1 for r in sel if c in r.labels) >= 5 for c in range(1, 21))
    assert len(sel) < 100  # images count for every class they contain


def test_fashion_class_names_follow_fashion_mnist_label_order():
    """Mask index = Fashion-MNIST label + 1; the official label order has Sandal (5) before Shirt (6)."""
    from hetseg.data.classes import FASHION_CLASSES, FASHION_SOURCE, FASHION_TARGET

    official = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                "Ankle boot"]
    assert list(FASHION_CLASSES) == ["background", *official]
    assert {FASHION_CLASSES[i] for i in FASHION_SOURCE} == {"T-shirt/top", "Trouser", "Sandal", "Sneaker", "Bag"}
    assert {FASHION_CLASSES[i] for i in FASHION_TARGET} == {"Pullover", "Dress", "Coat", "Shirt", "Ankle boot"}


def test_cli_data_splits_writes_per_class_split_and_checksum(tmp_path, capsys):
    """`hetseg data splits` on a masked split: every class gets >= k images, checksum file matches."""
    import numpy as np

    from hetseg.cli import main
    from hetseg.data.records import read_split as _read
    from hetseg.palette import save_index_png

    rng = np.random.default_rng(0)
    (tmp_path / "JPEGImages").mkdir()
    lines = []
    for i in range(30):
        labels = rng.choice([1, 2, 3], size=rng.integers(1, 3), replace=False)
        mask = np.zeros((8, 8), np.uint8)
        for j, c in enumerate(labels):
            mask[j * 3:(j + 1) * 3] = c
        save_index_png(tmp_path / "SegmentationClass" / f"im{i}.png", mask)
        (tmp_path / "JPEGImages" / f"im{i}.jpg").write_bytes(b"")  # only existence is checked here
        lines.append(f"JPEGImages/im{i}.jpg SegmentationClass/im{i}.png")
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "pool.txt").write_text("\n".join(lines))
    assert main(["data", "splits", "--split", str(tmp_path / "splits" / "pool.txt"), "--per-class", "2",
                 "--seed", "1", "--num-classes", "4"]) == 0
    out = tmp_path / "splits" / "strong_2_s1.txt"
    chosen = _read(out, tmp_path, num_classes=4)
    for c in (1, 2, 3):
        assert sum(c in r.labels for r in chosen.records) >= 2
    assert (tmp_path / "splits" / "strong_2_s1.sha256").read_text().split()[0] == chosen.checksum()
    assert chosen.checksum() in capsys.readouterr().out

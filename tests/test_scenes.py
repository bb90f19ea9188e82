"""fashion-scenes: determinism, VOC layout, masks and void band, splits, metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hetseg.data.classes import FASHION_SOURCE, FASHION_TARGET
from hetseg.data.records import read_split
from hetseg.data.scenes import generate_scenes, load_fashion_mnist
from hetseg.data.scenes_render import void_band
from hetseg.data.scenes_stats import best_global_threshold, channels
from hetseg.errors import DataError

from conftest import FMNIST_DIR

N_TRAIN, N_VAL, SIZE = 40, 20, 64


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    if not FMNIST_DIR.is_dir():
        pytest.skip(f"Fashion-MNIST not at {FMNIST_DIR} (apt-get install dataset-fashion-mnist)")
    base = tmp_path_factory.mktemp("scenes")
    out = {}
    for name, seed, workers in (("a", 0, 1), ("b", 0, 2), ("c", 1, 1)):
        out[name] = (base / name, generate_scenes(base / name, seed=seed, num_train=N_TRAIN, num_val=N_VAL,
                                                  size=SIZE, fashion_mnist_dir=FMNIST_DIR, workers=workers))
    return out


def files(root, pattern):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.glob(pattern))}


def test_same_seed_byte_identical_any_workers_other_seed_differs(gen):
    (a, _), (b, _), (c, _) = gen["a"], gen["b"], gen["c"]
    for pattern in ("JPEGImages/*.jpg", "SegmentationClass/*.png", "splits/*.txt", "labels.json", "items.json"):
        fa = files(a, pattern)
        assert fa and fa == files(b, pattern), pattern
    assert len(files(a, "JPEGImages/*.jpg")) == N_TRAIN + N_VAL
    ja, jc = files(a, "JPEGImages/*.jpg"), files(c, "JPEGImages/*.jpg")
    assert ja.keys() == jc.keys() and all(ja[k] != jc[k] for k in ja)
    # The benches' data checksum names the content: equal for a and b (other worker count, other
    # generation time), different for c.
    from hetseg.bench.provenance import dataset_info

    ma, mb, mc = (dataset_info(r)["meta_sha256"] for r in (a, b, c))
    assert ma == mb != mc and json.loads((a / "meta.json").read_text()) != json.loads((b / "meta.json").read_text())


def test_masks_are_palette_pngs_with_void_band(gen):
    root, _ = gen["a"]
    labels = json.loads((root / "labels.json").read_text())
    for p in sorted((root / "SegmentationClass").glob("*.png")):
        im = Image.open(p)
        assert im.mode == "P" and im.size == (SIZE, SIZE)
        m = np.asarray(im)
        assert set(np.unique(m).tolist()) <= set(range(11)) | {255}
        assert labels[p.stem] == sorted(set(np.unique(m).tolist()) - {0, 255})
        assert labels[p.stem] and (m == 255).any()
        # no two 4-adjacent non-void pixels carry different classes: every boundary is voided
        for a, b in ((m[1:], m[:-1]), (m[:, 1:], m[:, :-1])):
            assert not ((a != b) & (a != 255) & (b != 255)).any()
        assert (m == 255).mean() < 0.1
    img = np.asarray(Image.open(root / "JPEGImages/train_000000.jpg"))
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8


def test_void_band_is_one_pixel_on_the_upper_side():
    inst = np.zeros((8, 8), np.uint8)
    inst[1:6, 1:6] = 1
    inst[3:7, 3:7] = 2  # on top of 1
    band = void_band(inst)
    ring2 = np.zeros_like(band)
    ring2[3:7, 3:7] = True
    ring2[4:6, 4:6] = False
    assert (band & (inst == 2)).sum() == ring2.sum() and (band[ring2]).all()
    # instance 1 is voided only against the background, not where it meets 2 (2's rim carries it)
    assert not band[2, 2] and band[1, 1:6].all() and not band[2, 3]
    assert not band[inst == 0].any()


def test_items_disjoint_between_train_and_val(gen):
    root, _ = gen["a"]
    items = json.loads((root / "items.json").read_text())
    tr = [i for k, v in items.items() if k.startswith("train_") for i in v]
    va = [i for k, v in items.items() if k.startswith("val_") for i in v]
    assert len(set(tr)) == len(tr) and len(set(va)) == len(va)  # no instance reused within a split
    train_x, _, test_x, _ = load_fashion_mnist(FMNIST_DIR)
    # val items are Fashion-MNIST *test* images: none equals a train item used here
    trh = {train_x[i].tobytes() for i in tr}
    assert not any(test_x[i].tobytes() in trh for i in va)


def test_splits_contracts_and_checksums(gen):
    root, meta = gen["a"]
    splits = {name: read_split(root / info["file"], num_classes=11) for name, info in meta["splits"].items()}
    for name, info in meta["splits"].items():
        assert splits[name].checksum() == info["checksum"] and len(splits[name]) == info["size"]
    assert len(splits["train_weak"]) == N_TRAIN and not any(r.strong for r in splits["train_weak"].records)
    assert len(splits["train_full"]) == N_TRAIN and all(r.strong for r in splits["train_full"].records)
    assert len(splits["val"]) == N_VAL and all(r.id.startswith("val_") for r in splits["val"].records)
    full = splits["train_full"].records
    for k in (5, 10, 25):
        sel = splits[f"strong_{k}"].records
        assert all(r.strong and r.id.startswith("train_") for r in sel)
        for c in range(1, 11):
            avail = sum(c in r.labels for r in full)
            assert sum(c in r.labels for r in sel) >= min(k, avail)
    for name, allowed, strong in (("transfer_source_train", FASHION_SOURCE, True),
                                  ("transfer_target_train", FASHION_TARGET, False),
                                  ("transfer_source_val", FASHION_SOURCE, True),
                                  ("transfer_target_val", FASHION_TARGET, True)):
        recs = splits[name].records
        assert recs and all(set(r.labels) <= set(allowed) and r.strong == strong for r in recs), name
    assert (root / "ImageSets/Segmentation/val.txt").read_text().split() == [f"val_{i:06d}" for i in range(N_VAL)]
    assert (root / "classes.txt").read_text().splitlines()[:2] == ["background", "T-shirt/top"]


def test_meta_statistics(gen):
    root, meta = gen["a"]
    assert json.loads((root / "meta.json").read_text())["seed"] == 0
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        s = meta["stats"][split]
        assert s["images"] == n and sum(s["objects_per_image"]["histogram"].values()) == n
        assert 1 <= s["objects_per_image"]["mean"] <= 3 and 1 <= s["classes_per_image"]["mean"] <= 3
        assert 0 < s["foreground_fraction"] < 1 and 0 < s["void_fraction"] < 0.1
        assert len(s["per_class_images"]) == 11 and s["per_class_images"][0] == 0
        assert sum(s["per_class_pixels"]) > 0
    thr = meta["nontriviality"]["best_global_threshold_val"]
    assert 0 < thr["fg_iou"] < 0.6 and thr["channel"] in ("grey", "R", "G", "B")
    assert isinstance(meta["generation_seconds"], float)  # recorded, never asserted on (no timing tests)


def test_threshold_helpers():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert (channels(img)[0] == np.asarray(Image.fromarray(img).convert("L"))).all()
    hist = np.zeros((2, 4, 256), np.int64)
    hist[0, 2, :101] = 1  # background: G <= 100
    hist[1, 2, 101:] = 3  # foreground: G > 100 -> separable on G only
    hist[:, [0, 1, 3]] = 1  # flat, inseparable on the other channels
    info = best_global_threshold(hist)
    assert info["fg_iou"] == 1.0 and info["rule"] == "G > 100"


def test_missing_fashion_mnist_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as e:
        load_fashion_mnist(tmp_path / "nowhere")
    assert "nowhere" in str(e.value) and "--fashion-mnist-dir" in str(e.value)


@pytest.mark.parametrize("damage", ["deflate", "header"])
def test_a_corrupt_fashion_mnist_file_is_named(tmp_path, damage):
    """A .gz whose deflate stream is damaged raised zlib.error (not an OSError) as a 31-line traceback."""
    import gzip

    good = gzip.compress(b"\0\0\x08\x01" + (3).to_bytes(4, "big") + bytes(3))
    bad = good[:10] + b"\xff" * 64 if damage == "deflate" else gzip.compress(b"nope")
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / f"{name}.gz").write_bytes(bad)
    with pytest.raises(DataError, match="not a readable idx file") as e:
        load_fashion_mnist(tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(e.value) and "re-download" in str(e.value)


def test_fashion_mnist_folder_from_the_environment(tmp_path, monkeypatch):
    """``make demo FMNIST=DIR`` reaches every command through HETSEG_FASHION_MNIST; an explicit folder wins."""
    monkeypatch.setenv("HETSEG_FASHION_MNIST", str(tmp_path / "from_env"))
    with pytest.raises(DataError, match="from_env"):
        load_fashion_mnist()
    with pytest.raises(DataError, match="explicit"):
        load_fashion_mnist(tmp_path / "explicit")
    monkeypatch.setenv("HETSEG_FASHION_MNIST", str(FMNIST_DIR))
    assert load_fashion_mnist()[1].shape == (60000,)


def test_pretraining_items_single_item_train_pool_deterministic():
    """Stage "pre" images: one Fashion-MNIST *train* item each (t10k items build val scenes), its
    class as the label, a fresh rendering per epoch, the same bytes for the same (seed, epoch, index)."""
    if not FMNIST_DIR.is_dir():
        pytest.skip(f"Fashion-MNIST not at {FMNIST_DIR}")
    from hetseg.data.items import item_splits
    from hetseg.data.scenes_render import render_scene

    train, held = item_splits(str(FMNIST_DIR), SIZE, seed=3, holdout=100)
    x, y, _, _ = load_fashion_mnist(FMNIST_DIR)
    assert len(train) + len(held) == len(x) and len(held) == 100
    assert np.array_equal(held.items, x[-100:]) and np.array_equal(train.labels, y[:-100])
    img, label = train[5]
    assert img.shape == (3, SIZE, SIZE) and int(label) == int(y[5])
    assert torch.equal(train[5][0], img)
    train.set_epoch(1)
    assert not torch.equal(train[5][0], img)  # a new rendering every epoch
    scene = render_scene(train.rng(5), x[5:6], y[5:6], SIZE, count=1)
    assert set(np.unique(scene.mask)) - {0, 255} == {int(y[5]) + 1} and scene.classes == [int(y[5]) + 1]
    held.set_epoch(7)
    assert torch.equal(held[0][0], item_splits(str(FMNIST_DIR), SIZE, seed=3, holdout=100)[1][0][0])


def test_a_killed_regeneration_is_never_taken_for_a_complete_set(gen, tmp_path, monkeypatch):
    """meta.json is the set's completion marker: from the start of a (re)generation it is a stub, and
    only the finished run writes the full one (atomically), so an interrupted run is regenerated by
    the benches and the demo (``is_complete``), never used half-written."""
    import shutil

    import hetseg.data.scenes as scenes
    from hetseg.bench.provenance import dataset_info

    root = tmp_path / "a"
    shutil.copytree(gen["a"][0], root)
    assert scenes.is_complete(root)

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    with monkeypatch.context() as m:
        m.setattr(scenes, "_write_lists", killed)  # dies after the images, before the lists and meta
        with pytest.raises(RuntimeError):
            generate_scenes(root, seed=0, num_train=N_TRAIN, num_val=N_VAL, size=SIZE, fashion_mnist_dir=FMNIST_DIR)
    assert not scenes.is_complete(root) and not scenes.is_complete(tmp_path / "absent")
    generate_scenes(root, seed=0, num_train=N_TRAIN, num_val=N_VAL, size=SIZE, fashion_mnist_dir=FMNIST_DIR)
    assert scenes.is_complete(root) and dataset_info(root)["meta_sha256"] == dataset_info(gen["a"][0])["meta_sha256"]


def _unseen_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "unseen_item_scenes.py"
    spec = importlib.util.spec_from_file_location("unseen_item_scenes", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_unseen_pool_keeps_the_tail_items_no_training_scene_uses(tmp_path):
    """Only train scenes' items are excluded (a val scene's indices are t10k items: another pool),
    only from the last ``holdout`` items, and a holdout outside (0, n) is refused."""
    mod = _unseen_script()
    (tmp_path / "items.json").write_text(json.dumps({"train_000000": [95, 3], "train_000001": [97],
                                                     "val_000000": [96, 98]}))
    assert mod.unseen_pool(tmp_path, 100, 6).tolist() == [94, 96, 98, 99]
    with pytest.raises(SystemExit, match="fix:"):
        mod.unseen_pool(tmp_path, 100, 100)


def test_unseen_item_scenes_use_only_items_no_one_trained_on(gen, tmp_path):
    """scripts/unseen_item_scenes.py: every item is in the backbone's held-out tail and in no training
    scene; no file of the data set changes; the same call renders the same bytes."""
    import shutil

    mod = _unseen_script()
    roots = [tmp_path / "one", tmp_path / "two"]
    for r in roots:
        shutil.copytree(gen["a"][0], r)
    before = files(roots[0], "**/*.*")  # files only: the data set's folders have no dot
    recs = [mod.render(r, num=30, seed=0, fashion_mnist_dir=str(FMNIST_DIR)) for r in roots]
    after = files(roots[0], "**/*.*")
    assert all(after[k] == v for k, v in before.items())  # nothing of the data set is touched
    new = sorted(set(after) - set(before))
    assert sum(k.startswith("JPEGImages/unseen_") for k in new) == 30
    assert recs[0] == recs[1] and files(roots[1], "**/unseen_*") == files(roots[0], "**/unseen_*")
    used = {i for k, v in json.loads((roots[0] / "items.json").read_text()).items() if k.startswith("train_")
            for i in v}
    n = len(load_fashion_mnist(FMNIST_DIR)[0])
    scene_items = json.loads((roots[0] / "splits/unseen_items.json").read_text())["scene_items"]
    drawn = [i for v in scene_items.values() for i in v]
    assert len(scene_items) == 30 and drawn and all(n - 2000 <= i < n and i not in used for i in drawn)
    sp = read_split(roots[0] / "splits/unseen_items.txt", roots[0])
    assert len(sp.strong()) == 30 and all(r.labels for r in sp.records)  # every scene has an item
    with pytest.raises(SystemExit, match="not a fashion-scenes folder"):
        mod.render(tmp_path, num=1, fashion_mnist_dir=str(FMNIST_DIR))


def test_a_finished_set_is_never_replaced_by_one_of_other_settings(gen, tmp_path, capsys):
    """`data scenes` on a finished set used to delete it first (split files made from it too) and draw one of
    the new size under the runs trained on it. Other settings: refused, nothing touched; the same settings:
    drawn again byte for byte, and a split file of the user's in splits/ stays."""
    import shutil

    from hetseg.cli import main

    root = tmp_path / "a"
    shutil.copytree(gen["a"][0], root)
    (root / "splits" / "mine.txt").write_text("JPEGImages/train_000000.jpg\n")
    before = {k: v for k, v in files(root, "**/*.*").items()}
    args = ["data", "scenes", "--out", str(root), "--seed", "0", "--num-val", str(N_VAL), "--size", str(SIZE),
            "--fashion-mnist-dir", str(FMNIST_DIR)]
    assert main(args + ["--num-train", str(N_TRAIN // 2)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"num_train {N_TRAIN}); nothing was changed; fix: choose another output folder" in err
    assert files(root, "**/*.*") == before
    generate_scenes(root, seed=0, num_train=N_TRAIN, num_val=N_VAL, size=SIZE, fashion_mnist_dir=FMNIST_DIR)
    after = files(root, "**/*.*")
    assert after.pop("meta.json") != b"" and before.pop("meta.json") != b""  # its generation time differs
    assert after == before


def test_every_fashion_scenes_bench_makes_the_default_set_only_where_there_is_no_data_set(tmp_path, monkeypatch):
    """ensure_bench_data: the default folder without a finished set, or an unfinished set anywhere, gets the
    default set; a user's data set (files, no fashion-scenes meta.json, even an unreadable one) is used as
    it is; another missing or empty folder is one error line (an unmounted --data was filled with scenes).
    The transfer bench skipped this step, so a clean clone's `make bench-transfer` stopped at "dataset root
    not found" instead of re-reporting its records."""
    import hetseg.demo as demo
    from hetseg.bench.transfer import run_transfer
    from hetseg.errors import HetsegError

    monkeypatch.chdir(tmp_path)
    made = []
    monkeypatch.setattr(demo, "ensure_scenes", lambda root, seed=0, *a: made.append(Path(root)))
    voc = tmp_path / "voc"
    (voc / "JPEGImages").mkdir(parents=True)
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "meta.json").write_text("{not json")
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "meta.json").write_text('{"dataset": "fashion-scenes", "incomplete": true}')
    for root in (voc, odd, stub, Path("data/fashion-scenes")):
        demo.ensure_bench_data(root)
    assert made == [stub, Path("data/fashion-scenes")]
    (tmp_path / "empty").mkdir()
    for root in (tmp_path / "empty", tmp_path / "absent"):
        with pytest.raises(HetsegError, match="no data set there .* fix: give the root of a data set, or make "
                                              "fashion-scenes there first"):
            demo.ensure_bench_data(root)
    assert not (tmp_path / "absent").exists() and len(made) == 2
    (tmp_path / "afile").write_text("x")  # its fix used to say 'hetseg data scenes --out afile', which fails
    with pytest.raises(HetsegError, match="a file, not a data set folder"):
        demo.ensure_bench_data(tmp_path / "afile")

    class Made(Exception):
        pass

    def stop(root, seed=0, *a):
        raise Made(str(root))

    monkeypatch.setattr(demo, "ensure_scenes", stop)
    with pytest.raises(Made, match="fashion-scenes"):
        run_transfer("cpu", [0], str(tmp_path / "out"), "data/fashion-scenes", str(tmp_path / "runs"))
    assert not (tmp_path / "out").exists()  # a bench stopped before its work leaves no results folder

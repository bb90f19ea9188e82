"""fashion-scenes: the embedded dataset (docs/DECISIONS.md, "fashion-scenes"), written in VOC layout.

Real Fashion-MNIST items (28×28 grey, 10 classes) pasted 1–3 per scene onto cluttered colour
backgrounds; see :mod:`hetseg.data.scenes_render` for the image model and
:mod:`hetseg.data.scenes_stats` for the statistics written to ``meta.json``.

Determinism: every scene draws from its own generator seeded by ``(seed, split, index)``, and its
candidate items come from one seeded permutation per split, so the bytes of every file are the same
for any number of worker processes. Train scenes use Fashion-MNIST *train* items, val scenes its
*test* items, so no item instance is shared between train and val.
"""

from __future__ import annotations

import gzip
import io
import json
import multiprocessing
import os
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from hetseg.data.classes import FASHION_CLASSES, FASHION_SOURCE, FASHION_TARGET
from hetseg.data.records import Record, per_class_subset, save_labels_json, write_split
from hetseg.data.scenes_render import (ITEM_COUNT_P, ITEM_SIDE, MASK_THRESHOLD, MIN_VISIBLE, VOID, Scene,
                                       render_scene)
from hetseg.data.scenes_stats import best_global_threshold, summarise, threshold_histograms
from hetseg.errors import DataError
from hetseg.io_atomic import parse_json, write_text
from hetseg.palette import save_index_png

DEFAULT_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FMNIST_ENV = "HETSEG_FASHION_MNIST"  # another folder for every command (make passes FMNIST=DIR through it)
FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")
SPLIT_CODES = {"train": 0, "val": 1}
CANDIDATES = 3  # item slots reserved per scene (the scene uses the first 1–3)
STRONG_K = (5, 10, 25)
NUM_CLASSES = len(FASHION_CLASSES)
_CHUNK = 250  # scenes per worker task


def _read_idx(directory: Path, name: str) -> np.ndarray:
    """One idx file (``name`` or ``name.gz``) -> uint8 array with the header's shape."""
    path = next((p for p in (directory / f"{name}.gz", directory / name) if p.is_file()), None)
    if path is None:
        raise DataError(directory, f"Fashion-MNIST file '{name}.gz' not found",
                        "apt-get install dataset-fashion-mnist, or pass --fashion-mnist-dir DIR "
                        "holding the four idx files")
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        magic = int.from_bytes(data[:4], "big")
        ndim = magic & 0xFF
        if magic >> 8 != 0x08 or ndim not in (1, 3):  # 0x08 = unsigned byte payload
            raise ValueError(f"bad magic number {magic:#x}")
        shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
        return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, ValueError, EOFError, zlib.error) as e:  # zlib.error: a corrupt deflate stream inside the .gz
        raise DataError(path, f"not a readable idx file ({e})", "re-download or reinstall Fashion-MNIST") from None


def load_fashion_mnist(directory: str | Path | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """-> (train_x (60000, 28, 28) uint8, train_y (60000,) uint8 in 0..9, test_x (10000, 28, 28), test_y)."""
    d = Path(directory or os.environ.get(FMNIST_ENV) or DEFAULT_FMNIST_DIR)
    if not d.is_dir():
        raise DataError(d, "Fashion-MNIST directory not found",
                        f"apt-get install dataset-fashion-mnist, or pass --fashion-mnist-dir DIR (or set {FMNIST_ENV})")
    arrays = [_read_idx(d, name) for name in FMNIST_FILES]
    for x, y, name in ((arrays[0], arrays[1], FMNIST_FILES[0]), (arrays[2], arrays[3], FMNIST_FILES[2])):
        if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(y) or (y.size and y.max() > 9):
            raise DataError(d / name, f"unexpected shapes {x.shape} / {y.shape}", "use the official idx files")
    return tuple(arrays)


def scene_id(split: str, index: int) -> str:
    """The id of scene ``index`` of ``split`` (``train_000042``): its file stem and its split-file line."""
    return f"{split}_{index:06d}"


def write_scene(out: Path, sid: str, sc: Scene) -> tuple[bytes, list[int]]:
    """Store one rendered scene as every fashion-scenes image is stored (JPEG quality 95, palette PNG
    mask) under ``out``; returns (the JPEG bytes, the scene's labels: mask indices but 0 and void)."""
    buf = io.BytesIO()
    Image.fromarray(sc.image).save(buf, "JPEG", quality=95)
    (out / "JPEGImages" / f"{sid}.jpg").write_bytes(buf.getvalue())
    save_index_png(out / "SegmentationClass" / f"{sid}.png", sc.mask)
    return buf.getvalue(), sorted({int(v) for v in np.unique(sc.mask) if v not in (0, VOID)})


def candidate_order(rng: np.random.Generator, n_items: int, n: int) -> np.ndarray:
    """(n, CANDIDATES) indices into an item pool of ``n_items``: seeded permutations, concatenated
    when there are more slots than items."""
    reps = -(-n * CANDIDATES // n_items)
    order = np.concatenate([rng.permutation(n_items) for _ in range(max(reps, 1))])[: n * CANDIDATES]
    return order.reshape(n, CANDIDATES)


def _render_chunk(task: tuple) -> tuple[list[dict], np.ndarray]:
    """Worker: render, write and summarise scenes ``start .. start+len(cands)-1`` of one split."""
    out, split, seed, size, start, cands, cand_labels, cand_idx = task
    out = Path(out)
    summaries, hist = [], np.zeros((2, 4, 256), np.int64)
    for k in range(len(cands)):
        index = start + k
        rng = np.random.default_rng([seed, SPLIT_CODES[split], 1, index])
        sc = render_scene(rng, cands[k], cand_labels[k], size)
        sid = scene_id(split, index)
        jpeg, labels = write_scene(out, sid, sc)
        if split == "val":  # threshold measure on the pixels as stored (decoded JPEG)
            hist += threshold_histograms(np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")), sc.mask)
        summaries.append({"id": sid, "labels": labels, "objects": len(sc.classes), "dropped": sc.dropped,
                          "pixels": np.bincount(sc.mask[sc.mask != VOID], minlength=NUM_CLASSES)[:NUM_CLASSES],
                          "void": int((sc.mask == VOID).sum()),
                          "items": [int(cand_idx[k][j]) for j in sc.slots]})
    return summaries, hist


def _tasks(out: Path, split: str, seed: int, size: int, n: int, x: np.ndarray, y: np.ndarray):
    """Chunks of candidate items: one seeded permutation of the item pool per split."""
    order = candidate_order(np.random.default_rng([seed, SPLIT_CODES[split], 0]), len(x), n)
    for s in range(0, n, _CHUNK):
        idx = order[s:s + _CHUNK]
        yield (str(out), split, seed, size, s, x[idx], y[idx], idx)


def read_meta(root: str | Path) -> dict | None:
    """``root``'s meta.json as a dict, or None when it is missing, unreadable or not a JSON object."""
    try:
        meta = parse_json((Path(root) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def is_finished(meta: dict | None) -> bool:
    """Whether a :func:`read_meta` result is a finished set's: present and not a generation's stub."""
    return meta is not None and not meta.get("incomplete")


def is_complete(root: str | Path) -> bool:
    """Whether ``root`` holds a finished data set: a meta.json that is not a generation's stub."""
    return is_finished(read_meta(root))


def _prepare_out(out: Path, params: dict) -> None:
    """Create ``out``; refuse a non-empty folder that is not an earlier fashion-scenes output, and a
    finished set made with other ``params`` (seed, num_train, num_val, size): runs trained on it and
    split files made from it (``hetseg data splits`` writes into its ``splits/``) would lose their data.
    A set with the same parameters is drawn again (the same bytes) and the user's split files stay."""
    if out.exists() and not out.is_dir():
        raise DataError(out, "exists and is not a directory", "choose another --out")
    if out.is_dir() and any(out.iterdir()):
        prev = read_meta(out) or {}
        if prev.get("dataset") != "fashion-scenes":
            raise DataError(out, "is not empty and holds no fashion-scenes meta.json",
                            "choose an empty or new --out directory")
        other = {k: prev.get(k) for k in params if prev.get(k) != params[k]}
        if not prev.get("incomplete") and other:
            raise DataError(out, "holds a finished fashion-scenes set made with other settings ("
                            + ", ".join(f"{k} {v}" for k, v in other.items()) + "); nothing was changed",
                            "choose another output folder, or delete that one first")
        for sub in ("JPEGImages", "SegmentationClass", "ImageSets"):
            shutil.rmtree(out / sub, ignore_errors=True)  # stale scenes of a killed larger run
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "splits"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    # Until the full meta.json replaces it at the end, a stub says "ours, unfinished": a killed run's
    # folder is regenerated (demo.ensure_scenes needs the sizes), never taken for a complete set.
    write_text(out / "meta.json", json.dumps({"dataset": "fashion-scenes", "incomplete": True}) + "\n")


def generate_scenes(out_dir: str | Path, seed: int = 0, num_train: int = 10000, num_val: int = 1000,
                    size: int = 96, fashion_mnist_dir: str | Path | None = None, workers: int = 2) -> dict:
    """Generate fashion-scenes under ``out_dir`` (VOC layout + hetseg splits); return the metadata.

    Writes ``JPEGImages/<id>.jpg`` (quality 95), ``SegmentationClass/<id>.png`` (VOC palette,
    values 0..10 and 255), ``ImageSets/Segmentation/{train,val}.txt``, ``labels.json``,
    ``classes.txt``, ``items.json`` (Fashion-MNIST indices per scene), ``splits/*.txt`` and
    ``meta.json``. Image and mask bytes depend only on (seed, num_*, size) (and the Pillow/libjpeg
    build), not on ``workers``. ``workers > 1`` uses 'spawn' processes: a script calling this at
    import level needs the usual ``if __name__ == "__main__":`` guard.
    """
    if seed < 0 or num_train < 1 or num_val < 1 or size < 32:
        raise DataError(None, f"bad arguments --seed {seed} --num-train {num_train} --num-val {num_val} --size {size}",
                        "use --seed >= 0, at least one train and one val scene, --size >= 32")
    t0 = time.perf_counter()
    out = Path(out_dir)
    train_x, train_y, test_x, test_y = load_fashion_mnist(fashion_mnist_dir)
    _prepare_out(out, {"seed": seed, "num_train": num_train, "num_val": num_val, "size": size})
    tasks = [*_tasks(out, "train", seed, size, num_train, train_x, train_y),
             *_tasks(out, "val", seed, size, num_val, test_x, test_y)]
    if workers > 1:
        # spawn: no fork of a parent that may hold torch/OpenMP threads; tasks carry their own items
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = list(pool.imap(_render_chunk, tasks))
    else:
        results = [_render_chunk(t) for t in tasks]
    scenes = [s for summaries, _ in results for s in summaries]
    hist = sum(h for _, h in results)
    train = [s for s in scenes if s["id"].startswith("train_")]
    val = [s for s in scenes if s["id"].startswith("val_")]
    splits = _write_lists(out, train, val, seed)
    meta = {
        "dataset": "fashion-scenes", "seed": seed, "size": size, "num_train": num_train, "num_val": num_val,
        "num_classes": NUM_CLASSES, "classes": list(FASHION_CLASSES), "ignore_index": VOID,
        "source_classes": list(FASHION_SOURCE), "target_classes": list(FASHION_TARGET),
        "params": {"items_per_image_p": list(ITEM_COUNT_P), "item_side_fraction": list(ITEM_SIDE),
                   "min_visible_fraction": MIN_VISIBLE, "mask_intensity_threshold": MASK_THRESHOLD,
                   "void_band_px": 1, "jpeg_quality": 95},
        "items": {"train": "Fashion-MNIST train", "val": "Fashion-MNIST t10k", "file": "items.json"},
        "splits": splits,
        "stats": {"train": summarise(train, NUM_CLASSES), "val": summarise(val, NUM_CLASSES)},
        "nontriviality": {"best_global_threshold_val": best_global_threshold(hist)},
        "workers": workers,
        "generation_seconds": round(time.perf_counter() - t0, 2),
    }
    write_text(out / "meta.json", json.dumps(meta, indent=1) + "\n")  # last, atomic: the set is complete
    return meta


def _write_lists(out: Path, train: list[dict], val: list[dict], seed: int) -> dict:
    """ImageSets, labels.json, classes.txt, items.json and the hetseg split files; -> split metadata."""
    (out / "ImageSets/Segmentation/train.txt").write_text("".join(s["id"] + "\n" for s in train))
    (out / "ImageSets/Segmentation/val.txt").write_text("".join(s["id"] + "\n" for s in val))
    save_labels_json(out / "labels.json", {s["id"]: s["labels"] for s in train + val})
    (out / "classes.txt").write_text("".join(c + "\n" for c in FASHION_CLASSES))
    (out / "items.json").write_text(json.dumps({s["id"]: s["items"] for s in train + val}) + "\n")

    def recs(scenes: list[dict]) -> list[Record]:
        return [Record(s["id"], f"JPEGImages/{s['id']}.jpg", tuple(s["labels"]),
                       f"SegmentationClass/{s['id']}.png") for s in scenes]

    def only(records: list[Record], allowed: tuple[int, ...]) -> list[Record]:
        # a scene whose items all vanished into void would have no labels: never put it in a split
        return [r for r in records if r.labels and set(r.labels) <= set(allowed)]

    tr, va = recs(train), recs(val)
    plan = [("train_weak", tr, True), ("train_full", tr, False)]
    plan += [(f"strong_{k}", per_class_subset(tr, k, NUM_CLASSES, seed), False) for k in STRONG_K]
    plan += [("val", va, False),
             ("transfer_source_train", only(tr, FASHION_SOURCE), False),
             ("transfer_target_train", only(tr, FASHION_TARGET), True),
             ("transfer_source_val", only(va, FASHION_SOURCE), False),
             ("transfer_target_val", only(va, FASHION_TARGET), False)]
    meta = {}
    for name, records, weak in plan:
        checksum = write_split(out / "splits" / f"{name}.txt", records, weak=weak)
        meta[name] = {"file": f"splits/{name}.txt", "size": len(records), "checksum": checksum,
                      "annotation": "labels" if weak else "masks"}
    return meta


def cli_scenes(out: str | Path, seed: int = 0, num_train: int = 10000, num_val: int = 1000, size: int = 96,
               fashion_mnist_dir: str | Path | None = None, workers: int = 2) -> int:
    """``hetseg data scenes``: generate and print a short summary; returns the exit status."""
    meta = generate_scenes(out, seed, num_train, num_val, size, fashion_mnist_dir, workers)
    st, thr = meta["stats"], meta["nontriviality"]["best_global_threshold_val"]
    print(f"fashion-scenes: {num_train} train + {num_val} val at {size}px, seed {seed}, "
          f"in {meta['generation_seconds']:.1f}s -> {out}")
    for split in ("train", "val"):
        s = st[split]
        print(f"  {split}: {s['objects_per_image']['mean']:.2f} objects/image, "
              f"{s['classes_per_image']['mean']:.2f} classes/image, foreground {100 * s['foreground_fraction']:.1f}%, "
              f"void {100 * s['void_fraction']:.1f}%")
    print(f"  best global threshold on val (oracle): foreground IoU {100 * thr['fg_iou']:.1f}% ({thr['rule']})")
    print("  splits: " + ", ".join(f"{k} {v['size']}" for k, v in meta["splits"].items()))
    return 0

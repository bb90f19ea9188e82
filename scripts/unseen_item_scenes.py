"""Held-out scenes of *unseen items*: a recipe-selection set that mimics val without touching it (issue 12).

Why: the recipe probe (scripts/fashion_recipe_probe.py) reads classifier mAP on 500 held-out *training
scenes*. Their items are Fashion-MNIST train items, and the shipped VGG backbone was pretrained to
classify the first 58,000 train items one by one (docs/DECISIONS.md, "shipped backbone") -- so on
those scenes the network recognises items it has already been taught, while every val scene is built
from t10k items it has never seen. This script renders scenes, with the generator's own renderer and
item-count law, from the train items that neither the backbone (its 2,000 held-out items) nor any
training scene (``items.json``) uses, and scores classifier runs on them beside the probe's held-out
scenes. Training data only: no val image or label is read unless ``--with-val`` asks for the
comparison (a diagnostic, never a selection).

    python scripts/unseen_item_scenes.py render --data data/fashion-scenes
    python scripts/unseen_item_scenes.py score RUN [RUN ...] --out F.json

The scenes go into the data set's own folders as ``unseen_<n>`` (no existing file is touched), listed in
``splits/unseen_items.txt`` with a record ``splits/unseen_items.json``; so a probe can also validate on
them every few steps (``data.val_split=splits/unseen_items.txt``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

NUM_SCENES = 1000
SEED_CODE = 7  # distinct from the generator's split codes (train 0, val 1), so no rendering is shared


def backbone_holdout() -> int:
    """How many train items the shipped VGG backbone held out (its backbone.json), the last ones."""
    from hetseg.zoo import BACKBONE_DIR

    return int(json.loads((BACKBONE_DIR / "backbone.json").read_text())["data"]["held_out_items"])


def unseen_pool(data: Path, n_items: int, holdout: int) -> np.ndarray:
    """Train-item indices in the backbone's held-out tail (the last ``holdout`` of ``n_items``, as
    hetseg.data.items.item_splits holds them out) that no training scene of ``data`` uses; sorted."""
    if not 0 < holdout < n_items:
        raise SystemExit(f"holdout {holdout}: not in (0, {n_items}); fix: use the backbone's own held-out count")
    used = set()
    for sid, items in json.loads((data / "items.json").read_text()).items():
        if sid.startswith("train_"):
            used.update(items)
    return np.array([i for i in range(n_items - holdout, n_items) if i not in used], np.int64)


def render(data: Path, num: int = NUM_SCENES, seed: int = 0, fashion_mnist_dir: str | None = None) -> dict:
    """Render ``num`` scenes into ``data`` as ``unseen_<n>`` + splits/unseen_items.{txt,json}; the record."""
    from hetseg.data.records import Record, split_checksum, write_split
    from hetseg.data.scenes import candidate_order, load_fashion_mnist, write_scene
    from hetseg.data.scenes_render import render_scene
    from hetseg.io_atomic import write_json

    if not ((data / "items.json").is_file() and (data / "meta.json").is_file()):
        raise SystemExit(f"{data}: not a fashion-scenes folder (no items.json / meta.json); "
                         "fix: give the folder `hetseg data scenes` wrote")
    x, y, _, _ = load_fashion_mnist(fashion_mnist_dir)
    pool = unseen_pool(data, len(x), backbone_holdout())
    size = json.loads((data / "meta.json").read_text())["size"]
    order = pool[candidate_order(np.random.default_rng([seed, SEED_CODE, 0]), len(pool), num)]
    recs, items = [], {}
    for i, idx in enumerate(order):
        sc = render_scene(np.random.default_rng([seed, SEED_CODE, 1, i]), x[idx], y[idx], size)
        sid = f"unseen_{i:06d}"
        _, labels = write_scene(data, sid, sc)  # as the generator stores every scene
        recs.append(Record(sid, f"JPEGImages/{sid}.jpg", tuple(labels), f"SegmentationClass/{sid}.png"))
        items[sid] = [int(idx[j]) for j in sc.slots]
    write_split(data / "splits" / "unseen_items.txt", recs)
    rec = {"scenes": num, "seed": seed, "pool_items": len(pool), "split_checksum": split_checksum(recs),
           "items": "Fashion-MNIST train items in the backbone's 2,000 held-out tail used by no training scene"}
    write_json(data / "splits" / "unseen_items.json", {**rec, "scene_items": items})
    return rec


def classifier_map(run: str, split_file: Path, root: Path) -> tuple[float, list[float]]:
    """(macro mAP, per-class AP in class order 1..K) of a run's classifier on a split file: sigmoid of
    the avg-pooled score, as ClsStage validates."""
    import torch
    from torchmetrics.classification import MultilabelAveragePrecision

    from hetseg.data.datasets import ImageLabelDataset
    from hetseg.data.records import read_split
    from hetseg.engine.checkpoint import load_model

    net, cfg, _ = load_model(run, "cpu")
    sp = read_split(split_file, root, num_classes=cfg.data.num_classes)
    ds = ImageLabelDataset(sp.weak(), cfg.data.num_classes, net.input_size, train=False)
    metric = MultilabelAveragePrecision(num_labels=cfg.data.num_classes - 1, average=None)
    with torch.no_grad():
        for s in range(0, len(ds), 64):
            xs, ys = zip(*(ds[i] for i in range(s, min(s + 64, len(ds)))))
            logits = net.classifier(torch.stack(xs)).logits_avg
            metric.update(torch.sigmoid(logits.float()), torch.stack(ys).long())
    ap = metric.compute()
    return round(float(ap.mean()), 4), [round(float(v), 4) for v in ap]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render")
    r.add_argument("--data", default="data/fashion-scenes")
    r.add_argument("--num", type=int, default=NUM_SCENES)
    s = sub.add_parser("score")
    s.add_argument("runs", nargs="+")
    s.add_argument("--data", default="data/fashion-scenes")
    s.add_argument("--with-val", action="store_true", help="also score val (diagnostic only)")
    s.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.cmd == "render":
        print(json.dumps(render(Path(a.data), a.num)))
        return
    from hetseg.io_atomic import write_json

    data = Path(a.data)
    if not (data / "splits/unseen_items.json").is_file():
        raise SystemExit(f"{data}: no unseen-item scenes yet; fix: run `{Path(__file__).name} render --data {data}`")
    # probe_heldout_masks.txt exists once scripts/fashion_recipe_probe.py has run on this data set
    sets = {"unseen_items": data / "splits/unseen_items.txt", "probe_heldout": data / "splits/probe_heldout_masks.txt"}
    if a.with_val:
        sets["val"] = data / "splits/val.txt"
    res, per_class = {}, {}
    for run in a.runs:
        scores = {name: classifier_map(run, f, data) for name, f in sets.items() if f.is_file()}
        res[run] = {name: m for name, (m, _) in scores.items()}
        per_class[run] = {name: ap for name, (_, ap) in scores.items()}
    meta = json.loads((data / "splits/unseen_items.json").read_text())
    write_json(a.out, {"unseen": {k: v for k, v in meta.items() if k != "scene_items"}, "scores": res,
                       "per_class_ap": per_class, "note": "a run trained on train_weak.txt has trained on the "
                       "probe_heldout scenes (they are held out only from the probe's own runs)"})
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

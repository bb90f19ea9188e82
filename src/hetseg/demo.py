"""``make demo`` / ``hetseg demo``: DecoupledNet end to end on fashion-scenes at CPU scale.

fashion-scenes (10,000 weak train + 1,000 val) -> trivial baselines -> stage cls on the weak set,
from the shipped CPU-scale backbone (``model.backbone=shipped``, README "Shipped CPU-scale backbone")
-> stage seg on 5 strong images per class -> eval on val -> predictions with overlays.
The last line is exactly ``demo: mIoU=NN.N (run dir: PATH)``. Same machine and thread count, same
number (tests/test_resume.py); the recipe and its timing: docs/DECISIONS.md, "Demo recipe".
"""

from __future__ import annotations

import time
from pathlib import Path

from hetseg.config import Config
from hetseg.errors import HetsegError
from hetseg.io_atomic import write_json

# Fixed on training scenes only (scripts/fashion_recipe_probe.py: 500 train scenes held out from
# the classifier and from every strong split; docs/DECISIONS.md, "Demo recipe"), sized so that
# `make demo` fits 10 minutes on a 2-core AVX2 machine in float32.
DEMO_RECIPE = ["model.backbone=shipped", "cls.lr=0.0005", "cls.steps=300", "seg.steps=400"]


def demo_config(data: str | Path, run_dir: str | Path, seed: int = 0) -> Config:
    """The demo's one config: the defaults plus :data:`DEMO_RECIPE` on ``data``."""
    cfg = Config(run_dir=str(run_dir), seed=seed).override(DEMO_RECIPE)
    cfg.data.root = str(data)
    return cfg


def ensure_scenes(data: str | Path, seed: int = 0, fashion_mnist_dir: str | None = None) -> dict:
    """Generate fashion-scenes with default settings unless ``data/meta.json`` already matches."""
    from hetseg.data.scenes import generate_scenes, is_finished, read_meta

    meta = read_meta(data)  # none, or unreadable: generate_scenes decides (it refuses a folder not its own)
    if is_finished(meta) and meta.get("seed") == seed and meta.get("num_train") == 10000 \
            and meta.get("num_val") == 1000:
        return meta
    # Said before the work: a mistyped --data of a bench otherwise went quiet for half a minute and 130 MB.
    print(f"[data] no finished fashion-scenes set at {data}: generating one there (seed {seed}, 10,000 train + "
          "1,000 val scenes, about 130 MB)", flush=True)
    return generate_scenes(data, seed=seed, fashion_mnist_dir=fashion_mnist_dir)


DEFAULT_DATA = Path("data/fashion-scenes")  # every fashion-scenes bench's and the demo's --data


def ensure_bench_data(data: str | Path) -> None:
    """What a fashion-scenes bench does with its ``--data`` before anything else (README, "Command line"):
    the default folder (:data:`DEFAULT_DATA`) without a finished set, and any folder holding an unfinished
    fashion-scenes set (its meta.json a generation's stub), get the default set (seed 0); another folder
    with files is the user's data set, used as it is; another missing or empty folder is refused in one
    line (a mistyped or unmounted ``--data /data/VOC2012`` was filled with 130 MB of scenes)."""
    from hetseg.data.scenes import is_finished, read_meta

    root = Path(data)
    if root.exists() and not root.is_dir():
        raise HetsegError(f"--data {data}: a file, not a data set folder; fix: give the root folder of a data set "
                          "(the folder holding JPEGImages/ and splits/)")
    meta = read_meta(root)
    if is_finished(meta):
        return
    ours = meta is not None and meta.get("dataset") == "fashion-scenes"
    has_files = root.is_dir() and any(root.iterdir())
    if ours or (root.resolve() == DEFAULT_DATA.resolve() and not has_files):
        ensure_scenes(root, 0)
    elif not has_files:
        raise HetsegError(f"--data {data}: no data set there (missing or empty folder); fix: give the root of a data "
                          f"set, or make fashion-scenes there first with 'hetseg data scenes --out {data}'")


def run_demo(data: str = "data/fashion-scenes", run_dir: str = "runs/demo", seed: int = 0,
             fashion_mnist_dir: str | None = None) -> int:
    """``hetseg demo`` / ``make demo``: scenes (generated if absent), DecoupledNet with 5 strong images
    per class under the demo recipe, then val mIoU beside two baselines; returns the exit status."""
    from hetseg.baselines import all_background, best_threshold
    from hetseg.engine.context import load_split
    from hetseg.engine.evaluate import evaluate_run
    from hetseg.engine.predict import run_predict
    from hetseg.methods import train
    from hetseg.metrics import format_table

    t0 = time.perf_counter()
    meta = ensure_scenes(data, seed, fashion_mnist_dir)
    print(f"[demo] fashion-scenes at {data}: {meta.get('num_train')} train / {meta.get('num_val')} val, "
          f"seed {seed} ({time.perf_counter() - t0:.0f} s)")
    cfg = demo_config(data, run_dir, seed)
    val = load_split(cfg, "val")
    bg = all_background(val, cfg.data.num_classes)
    thr_scores, info = best_threshold(val, cfg.data.num_classes)
    print(f"[demo] baselines on val ({len(val)} images, split sha256 {val.checksum()[:12]}):")
    print(f"  all-background        mIoU={bg.miou * 100:.1f}")
    print(f"  best global threshold mIoU={thr_scores.miou * 100:.1f} (rule '{info['rule']}' chosen on val, "
          f"foreground IoU {info['fg_iou'] * 100:.1f}; oracle image labels)")
    print(f"  reproduce: hetseg data scenes --out {data} --seed {seed} && hetseg demo --data {data}")

    t1 = time.perf_counter()
    summaries = train(cfg, progress=False)
    for name, s in summaries.items():
        print(f"[demo] stage {name}: {s['steps']} steps, effective batch {s['effective_batch']}, "
              f"{s['wall_s']} s {s.get('metrics') or ''}")
    scores, report = evaluate_run(run_dir, "val")
    print(format_table(scores, list(report["scores"]["iou"])))
    gt = evaluate_run(run_dir, "val", use_gt_labels=True)[0]  # what label identification costs (README's table)
    print(f"[demo] the same model given the val images' true labels: mIoU={gt.miou * 100:.1f}")
    demo_imgs = [val.path(r.image) for r in val.records[:4]]
    run_predict(run_dir, [str(p) for p in demo_imgs], str(Path(run_dir) / "demo_predictions"), overlay=True)
    total = time.perf_counter() - t0
    print(f"[demo] training + eval {time.perf_counter() - t1:.0f} s, total {total:.0f} s; "
          f"figures in {Path(run_dir) / 'demo_predictions' / 'figures'}")
    record = demo_record(cfg, val.checksum(), {"all_background": bg.miou, "best_global_threshold": thr_scores.miou},
                         scores.miou, gt.miou, summaries, total)
    write_json(Path(run_dir) / "demo.json", record)  # the README's demo numbers, with what made them
    print(f"demo: mIoU={scores.miou * 100:.1f} (run dir: {run_dir})")
    return 0


def demo_record(cfg: Config, val_checksum: str, baselines: dict, miou: float, miou_gt: float, summaries: dict,
                total_s: float) -> dict:
    """``RUN/demo.json``: every number the demo prints (mIoU as fractions), with its command, seed, data set
    (meta checksum and split checksums, strong_5 among them), scale, stage budgets and wall times, and the
    machine (whose arithmetic moves the third digit: README, "Demo")."""
    from hetseg.bench.provenance import dataset_info, machine_info
    from hetseg.engine.context import command_line

    return {"command": command_line(), "seed": cfg.seed, "scale": cfg.model.scale, "recipe": DEMO_RECIPE,
            "data": dataset_info(cfg.data.root), "val_split_sha256": val_checksum, "strong_split": cfg.data.strong_split,
            "baselines": baselines, "miou": miou, "miou_gt_labels": miou_gt,
            "stages": {n: {k: s.get(k) for k in ("steps", "effective_batch", "wall_s", "precision", "metrics")}
                       for n, s in summaries.items()},
            "total_wall_s": round(total_s, 1), "machine": machine_info()}

"""``hetseg bench voc-real --voc-root DIR``: DecoupledNet vs DecoupledNet-Str vs the masks-only
baseline on genuine PASCAL VOC photos, all from an ImageNet encoder (EfficientNet-Lite0).

The division of the images (fixed before any training, seeded, checksummed, written to
``RUNS/splits``): a quarter of the images (``EVAL_FRACTION``) are evaluation images, never used in
training; from the rest, k = 3, 5, 10 strong images per class (the project's k-per-class rule,
``data.records.per_class_subset``); every non-evaluation image is a weak image (its image labels,
derived from its mask, for the classifier; its mask is used only if it is one of the k strong
images). Labels are written to ``RUNS/splits/labels.json`` beside the read-only VOC root.

Cells and budgets follow Table 1's equal-effort rule (docs/BENCHMARKS.md): one weak-set classifier
shared by the DecoupledNet cells, then stage seg per k; DecoupledNet-Str: cls on the strong images
+ seg; the masks-only baseline (DeconvNet's role, ``maskonly_enc``): cls + seg steps on the strong
images. Nothing is chosen on the evaluation images. Results: ``OUT/voc_real.{json,md,png}``.
Works on any VOC-layout root (ImageSets/Segmentation/all.txt, or every mask in SegmentationClass).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from hetseg.bench.table1 import _job, _worker_init, check_recipe
from hetseg.config import Config
from hetseg.errors import DataError

KS: tuple[int, ...] = (3, 5, 10)
METHODS = ("decouplednet", "decouplednet-str", "maskonly")
EVAL_FRACTION = 0.25
SPLIT_SEED = 0
# Fixed before the run (sized so one seed fits in 45 min on 2 cores; see the report's wall time).
RECIPE = ["model.encoder=efficientnet_lite0", "model.input_size=224", "model.width=128", "model.bridge_kernel=1",
          "data.num_classes=21",
          "cls.steps=80", "cls.batch_size=16", "cls.optimizer=adam", "cls.lr=0.001", "cls.weight_decay=0.0",
          "seg.steps=80", "seg.batch_size=16", "crops.proposals=none", "crops.crops_per_subset=50"]
BUDGETS = {"default": [], "tiny": ["cls.steps=2", "cls.batch_size=2", "seg.steps=2", "seg.batch_size=2",
                                   "crops.crops_per_subset=2", "cls.checkpoint_every=1", "seg.checkpoint_every=1"]}


def voc_ids(root: Path) -> list[str]:
    """The root's image ids: ImageSets/Segmentation/all.txt, else every mask with its JPEG."""
    listed = root / "ImageSets" / "Segmentation" / "all.txt"
    if listed.is_file():
        return [ln.strip() for ln in listed.read_text(encoding="utf-8").splitlines() if ln.strip()]
    ids = sorted(p.stem for p in (root / "SegmentationClass").glob("*.png") if (root / "JPEGImages" / f"{p.stem}.jpg").is_file())
    if not ids:
        raise DataError(root, "no SegmentationClass/*.png with a JPEGImages/*.jpg", "pass a VOC-layout root (…/VOC2012)")
    return ids


def divide(root: str | Path, work: str | Path, ks: Sequence[int] = KS, seed: int = SPLIT_SEED) -> dict:
    """Write eval / weak / strong_<k> split files and labels.json under ``work``; returns their records."""
    from hetseg.data.labels import save_labels_json
    from hetseg.data.records import per_class_subset, read_split, write_split

    root, work = Path(root), Path(work)
    ids = voc_ids(root)
    lines = "".join(f"JPEGImages/{i}.jpg SegmentationClass/{i}.png\n" for i in ids)
    (work / "splits").mkdir(parents=True, exist_ok=True)
    (work / "splits" / "all.txt").write_text(lines)
    every = read_split(work / "splits" / "all.txt", root, num_classes=21)  # labels from the masks
    order = np.random.default_rng(seed).permutation(len(every.records))
    n_eval = max(1, round(EVAL_FRACTION * len(order)))
    evals = [every.records[i] for i in sorted(order[:n_eval])]
    pool = [every.records[i] for i in sorted(order[n_eval:])]
    save_labels_json(work / "splits" / "labels.json", {r.id: list(r.labels) for r in every.records})
    out = {"images": len(ids), "eval": write_split(work / "splits" / "eval.txt", evals),
           "weak": write_split(work / "splits" / "weak.txt", pool, weak=True), "n_eval": len(evals), "n_weak": len(pool)}
    for k in ks:
        chosen = per_class_subset(pool, k, 21, seed)
        out[f"strong_{k}"] = write_split(work / "splits" / f"strong_{k}.txt", chosen)
        out[f"n_strong_{k}"] = len(chosen)
    return out


def base_config(voc_root: str, runs: str, seed: int, budget: str, overrides: Sequence[str]) -> Config:
    from hetseg.data.classes import VOC_CLASSES

    sp = (Path(runs) / "splits").absolute()
    cfg = Config(seed=seed).override([f"data.root={voc_root}", f"data.labels={sp / 'labels.json'}",
                                      f"data.weak_split={sp / 'weak.txt'}", f"data.val_split={sp / 'eval.txt'}",
                                      f"data.class_names={list(VOC_CLASSES)}", *RECIPE, *BUDGETS[budget], *overrides])
    # Table 1's rule: the masks-only network gets cls + seg steps at seg's batch, the classifiers' optimizer.
    o = cfg.cls
    return dataclasses.replace(cfg, deconv=dataclasses.replace(cfg.seg, steps=cfg.seg.steps + o.steps, optimizer=o.optimizer,
                                                               lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                                               lr_step=o.lr_step))


def cell_config(base: Config, method: str, k: int | str, runs: str) -> Config:
    strong = str((Path(runs) / "splits" / f"strong_{k}.txt").absolute())
    data = dataclasses.replace(base.data, strong_split=strong,
                               weak_split=strong if method == "decouplednet-str" else base.data.weak_split)
    model = dataclasses.replace(base.model, name="deconvnet" if method == "maskonly" else "decouplednet")
    return dataclasses.replace(base, data=data, model=model, run_dir=str(Path(runs) / f"seed{base.seed}" / f"{method}_k{k}"))


def run_cell(cfg: Config, method: str, k, cls_run: str | None, progress: bool) -> dict:
    """Train (or reuse) and evaluate one cell on the evaluation images."""
    from hetseg.methods import evaluate_run, train

    check_recipe(cfg)
    t0 = time.perf_counter()
    stages = ("seg",) if method == "decouplednet" else None
    init = cls_run if method == "decouplednet" and not Path(cfg.run_dir, "model.safetensors").is_file() else None
    summaries = train(cfg, stages, init_from=init, progress=progress)
    scores, report = evaluate_run(cfg.run_dir, "val", suffix="")
    return {"method": method, "k": k, "seed": cfg.seed, "run": cfg.run_dir, "miou": scores.miou,
            "iou": report["scores"]["iou"], "wall_s": round(time.perf_counter() - t0, 1),
            "steps": {s: v["steps"] for s, v in summaries.items()},
            "cls_mAP_eval": (summaries.get("cls") or {}).get("metrics", {}).get("val/mAP")}


def ensure_classifier(base: Config, runs: str, progress: bool) -> tuple[str, float | None]:
    from hetseg.methods import train

    cfg = dataclasses.replace(base, run_dir=str(Path(runs) / f"seed{base.seed}" / "weak_classifier"))
    check_recipe(cfg)
    out = train(cfg, ("cls",), progress=progress)
    return cfg.run_dir, out["cls"].get("metrics", {}).get("val/mAP")


def run_voc_real(voc_root: str, out: str = "benchmarks/results", runs: str = "runs/voc_real", seeds: Sequence[int] = (0,),
                 ks: Sequence[int] = KS, budget: str = "default", overrides: Sequence[str] = (), jobs: int = 2,
                 progress: bool = False, figure_images: int = 4) -> int:
    """Divide, train every cell, evaluate, write ``OUT/voc_real.{json,md,png}``; exit status."""
    from hetseg.bench.voc_real_report import write_results

    t0 = time.perf_counter()
    division = divide(voc_root, runs, ks)
    records = []
    for seed in seeds:
        base = base_config(voc_root, runs, seed, budget, overrides)
        cls_run, cls_map = ensure_classifier(base, runs, progress)
        todo = [(m, k) for k in ks for m in METHODS]
        if jobs <= 1:
            records += [run_cell(cell_config(base, m, k, runs), m, k, cls_run, progress) for m, k in todo]
        else:
            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init) as pool:
                futs = [pool.submit(_job, run_cell, cell_config(base, m, k, runs), m, k, cls_run, progress) for m, k in todo]
                records += [f.result() for f in futs]
        for r in records:
            if r["method"] == "decouplednet" and r["seed"] == seed:
                r["cls_mAP_eval"] = cls_map
    command = f"hetseg bench voc-real --voc-root {voc_root} --out {out} --runs {runs} --seeds {' '.join(map(str, seeds))}"
    paths = write_results(records, division, out, command, voc_root, runs, time.perf_counter() - t0,
                          base_config(voc_root, runs, seeds[0], budget, overrides), list(ks), budget, list(overrides),
                          figure_images)
    print(f"[voc-real] results: {', '.join(map(str, paths))}", flush=True)
    return 0

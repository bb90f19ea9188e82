"""``hetseg bench dis``: DIS as specified here (docs/DIS.md) on fashion-scenes, the paper's ablation shape.

Per seed and k in {5, full} strong images per class (the Table 1 split files; the weak set is the
tag-only set):

* ``RUNS/seed<S>/dis_k<k>_base``: stages ``labelmap`` and ``recon`` (shared by both t_tr cells);
* ``RUNS/seed<S>/dis_k<k>_ttr<t>``: stage ``joint`` initialised from the base run, t_tr in
  {0, ``dis.t_train``} (t_tr = 0: tag-only images are supervised by their plain tag-constrained
  labelmap, no iterative inference);
* every joint run is evaluated on val with t_ts in :data:`T_TEST` (the same model, only the number
  of inference steps changes), and inference is timed per image at each t_ts.

At CPU scale every run starts from the shipped ResNet backbone (``model.backbone=shipped``:
``hetseg bench backbone --family resnet``, DIS's stand-in for ImageNet ResNet-101), as Table 1's
networks start from the shipped VGG one. At k = full every train image has a mask, so no image is
tag-only and t_tr cannot act: that k trains one joint run and reports it for every t_tr (``same_as``).
Beside it the report shows DecoupledNet and DeconvNet at the same k from ``OUT/table1.json`` (if
present). Results: ``OUT/dis.json``, ``dis.md``, ``dis.png`` (:mod:`hetseg.bench.dis_report`).
Nothing is chosen on val: budgets, t_tr and the t_ts grid are fixed before the run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hetseg.bench import paper
from hetseg.bench.curves import run_losses
from hetseg.bench.preflight import check_inputs
from hetseg.bench.provenance import check_recipe, machine_info, read_json, stage_sessions, with_overrides
from hetseg.bench.table1_recipe import strong_split_file
from hetseg.bench.workers import cell_pool, job
from hetseg.config import Config
from hetseg.config_check import override_keys
from hetseg.errors import HetsegError

if TYPE_CHECKING:
    from hetseg.data.records import Split

KS: tuple = (5, "full")
T_TEST: tuple[int, ...] = (0, 1, 5, 10, 30)
BUDGETS: dict[str, list[str]] = {
    "default": [],
    "tiny": [f"dis.{s}.{k}" for s in ("labelmap", "recon", "joint") for k in ("steps=3", "batch_size=2",
                                                                             "checkpoint_every=2")],
}


def base_config(scale: str, seed: int, data: str | Path, k: int | str, runs: str | Path, budget: str = "default",
                overrides: Sequence[str] = ()) -> Config:
    """Stages labelmap + recon of one (seed, k)."""
    # The shipped ResNet backbone, unless the overrides name the starting weights (paper scale:
    # model.resnet_weights=<torchvision ResNet-101 file>; without it the shipped one refuses paper scale).
    named = any(k in ("model.backbone", "model.resnet_weights") for o in overrides for k in override_keys(o))
    init = [] if named or scale == "paper" else ["model.backbone=shipped"]  # paper: run_dis' check_inputs asks
    recipe = paper.DIS if scale == "paper" else []  # paper: configs/dis_voc_paper.yaml's stages; cpu: the defaults
    cfg = Config(seed=seed).override(["model.name=dis", f"model.scale={scale}", f"data.root={data}", *init,
                                      f"data.strong_split={strong_split_file(k)}", *recipe, *BUDGETS[budget],
                                      *overrides])
    return dataclasses.replace(cfg, run_dir=str(Path(runs) / f"seed{seed}" / f"dis_k{k}_base"))


def joint_config(base: Config, k: int | str, t_train: int, runs: str | Path) -> Config:
    """Stage joint with ``t_train`` steps of inference for the tag-only images."""
    return dataclasses.replace(base, run_dir=str(Path(runs) / f"seed{base.seed}" / f"dis_k{k}_ttr{t_train}"),
                               dis=dataclasses.replace(base.dis, t_train=t_train))


@torch.no_grad()
def time_inference(run: Path, split: Split, steps: Sequence[int], images: int = 64,
                   batch: int = 16) -> dict[int, float]:
    """ms per image of ``predict`` (model only: preprocessed batches, no file I/O) at each t_ts."""
    from hetseg.data.io import read_image
    from hetseg.data.transforms import prepare
    from hetseg.engine.checkpoint import load_model

    net = load_model(run)[0]
    x = torch.stack([prepare(read_image(split.path(r.image)), net.input_size)[0] for r in split.records[:images]])
    x = x.contiguous(memory_format=torch.channels_last)
    out = {}
    for t in steps:
        net.predict(x[:batch], steps=t)  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(x), batch):
            net.predict(x[i:i + batch], steps=t)
        out[int(t)] = round(1000 * (time.perf_counter() - t0) / len(x), 2)
    return out


BASE_STAGES = ("labelmap", "recon")


def stage_markers(run: str | Path, stages: Sequence[str]) -> list[dict | None]:
    """Each of ``stages``' done.json in ``run`` (engine.train.stage_done), None where it is missing or
    unreadable: the record's own values then stand."""
    from hetseg.methods import stage_done

    out: list[dict | None] = []
    for s in stages:
        try:
            out.append(stage_done(run, s))
        except (HetsegError, OSError, AttributeError):
            out.append(None)
    return out


def stage_wall(run: str | Path, stages: Sequence[str]) -> float | None:
    """Training seconds of ``stages`` as each stage's done.json recorded them when it ran (every session
    of a resumed stage, docs/GUARANTEES.md), or None if one is missing. Why not a clock around
    ``train``: a re-evaluation skips finished stages in ~0 s, and the record must say what training cost."""
    walls = [(m or {}).get("wall_s") for m in stage_markers(run, stages)]
    return None if any(not isinstance(w, (int, float)) for w in walls) else round(sum(walls), 1)


def record_sessions(rec: dict, saved: dict | None = None) -> dict[str, list[dict]]:
    """{"<run folder>/<stage>": its sessions} for every stage behind a (seed, k) record -- its base run's
    labelmap and recon and each joint run trained (not a k = full alias) -- as the stage's done.json records
    them (provenance.stage_sessions). A stage whose marker is missing or unreadable keeps the entry ``saved``
    (the record's own) has for it, else counts as one session of unknown precision and device: as the walls,
    the markers' values where they are, the record's elsewhere, and no stage left out."""
    runs = [(rec["base_run"], BASE_STAGES)] + [(c["run"], ("joint",)) for c in rec["cells"] if not c.get("same_as")]
    saved = saved or {}
    out: dict[str, list[dict]] = {}
    for run, stages in runs:
        for stage, marker in zip(stages, stage_markers(run, stages)):
            key = f"{Path(run).name}/{stage}"
            out[key] = stage_sessions(marker) if marker else saved.get(key) or stage_sessions({})
    return out


def record_file(base: Config) -> Path:
    """Where one (seed, k)'s evaluated record is kept: ``RUNS/seed<S>/dis_k<k>_base/dis_record.json``."""
    return Path(base.run_dir) / "dis_record.json"


def run_k(base: Config, k: int | str, t_trains: Sequence[int], runs: str, progress: bool) -> dict:
    """Train base + joint runs of one (seed, k), evaluate each at every t_ts; returns its record.

    The record is written last (atomically) beside the base run; a later invocation with the same
    recipe and t_tr grid reports it from that file alone, so seeds can be trained in separate
    sessions and committed without their weights (docs/BENCHMARKS.md, "Seeds across sessions")."""
    from hetseg.io_atomic import write_json
    from hetseg.methods import evaluate_run, get_method, load_split

    method = get_method("dis")
    check_recipe(base)
    for t_tr in t_trains:
        check_recipe(joint_config(base, k, t_tr, runs))
    saved = saved_record(base, k, t_trains, runs)
    if saved:
        print(f"[dis] k={k} seed {base.seed}: reported from {record_file(base)}", flush=True)
        return saved
    method.train(base, ("labelmap", "recon"), progress=progress)
    rec = {"k": k, "seed": base.seed, "base_run": base.run_dir, "base_wall_s": stage_wall(base.run_dir, BASE_STAGES),
           "cells": [], "train_loss": run_losses(base.run_dir)}  # labelmap, recon: per tenth of their steps
    val = load_split(base, "val")
    for t_tr in t_trains:
        if k == "full" and rec["cells"]:  # no tag-only image: the joint stage is the same for every t_tr
            rec["cells"].append({**rec["cells"][0], "t_train": t_tr, "same_as": rec["cells"][0]["run"]})
            continue
        cfg = joint_config(base, k, t_tr, runs)  # its recipe was checked above, with every t_tr's
        method.train(cfg, ("joint",), init_from=None if Path(cfg.run_dir, "model.safetensors").is_file()
                     else base.run_dir, progress=progress)
        cell = {"t_train": t_tr, "run": cfg.run_dir, "joint_wall_s": stage_wall(cfg.run_dir, ("joint",)),
                "miou": {}, "iou": {}}
        t1 = time.perf_counter()
        for t in T_TEST:
            scores, report = evaluate_run(cfg.run_dir, "val", predict_kwargs={"steps": t}, suffix=f"_t{t}")
            cell["miou"][t] = scores.miou
            cell["iou"][t] = report["scores"]["iou"]
        gt, _ = evaluate_run(cfg.run_dir, "val", use_gt_labels=True, predict_kwargs={"steps": 0}, suffix="_t0")
        cell["miou_gt_labels_t0"] = gt.miou
        cell["ms_per_image"] = time_inference(Path(cfg.run_dir), val, T_TEST)
        cell["train_loss"] = run_losses(cfg.run_dir)  # joint
        cell["eval_wall_s"] = round(time.perf_counter() - t1, 1)  # every t_ts, GT labels and the timing
        print(f"[dis] k={k} seed {base.seed} t_tr={t_tr}: mIoU " +
              " ".join(f"t{t}={100 * m:.1f}" for t, m in cell["miou"].items()), flush=True)
        rec["cells"].append(cell)
    rec.update(t_trains=list(t_trains), t_test=list(T_TEST), config=base.to_dict(), machine=machine_info())
    rec["sessions"] = record_sessions(rec)  # precision and device of each stage's training sessions
    write_json(record_file(base), rec)
    return rec


def saved_record(base: Config, k: int | str, t_trains: Sequence[int], runs: str | Path) -> dict:
    """The record :func:`run_k` left for (seed, k), or {} when there is none or it was made for another
    t_tr / t_ts grid (then the runs are evaluated again). A record of another recipe (by its own saved
    config, else the base run's config.json, which must then exist) or one that does not parse is
    refused in one line. Run paths are rebased on ``runs``, where the record now lies."""
    path = record_file(base)
    try:
        saved = read_json(path)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise HetsegError(f"{path}: not a readable DIS bench record ({type(e).__name__}); fix: delete it, and "
                          "the runs beside it are evaluated again") from None
    if not saved or saved.get("t_trains") != list(t_trains) or saved.get("t_test") != list(T_TEST):
        return {}
    if saved.get("config"):
        diff = base.recipe_difference(saved["config"])
    else:  # an earlier record without its config: the base run's config.json (check_recipe) must vouch
        diff = [] if Path(base.run_dir, "config.json").is_file() else ["config (neither saved nor beside it)"]
    if diff:
        raise HetsegError(f"{path}: a record of another recipe (differs in {diff}); fix: pass another --runs "
                          "directory or delete the record")
    saved["base_run"] = base.run_dir
    # Training walls from the stages' own done.json where they lie beside the record (records written
    # before stage_wall clocked a re-evaluation, ~0 s, instead of the training).
    saved["base_wall_s"] = stage_wall(base.run_dir, BASE_STAGES) or saved.get("base_wall_s")
    for c in saved["cells"]:
        c["run"] = joint_config(base, k, c["t_train"] if not c.get("same_as") else t_trains[0], runs).run_dir
        c["joint_wall_s"] = stage_wall(c["run"], ("joint",)) or c.get("joint_wall_s")
        if c.get("same_as"):
            c["same_as"] = c["run"]
    saved["sessions"] = record_sessions(saved, saved.get("sessions"))  # as the walls: markers first
    return saved


def run_dis(scale: str = "cpu", seeds: Sequence[int] = (0,), out: str = "benchmarks/results",
            data: str = "data/fashion-scenes", runs: str | None = None, budget: str = "default",
            ks: Sequence[int | str] = KS, overrides: Sequence[str] = (), jobs: int = 2,
            progress: bool = False, figure_images: int = 4) -> int:
    """Every (seed, k) of the DIS bench; writes ``OUT/dis.{json,md,png}``; exit status."""
    from hetseg.bench.dis_report import write_results
    from hetseg.demo import ensure_bench_data

    t0 = time.perf_counter()
    runs = runs or ("runs/dis" if scale == "cpu" else f"runs/dis_{scale}")
    ks = tuple(k if str(k) == "full" else int(k) for k in ks)
    ensure_bench_data(data)  # the default fashion-scenes where there is no data set yet
    bases = {(s, k): base_config(scale, s, data, k, runs, budget, overrides) for s in seeds for k in ks}
    if bases:  # the data keys are every cell's: checked once, before any folder or training
        b = bases[(seeds[0], ks[0])]
        check_inputs(b, "resnet", [
            ("data.weak_split", b.data.weak_split, "set data.weak_split to the tag-only split of --data", False),
            ("data.val_split", b.data.val_split, "set data.val_split to the split to score", True),
            *[(f"k = {k}", strong_split_file(k), f"make {strong_split_file(k)} under --data (docs/BENCHMARKS.md, "
               "'The benches at paper scale')", True) for k in ks]])
    t_trains = sorted({0, bases[(seeds[0], ks[0])].dis.t_train})
    if jobs <= 1:
        records = [run_k(bases[key], key[1], t_trains, runs, progress) for key in bases]
    else:
        with cell_pool(jobs) as pool:
            futs = [pool.submit(job, run_k, bases[key], key[1], t_trains, runs, progress) for key in bases]
            records = [f.result() for f in futs]
    command = with_overrides(f"hetseg bench dis --scale {scale} --seeds {' '.join(map(str, seeds))} --out {out} "
                             f"--data {data} --runs {runs}", overrides)
    first = bases[(seeds[0], ks[0])]
    paths = write_results(records, out, command, scale, list(seeds), data, runs, time.perf_counter() - t0, first,
                          list(T_TEST), t_trains, budget, list(overrides), figure_images)
    print(f"[dis] results: {', '.join(map(str, paths))}", flush=True)
    return 0

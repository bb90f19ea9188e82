"""``hetseg bench table1``: DecoupledNet's Table 1 on fashion-scenes (issue 4).

{DecoupledNet, DecoupledNet-Str, DeconvNet} x {5, 10, 25, full} strong images per class, per seed:

* DecoupledNet: one classifier per seed, trained once on the weak set (``RUNS/seed<S>/weak_classifier``),
  then for each k a fresh run dir initialised from it (``init_from``) that trains stage ``seg`` only.
* DecoupledNet-Str: stage ``cls`` on the strong split's images (``data.weak_split`` = the strong
  split file, labels from ``labels.json``), then stage ``seg`` on the same split. At "full" the
  strong images *are* the weak set (same records, same checksum), so its classifier and its seg
  stage would be an exact re-run of DecoupledNet's "full" cell: that cell is reported for both.
* DeconvNet: ``model.name=deconvnet``, stage ``deconv`` on the strong split.

Every cell is evaluated on val (``RUN/eval_val.json``); a cell that has it is skipped on a rerun,
and a half-trained stage resumes from its ``last.ckpt`` (``hetseg.engine.train``). The budget rule is
:data:`EQUAL_EFFORT`. Results: ``OUT/table1.json``, ``table1.md``, ``table1.png``
(:mod:`hetseg.bench.table1_report`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from hetseg.config import Config
from hetseg.errors import HetsegError

KS: tuple = (5, 10, 25, "full")
METHODS = ("decouplednet", "decouplednet-str", "deconvnet")
STAGES = {"decouplednet": ("seg",), "decouplednet-str": ("cls", "seg"), "deconvnet": ("deconv",)}

# Budgets are Config overrides applied before the equal-effort rule derives cfg.deconv.
BUDGETS: dict[str, list[str]] = {
    "default": [],  # the Config defaults at run time (the demo recipe)
    "tiny": ["cls.steps=4", "cls.batch_size=4", "cls.checkpoint_every=2", "seg.steps=4", "seg.batch_size=4",
             "seg.checkpoint_every=2", "crops.crops_per_subset=2"],  # tests only
}

EQUAL_EFFORT = (
    "Budgets are counted in optimizer steps and fixed before the run (the Config defaults, recorded per "
    "cell). Every segmentation network gets the same segmentation budget: seg.steps steps of seg.batch_size "
    "crops (x accumulate), same optimizer, learning rate, step schedule (lr x0.1 after lr_step of the steps) "
    "and combinatorial-crop recipe -- DecoupledNet and DecoupledNet-Str use cfg.seg, DeconvNet's cfg.deconv "
    "is a copy of cfg.seg. Both DecoupledNet classifiers (weak set; strong images only for -Str) get the "
    "same cls budget, cfg.cls. DeconvNet has no separate classifier, so it gets seg.steps + cls.steps steps "
    "(same batch and schedule as cfg.seg): every method makes the same total number of optimizer steps. "
    "No method is tuned on val: no early stopping, no checkpoint selection, the label threshold is "
    "cfg.eval.threshold for both DecoupledNets. Object proposals are off (crops.proposals=none) for every "
    "method, so results do not depend on an optional OpenCV install. 'full' = splits/train_full.txt (all "
    "train scenes with masks). Seeds change initialisation and data order; the strong splits are the "
    "dataset's fixed strong_<k>.txt files."
)


def strong_split_file(k: int | str) -> str:
    """Root-relative split file of ``k`` strong images per class ("full": every train mask)."""
    return "splits/train_full.txt" if str(k) == "full" else f"splits/strong_{int(k)}.txt"


def base_config(scale: str, seed: int, data: str | Path, budget: str = "default",
                overrides: Sequence[str] = ()) -> Config:
    """The recipe shared by every cell of a seed, with the equal-effort rule applied."""
    if budget not in BUDGETS:
        raise HetsegError(f"unknown budget '{budget}'; fix: use one of {sorted(BUDGETS)}")
    cfg = Config(seed=seed).override(["crops.proposals=none", *BUDGETS[budget], *overrides])
    cfg.data.root = str(data)
    cfg.model.scale = scale
    # DeconvNet: the seg recipe, with the classifier's steps added so total steps are equal.
    cfg.deconv = dataclasses.replace(cfg.seg, steps=cfg.seg.steps + cfg.cls.steps)
    return cfg


def classifier_config(base: Config, runs: str | Path) -> Config:
    """The weak-set classifier run shared by the DecoupledNet cells of one seed."""
    cfg = copy.deepcopy(base)
    cfg.run_dir = str(Path(runs) / f"seed{base.seed}" / "weak_classifier")
    return cfg


def cell_config(base: Config, method: str, k: int | str, runs: str | Path) -> Config:
    """The config of one (method, k) cell; its run dir is ``RUNS/seed<S>/<method>_k<k>``."""
    if method not in METHODS:
        raise HetsegError(f"unknown method '{method}'; fix: use one of {METHODS}")
    cfg = copy.deepcopy(base)
    cfg.run_dir = str(Path(runs) / f"seed{base.seed}" / f"{method}_k{k}")
    cfg.data.strong_split = strong_split_file(k)
    if method == "decouplednet-str":
        cfg.data.weak_split = cfg.data.strong_split  # classifier on the strong images only
    elif method == "deconvnet":
        cfg.model.name = "deconvnet"
    return cfg


def check_recipe(cfg: Config) -> None:
    """Refuse to resume or skip a run dir that was trained with another recipe (budget, data...)."""
    p = Path(cfg.run_dir) / "config.json"
    if not p.is_file():
        return
    saved = {k: v for k, v in json.loads(p.read_text()).items() if k != "run_dir"}
    want = {k: v for k, v in cfg.to_dict().items() if k != "run_dir"}
    if saved != want:
        diff = sorted(k for k in set(saved) | set(want) if saved.get(k) != want.get(k))
        raise HetsegError(f"{cfg.run_dir}: trained with another recipe (differs in {diff}); "
                          "fix: pass another --runs directory or delete this one")


def _train(cfg: Config, stages: tuple[str, ...], init_from: str | None, progress: bool) -> None:
    from hetseg.engine.pipeline import train

    check_recipe(cfg)
    # pipeline.train builds the net from the global RNG before any stage seeds it: seed here, so a
    # cell's initialisation does not depend on which cells ran before it in this process.
    torch.manual_seed(cfg.seed)
    train(cfg, stages, init_from=init_from, progress=progress)


def ensure_classifier(base: Config, runs: str | Path, progress: bool = False) -> Path:
    """Train (or reuse) the shared weak-set classifier of ``base.seed``; returns its run dir."""
    from hetseg.engine.train import stage_done

    cfg = classifier_config(base, runs)
    check_recipe(cfg)
    if stage_done(cfg.run_dir, "cls") is None or not (Path(cfg.run_dir) / "model.safetensors").is_file():
        print(f"[table1] seed {base.seed}: weak-set classifier ({cfg.cls.steps} steps) -> {cfg.run_dir}", flush=True)
        _train(cfg, ("cls",), None, progress)
    return Path(cfg.run_dir)


def same_classifier_data(a: Config, b: Config) -> bool:
    """True when two configs' classifiers would see exactly the same images and labels."""
    from hetseg.engine.pipeline import load_split

    return load_split(a, "weak").weak().checksum() == load_split(b, "weak").weak().checksum()


def run_cell(cfg: Config, method: str, k: int | str, cls_run: Path | None, progress: bool = False) -> dict:
    """Train and evaluate one cell unless its ``eval_val.json`` exists; returns its record."""
    from hetseg.bench.table1_report import cell_record
    from hetseg.engine.pipeline import evaluate_run

    run = Path(cfg.run_dir)
    check_recipe(cfg)
    if (run / "eval_val.json").is_file():
        print(f"[table1] {method} k={k} seed {cfg.seed}: done, skipped ({run})", flush=True)
    else:
        print(f"[table1] {method} k={k} seed {cfg.seed}: stages {STAGES[method]} -> {run}", flush=True)
        _train(cfg, STAGES[method], str(cls_run) if method == "decouplednet" else None, progress)
        t0 = time.perf_counter()
        evaluate_run(run, "val")
        (run / "table1_eval.json").write_text(json.dumps({"wall_s": round(time.perf_counter() - t0, 1)}) + "\n")
    rec = cell_record(run, method, k, cfg.seed, cls_run if method == "decouplednet" else None)
    print(f"[table1] {method} k={k} seed {cfg.seed}: mIoU {100 * rec['miou']:.1f}, wall {rec['wall_s']}", flush=True)
    return rec


def run_table1(scale: str = "cpu", seeds: Sequence[int] = (0,), out: str = "benchmarks/results",
               data: str = "data/fashion-scenes", runs: str = "runs/table1", budget: str = "default",
               ks: Sequence[int | str] = KS, overrides: Sequence[str] = (), progress: bool = False) -> int:
    """Train/evaluate every (method, k, seed) cell and write ``OUT/table1.{json,md,png}``; exit status.

    ``ks`` and ``overrides`` (dotted Config overrides applied before the equal-effort rule) exist
    for tests and budget studies; the published table uses the defaults.
    """
    from hetseg.bench.table1_report import write_results
    from hetseg.engine.demo import ensure_scenes

    t0 = time.perf_counter()
    ks = tuple(k if str(k) == "full" else int(k) for k in ks)
    if not (Path(data) / "meta.json").is_file():
        ensure_scenes(data, 0)  # the default fashion-scenes (any existing dataset is used as it is)
    cells: list[dict] = []
    for seed in seeds:
        base = base_config(scale, seed, data, budget, overrides)
        cls_run = ensure_classifier(base, runs, progress)
        done: dict = {}
        for k in ks:
            for method in METHODS:
                cfg = cell_config(base, method, k, runs)
                if method == "decouplednet-str" and ("decouplednet", k) in done and same_classifier_data(
                        cfg, classifier_config(base, runs)):
                    rec = {**done[("decouplednet", k)], "method": method, "same_as": "decouplednet"}
                    print(f"[table1] {method} k={k} seed {seed}: strong images = weak set, "
                          "identical to the DecoupledNet cell (reported for both)", flush=True)
                else:
                    rec = run_cell(cfg, method, k, cls_run, progress)
                done[(method, k)] = rec
                cells.append(rec)
    command = (f"hetseg bench table1 --scale {scale} --seeds {' '.join(map(str, seeds))} --out {out} "
               f"--data {data} --runs {runs}")
    extra = {"budget": budget, "ks": list(ks), "overrides": list(overrides)}
    paths = write_results(cells, out, command, scale, list(seeds), data, runs, time.perf_counter() - t0,
                          EQUAL_EFFORT, extra)
    print(f"[table1] results: {', '.join(map(str, paths))}", flush=True)
    return 0

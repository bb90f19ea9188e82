"""``hetseg bench table1``: DecoupledNet's Table 1 on fashion-scenes (issue 4).

{DecoupledNet, DecoupledNet-Str, DeconvNet} x {5, 10, 25, full} strong images per class, per seed:

* DecoupledNet: one classifier per seed, trained once on the weak set (``RUNS/seed<S>/weak_classifier``),
  then for each k a fresh run dir initialised from it (``init_from``) that trains stage ``seg`` only.
* DecoupledNet-Str: stage ``cls`` on the strong split's images (``data.weak_split`` = the strong
  split file, labels from ``labels.json``), then stage ``seg`` on the same split. At "full" the
  strong images *are* the weak set (same records, same checksum), so its classifier and its seg
  stage would be an exact re-run of DecoupledNet's "full" cell: that cell is reported for both.
* DeconvNet: ``model.name=deconvnet``, stage ``deconv`` on the strong split.

Initialisation (``init``): "pretrained" (default, the paper's protocol: every network starts from one
pretrained backbone -- ImageNet VGG-16 in the paper; at CPU scale the committed backbone
``model.backbone=shipped``, stage ``pre`` on single Fashion-MNIST train items, made once by
``hetseg bench backbone`` and shared by every seed and method; at paper scale pass the ImageNet file
as ``model.vgg_weights=``) or "scratch" (every network from random weights; results ``table1_scratch.*``).

Every cell is evaluated on val (``RUN/eval_val.json``); a cell that has it is skipped on a rerun,
and a half-trained stage resumes from its ``last.ckpt`` (``hetseg.engine.train``); an evaluated cell
needs only its records, not its weights (docs/BENCHMARKS.md, "Seeds across sessions"). The budget rule is
:data:`hetseg.bench.table1_recipe.EQUAL_EFFORT`. Results: ``OUT/table1.json``, ``table1.md``, ``table1.png``
(:mod:`hetseg.bench.table1_report`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any

from hetseg.bench.preflight import check_inputs
from hetseg.bench.provenance import check_recipe, with_overrides
from hetseg.bench.table1_recipe import (KS, METHODS, base_config, cell_config, classifier_config, equal_effort,
                                        strong_split_file)
from hetseg.bench.workers import cell_pool, job
from hetseg.config import Config
from hetseg.errors import HetsegError
from hetseg.io_atomic import write_json

STAGES = {"decouplednet": ("seg",), "decouplednet-str": ("cls", "seg"), "deconvnet": ("deconv",)}
GT_LABEL_METHODS = ("decouplednet", "decouplednet-str")  # the methods with a label classifier to replace


def _train(cfg: Config, stages: tuple[str, ...], init_from: str | None, progress: bool) -> None:
    from hetseg.methods import train

    check_recipe(cfg)
    train(cfg, stages, init_from=init_from, progress=progress)  # the method seeds the initial weights


def queue_cells(submit_classifier: Callable[[int], Future], submit_cell: Callable[[tuple, Any], Future],
                seeds: Sequence[int], todo: Sequence[tuple], jobs: int) -> dict[tuple, Future]:
    """Queue every cell of ``todo`` on a pool of ``jobs`` workers; {cell: future}.

    A seed's classifier weights do not outlive the session (docs/BENCHMARKS.md, "Seeds across
    sessions"), so a seed's DecoupledNet cells are queued the moment its classifier is done, ahead of
    the DeconvNet and -Str cells; those are handed out one at a time only while a worker would
    otherwise idle (fewer than ``jobs`` tasks unfinished), and all at once after the last classifier.
    ``submit_cell(cell, classifier run or None)``; a classifier future's result is its run dir.
    """
    waiting = {submit_classifier(s): s for s in seeds}
    others = [t for m in ("deconvnet", "decouplednet-str") for t in todo if t[2] == m]
    futs: dict[tuple, Future] = {}
    unfinished = set(waiting)
    while waiting:
        while others and len(unfinished) < jobs:
            t = others.pop(0)
            futs[t] = submit_cell(t, None)
            unfinished.add(futs[t])
        done, _ = wait(unfinished, return_when=FIRST_COMPLETED)
        unfinished -= done
        for f in [f for f in done if f in waiting]:
            s, cls_run = waiting.pop(f), f.result()
            for t in (t for t in todo if t[0] == s and t[2] == "decouplednet"):
                futs[t] = submit_cell(t, cls_run)
                unfinished.add(futs[t])
    for t in others:
        futs[t] = submit_cell(t, None)
    return futs


def sequential_order(todo: Sequence[tuple], seed: int) -> list[tuple]:
    """Seed ``seed``'s cells of ``todo`` in the order one worker runs them: its DecoupledNet cells first
    (they need the seed's classifier weights, which do not outlive a session), then the rest in grid
    order -- the same priority :func:`queue_cells` gives them under ``jobs`` > 1."""
    mine = [t for t in todo if t[0] == seed]
    return sorted(mine, key=lambda t: t[2] != "decouplednet")  # stable: k order kept within each group


def evaluated(cfg: Config, method: str) -> bool:
    """True when a cell's val scores (and, for the label-classifier methods, its GT-label scores)
    are on disk: the cell needs no weights any more, so a runs dir kept without them (a committed
    one, ``git add`` ignores *.safetensors and *.ckpt) still reports it."""
    files = ("eval_val.json", "eval_val_gt.json") if method in GT_LABEL_METHODS else ("eval_val.json",)
    return all((Path(cfg.run_dir) / f).is_file() for f in files)


def ensure_classifier(base: Config, runs: str | Path, progress: bool = False, needed: bool = True) -> Path:
    """Train (or reuse) the shared weak-set classifier of ``base.seed``; returns its run dir.
    ``needed=False`` (every DecoupledNet cell of the seed is evaluated): its record is enough."""
    from hetseg.methods import stage_done

    cfg = classifier_config(base, runs)
    check_recipe(cfg)
    if not needed:  # the cells were trained from this classifier: its record must be there, never a new one
        if not (Path(cfg.run_dir) / "model.json").is_file():
            raise HetsegError(f"{Path(cfg.run_dir) / 'model.json'}: missing, but every DecoupledNet cell of seed "
                              f"{base.seed} is evaluated from it; fix: restore the classifier's records, or delete "
                              "that seed's cells to retrain them all")
        return Path(cfg.run_dir)
    if stage_done(cfg.run_dir, "cls") is None or not (Path(cfg.run_dir) / "model.safetensors").is_file():
        print(f"[table1] seed {base.seed}: weak-set classifier ({cfg.cls.steps} steps) -> {cfg.run_dir}", flush=True)
        _train(cfg, ("cls",), None, progress)
    return Path(cfg.run_dir)


def same_classifier_data(a: Config, b: Config, memo: dict | None = None) -> bool:
    """True when two configs' classifiers would see exactly the same images and labels.

    ``memo`` keeps each weak split's checksum across calls: every seed and k compares against the one
    weak set, which on VOC without labels.json means decoding 10,582 masks per read."""
    from hetseg.methods import load_split

    memo = {} if memo is None else memo

    def checksum(cfg: Config) -> str:
        key = (cfg.data.root, cfg.data.weak_split, cfg.data.labels, cfg.data.num_classes)
        if key not in memo:
            memo[key] = load_split(cfg, "weak").weak().checksum()
        return memo[key]

    return checksum(a) == checksum(b)


def run_cell(cfg: Config, method: str, k: int | str, cls_run: Path | None, progress: bool = False) -> dict:
    """Train and evaluate one cell unless its ``eval_val.json`` exists; returns its record."""
    from hetseg.bench.table1_report import cell_record
    from hetseg.methods import evaluate_run

    run = Path(cfg.run_dir)
    check_recipe(cfg)
    if (run / "eval_val.json").is_file():
        print(f"[table1] {method} k={k} seed {cfg.seed}: done, skipped ({run})", flush=True)
    else:
        print(f"[table1] {method} k={k} seed {cfg.seed}: stages {STAGES[method]} -> {run}", flush=True)
        # the classifier's weights seed a fresh cell only: a cell killed after its weights were written resumes
        # from them (Method.train refuses --init-from on a run whose stages are all trained)
        fresh = not (run / "model.safetensors").is_file()
        _train(cfg, STAGES[method], str(cls_run) if method == "decouplednet" and fresh else None, progress)
        t0 = time.perf_counter()
        evaluate_run(run, "val")
        write_json(run / "table1_eval.json", {"wall_s": round(time.perf_counter() - t0, 1)})
    if method in GT_LABEL_METHODS and not (run / "eval_val_gt.json").is_file():
        # The same network given val's true image labels: what its label classifier costs (issue 12).
        evaluate_run(run, "val", use_gt_labels=True)
    rec = cell_record(run, method, k, cfg.seed, cls_run if method == "decouplednet" else None)
    print(f"[table1] {method} k={k} seed {cfg.seed}: mIoU {100 * rec['miou']:.1f}, wall {rec['wall_s']}", flush=True)
    return rec


def _parse_ks(ks: Sequence[int | str]) -> tuple:
    """``ks`` as given on the command line (strings) or in code: positive ints and "full", in order,
    each once; anything else is one line of error."""
    out: list = []
    for k in ks:
        if str(k) == "full":
            out.append("full")
        elif str(k).isascii() and str(k).isdigit() and int(k) > 0:  # not isdigit() alone: "²" is a digit int() refuses
            out.append(int(k))
        else:
            raise HetsegError(f"--ks: '{k}' is not a mask budget; fix: give images per class (5, 10, 25) or 'full'")
    if len(set(out)) != len(out):
        raise HetsegError(f"--ks: {' '.join(map(str, ks))} repeats a budget; fix: name each k once")
    return tuple(out)


def _strong_fix(k: int | str, cfg: Config) -> str:
    where = f"{cfg.data.root}/{strong_split_file(k)}"
    if k == "full":
        return f"list every train image with a mask in {where} (VOC: a copy of train_aug.txt), or leave full out of --ks"
    return (f"hetseg data splits --split {cfg.data.root}/{cfg.data.weak_split} --per-class {k} --out {where} "
            f"(docs/BENCHMARKS.md, 'The benches at paper scale'), or leave {k} out of --ks")


def run_table1(scale: str = "cpu", seeds: Sequence[int] = (0,), out: str = "benchmarks/results",
               data: str = "data/fashion-scenes", runs: str | None = None, budget: str = "default",
               ks: Sequence[int | str] = KS, overrides: Sequence[str] = (), speed: str = "default",
               jobs: int = 1, progress: bool = False, init: str = "pretrained") -> int:
    """Train/evaluate every (method, k, seed) cell and write ``OUT/<name>.{json,md,png}``; exit status.

    ``name`` is table1 (``init="pretrained"``) or table1_scratch; ``runs`` defaults to ``runs/<name>``.
    ``ks`` and ``overrides`` (dotted Config overrides applied before the equal-effort rule) exist
    for tests and budget studies; ``speed`` is one of :data:`~hetseg.bench.table1_recipe.SPEEDS` (the same for every method);
    ``jobs`` > 1 trains that many cells at once in single-thread processes.
    """
    from hetseg.bench.provenance import start_weights
    from hetseg.bench.table1_report import write_results
    from hetseg.demo import ensure_bench_data

    t0 = time.perf_counter()
    name = "table1" if init == "pretrained" else f"table1_{init}"
    runs = runs or f"runs/{name}" + ("" if scale == "cpu" else f"_{scale}")
    ks = _parse_ks(ks)
    ensure_bench_data(data)  # the default fashion-scenes where there is no data set yet
    bases = {seed: base_config(scale, seed, data, budget, overrides, speed, init) for seed in seeds}
    if seeds:  # the data keys are every seed's: checked once, before any folder or training
        b = bases[seeds[0]]
        check_inputs(b, "vgg", [
            ("data.weak_split", b.data.weak_split, "set data.weak_split to the image-label split of --data", False),
            ("data.val_split", b.data.val_split, "set data.val_split to the split to score (VOC: "
             "ImageSets/Segmentation/val.txt)", True),
            *[(f"--ks {k}", strong_split_file(k), _strong_fix(k, b), True) for k in ks]])
    start = start_weights(bases[seeds[0]]) if seeds else None  # a missing shipped file: one line, now
    # -Str cells whose strong images are exactly the weak set ("full") are DecoupledNet's cell.
    memo: dict = {}
    alias = {(s, k) for s in seeds for k in ks if same_classifier_data(
        cell_config(bases[s], "decouplednet-str", k, runs), classifier_config(bases[s], runs), memo)}
    todo = [(s, k, m) for s in seeds for k in ks for m in METHODS
            if not (m == "decouplednet-str" and (s, k) in alias)]
    for s in seeds:  # refuse a runs dir of another recipe before anything trains
        check_recipe(classifier_config(bases[s], runs))
    for s, k, m in todo:
        check_recipe(cell_config(bases[s], m, k, runs))
    need_cls = {s: not all(evaluated(cell_config(bases[s], "decouplednet", k, runs), "decouplednet") for k in ks)
                for s in seeds}
    records: dict = {}
    if jobs <= 1:
        for s in seeds:
            cls_run = ensure_classifier(bases[s], runs, progress, need_cls[s])
            for seed, k, m in sequential_order(todo, s):
                records[(seed, k, m)] = run_cell(cell_config(bases[s], m, k, runs), m, k, cls_run, progress)
    else:
        pool = cell_pool(jobs)

        def submit(t: tuple, cls_run: Path | None):
            s, k, m = t
            return pool.submit(job, run_cell, cell_config(bases[s], m, k, runs), m, k, cls_run, progress)

        with pool:
            futs = queue_cells(lambda s: pool.submit(job, ensure_classifier, bases[s], runs, progress, need_cls[s]),
                               submit, seeds, todo, jobs)
            records = {t: f.result() for t, f in futs.items()}
    cells = []
    for s in seeds:
        for k in ks:
            for m in METHODS:
                if (s, k, m) in records:
                    cells.append(records[(s, k, m)])
                else:
                    print(f"[table1] {m} k={k} seed {s}: strong images = weak set, identical to the "
                          "DecoupledNet cell (reported for both)", flush=True)
                    cells.append({**records[(s, k, "decouplednet")], "method": m, "same_as": "decouplednet"})
    command = with_overrides(f"hetseg bench table1 --scale {scale} --seeds {' '.join(map(str, seeds))} --init {init} "
                             f"--out {out} --data {data} --runs {runs}"
                             + (f" --ks {' '.join(map(str, ks))}" if ks != KS else ""), overrides)
    first = bases[seeds[0]] if seeds else Config()
    extra = {"init": init, "budget": budget, "speed": speed, "precision": first.seg.precision,
             "channels_last": first.seg.channels_last, "jobs": jobs, "ks": list(ks),
             "overrides": list(overrides), "backbone": start}
    paths = write_results(cells, out, command, scale, list(seeds), data, runs, time.perf_counter() - t0,
                          equal_effort(init, scale), extra, name)
    print(f"[table1] results: {', '.join(map(str, paths))}", flush=True)
    return 0

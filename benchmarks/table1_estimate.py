"""How long will one seed of ``hetseg bench table1`` take with a given recipe? (issue 4, item 5)

Runs every kind of work the benchmark does for a few steps through the real pipeline (Lightning,
DataLoader, the bench's own configs): the classifier on the weak set, the seg stage on strong_5 and
on train_full, the DeconvNet on both, and evaluation of a slice of val for both model families.
It times each optimizer step from one ``on_train_batch_end`` to the next (data loading included),
as process CPU time at 1 thread -- the 1-core wall time, which other processes on a shared machine
do not inflate -- and multiplies by the bench plan (:func:`plan`). The 2-core figure divides by the
measured 2-thread speed-up when ``--threads2`` is given, else reports the 1-core bound.

The recipe is the bench's own (:func:`hetseg.bench.table1_recipe.base_config`): ``--init pretrained`` (the
default, as ``make bench-table1``) or ``scratch``, then Config overrides as ``hetseg bench table1`` takes them
(e.g. ``cls.steps=9000 seg.steps=7200``). The per-step times do not depend on the step budgets; the plan does.

Usage: ``.venv/bin/python benchmarks/table1_estimate.py [--init pretrained|scratch] [--steps 12] [--val 100]
[--speed default|fp32|bf16|bf16+cl] [KEY=VALUE ...]``; writes ``benchmarks/results/table1_estimate[_<speed>].json``
and ``.md`` (``--name`` for another stem).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from hetseg.bench.table1_recipe import KS, SPEEDS, base_config, cell_config, classifier_config
from hetseg.engine.train import resolve_precision
from hetseg.io_atomic import write_json, write_text


class StepClock(L.Callback):
    """Process CPU seconds between consecutive optimizer steps (data loading included)."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_train_batch_end(self, trainer, *args) -> None:
        self.marks.append(time.process_time())

    def per_step(self, warmup: int = 2) -> float:
        d = sorted(b - a for a, b in zip(self.marks[warmup:], self.marks[warmup + 1:]))
        return d[len(d) // 2]


def plan(cfg, ks=KS) -> dict:
    """Optimizer steps and evaluations of one seed of the bench (DecoupledNet-Str at "full" is
    DecoupledNet's cell, see hetseg.bench.table1)."""
    partial = [k for k in ks if str(k) != "full"]
    return {"cls_runs": 1 + len(partial), "cls_steps": (1 + len(partial)) * cfg.cls.steps,
            "seg_steps_small": (len(partial) * 2) * cfg.seg.steps,
            "seg_steps_full": cfg.seg.steps * ("full" in ks),
            "deconv_steps_small": len(partial) * cfg.deconv.steps,
            "deconv_steps_full": cfg.deconv.steps * ("full" in ks),
            "evals_decouplednet": len(partial) * 2 + ("full" in ks), "evals_deconvnet": len(ks),
            "seg_runs": len(partial) * 2 + ("full" in ks), "deconv_runs": len(ks)}


def _time_stage(cfg, stages, steps: int, init_from=None) -> tuple[float, float]:
    """-> (CPU s per step, CPU s per stage run outside the steps: set-up, final validation, saving)."""
    from hetseg.methods import train

    for sc in (cfg.cls, cfg.seg, cfg.deconv):
        sc.steps, sc.checkpoint_every = steps, 10 ** 6
    clock = StepClock()
    torch.manual_seed(0)
    c0 = time.process_time()
    train(cfg, stages, init_from=init_from, progress=False, callbacks=[clock])
    total = time.process_time() - c0
    return clock.per_step(), max(0.0, total - steps * clock.per_step())


def _time_eval(run: Path, n: int) -> float:
    """CPU seconds per val image (first ``n`` images of val)."""
    from hetseg.engine.checkpoint import load_model
    from hetseg.engine.evaluate import evaluate_split
    from hetseg.methods import load_split

    net, cfg, _ = load_model(run)
    sp = load_split(cfg, "val")
    sp.records = sp.records[:n]
    c0 = time.process_time()
    evaluate_split(net, sp, cfg.data.num_classes, cfg.eval.threshold, 16, pred_dir=run / "pred")  # size: net.input_size
    return (time.process_time() - c0) / n


def measure(data: str, steps: int, val: int, speed: str = "default", init: str = "pretrained",
            overrides: tuple[str, ...] = ()) -> tuple[dict, object]:
    """Per-unit process CPU seconds at 1 thread, and the seed-0 base Config they were timed with."""
    base = base_config("cpu", 0, data, overrides=overrides, speed=speed, init=init)
    t: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        cls_cfg = classifier_config(base, tmp)
        t["cls_step"], t["cls_run_overhead"] = _time_stage(cls_cfg, ("cls",), steps)
        for k in (5, "full"):
            dn = cell_config(base, "decouplednet", k, tmp)
            t[f"seg_step_{k}"], t["seg_run_overhead"] = _time_stage(dn, ("seg",), steps, cls_cfg.run_dir)
            dc = cell_config(base, "deconvnet", k, tmp)
            t[f"deconv_step_{k}"], t["deconv_run_overhead"] = _time_stage(dc, ("deconv",), steps)
        t["eval_image_decouplednet"] = _time_eval(Path(dn.run_dir), val)
        t["eval_image_deconvnet"] = _time_eval(Path(dc.run_dir), val)
    return {k: round(v, 4) for k, v in t.items()}, base


def estimate(t: dict, base, n_val: int, speedup2: float | None) -> dict:
    p = plan(base)
    parts = {"cls": p["cls_steps"] * t["cls_step"],
             "seg": p["seg_steps_small"] * t["seg_step_5"] + p["seg_steps_full"] * t["seg_step_full"],
             "deconv": p["deconv_steps_small"] * t["deconv_step_5"] + p["deconv_steps_full"] * t["deconv_step_full"],
             "stage_overheads": p["cls_runs"] * t["cls_run_overhead"] + p["seg_runs"] * t["seg_run_overhead"]
             + p["deconv_runs"] * t["deconv_run_overhead"],
             "eval": n_val * (p["evals_decouplednet"] * t["eval_image_decouplednet"]
                              + p["evals_deconvnet"] * t["eval_image_deconvnet"])}
    one = sum(parts.values())
    return {"plan": p, "seconds_1core": {k: round(v) for k, v in parts.items()}, "total_min_1core": round(one / 60, 1),
            "two_thread_speedup": speedup2,
            "total_min_2cores": round(one / 60 / speedup2, 1) if speedup2 else None,
            "budget": {"cls": [base.cls.steps, base.cls.batch_size], "seg": [base.seg.steps, base.seg.batch_size],
                       "deconv": [base.deconv.steps, base.deconv.batch_size]}}


def makespan(t: dict, base, n_val: int, jobs: int) -> float:
    """Seconds for ``run_table1(jobs=N)`` (one seed): its queue order on N single-thread workers."""
    def run(stage: str, steps: int, k) -> float:  # one stage run on k strong images per class
        key = f"{stage}_step" if stage == "cls" else f"{stage}_step_{'full' if k == 'full' else 5}"
        return steps * t[key] + t[f"{stage}_run_overhead"]

    ev_dn, ev_dc = n_val * t["eval_image_decouplednet"], n_val * t["eval_image_deconvnet"]
    cls = run("cls", base.cls.steps, None)
    queue = [("cls", cls)] + [("x", run("deconv", base.deconv.steps, k) + ev_dc) for k in KS]
    queue += [("x", cls + run("seg", base.seg.steps, k) + ev_dn) for k in KS if k != "full"]
    queue += [("dn", run("seg", base.seg.steps, k) + ev_dn) for k in KS]
    free, cls_done = [0.0] * jobs, 0.0
    for kind, dur in queue:  # each task goes to the first free worker (DecoupledNet after the classifier)
        i = min(range(jobs), key=free.__getitem__)
        start = max(free[i], cls_done) if kind == "dn" else free[i]
        free[i] = start + dur
        cls_done = free[i] if kind == "cls" else cls_done
    return max(free)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/fashion-scenes")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--val", type=int, default=100, help="val images timed per model family")
    ap.add_argument("--threads2", type=float, default=None, help="2-thread speed-up to assume (e.g. 1.7)")
    ap.add_argument("--speed", default="default", choices=sorted(SPEEDS))
    ap.add_argument("--init", default="pretrained", choices=("pretrained", "scratch"),
                    help="the bench's initialisation protocol (make bench-table1: pretrained)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--name", default=None, help="file stem (default table1_estimate[_<speed>])")
    ap.add_argument("overrides", nargs="*", help="Config overrides as hetseg bench table1 takes them")
    args = ap.parse_args(argv)
    command = "python benchmarks/table1_estimate.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    t, base = measure(args.data, args.steps, args.val, args.speed, args.init, tuple(args.overrides))
    from hetseg.methods import load_split

    n_val = len(load_split(base, "val"))
    rep = {"command": command.strip(), "init": args.init, "overrides": args.overrides, "data": args.data,
           "precision": resolve_precision(base.seg.precision),
           "speed": args.speed, "cpu_s_per_unit (1 thread)": t, **estimate(t, base, n_val, args.threads2),
           "total_min_jobs2": round(makespan(t, base, n_val, 2) / 60, 1),
           "val_images": n_val, "torch": torch.__version__, "wall_s": round(time.perf_counter() - t0, 1)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or "table1_estimate" + ("" if args.speed == "default" else f"_{args.speed}")
    write_json(out / f"{name}.json", rep)
    recipe = f"--init {args.init}" + "".join(f" {o}" for o in args.overrides)
    md = [f"# Estimated wall time of one seed of `hetseg bench table1 --scale cpu {recipe}` (speed {args.speed}: "
          f"precision {base.seg.precision}, here {rep['precision']}; channels_last "
          f"{base.seg.channels_last})", "",
          f"Command: `{rep['command']}`; data `{args.data}`; torch {torch.__version__}.", "",
          "Per-step process CPU time at 1 thread (data loading included), times the bench plan.", "",
          "| unit | CPU s |", "|---|---|", *[f"| {k} | {v} |" for k, v in t.items()], "",
          f"Budgets (steps, batch): {rep['budget']}; plan: {rep['plan']}", "",
          f"1 core: {rep['total_min_1core']} min ({rep['seconds_1core']} s)"
          + (f"; 2 cores at x{args.threads2}: {rep['total_min_2cores']} min" if args.threads2 else "")
          + f"; `jobs=2` (two single-thread cell processes on 2 idle cores): {rep['total_min_jobs2']} min", ""]
    write_text(out / f"{name}.md", "\n".join(md))
    print(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

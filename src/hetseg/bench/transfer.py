"""``hetseg bench transfer``: TransferNet's Table 1 comparison (Sec. 6.3) on a transfer split (issue 5).

{TransferNet, TransferNet-GT, BaselineNet, DecoupledNet-transfer} are trained on the source
domain's masks (+ both domains' image labels) and scored on the target domain's val set with
the VOC devkit metric. The recipe is :func:`hetseg.methods.transfernet.evaluate.run_recipe`; budgets are
:data:`RECIPES` plus the equal-effort rule :func:`equal_effort`, fixed before any run.

Results: ``OUT/transfer.json`` (everything: per-seed scores, splits + checksums, budgets, wall
times, claims), ``OUT/transfer.md`` (the table and which of the paper's claims hold) and
``OUT/transfer_attention.png`` (attention / densified attention / P(fg), paper Fig. 2-3).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hetseg.bench.curves import stage_losses
from hetseg.bench.provenance import (dataset_info, machine_info, machine_labels, read_json, stage_sessions,
                                     start_weights, trained_as, with_overrides)
from hetseg.bench.table1_report import mean_std
from hetseg.bench.transfer_report import NAMES, PAPER_VAL, claims, markdown, mean_or_none, per_step
from hetseg.bench.workers import cell_pool, job
from hetseg.bench import paper
from hetseg.bench.preflight import check_inputs
from hetseg.config import Config, describe_difference
from hetseg.errors import HetsegError
from hetseg.io_atomic import write_json, write_text

# Config overrides per scale, fixed before the final run. CPU scale (issue 12, second recipe): the
# classifier takes Table 1's classifier recipe, 3,000 steps (docs/DECISIONS.md, "Classifier recipe,
# three-seed decision"; chosen on held-out *train* scenes); stages 1 and 2 take twice the first
# recipe's steps, because every training-loss curve of the first recipe was still falling by the
# one flatness rule (docs/BENCHMARKS.md, "Did the loss flatten?"). Nothing was chosen on val.
RECIPES: dict[str, list[str]] = {
    "cpu": [
        "model.backbone=shipped",                                  # every network from the shipped backbone
        # the shared classifier: Table 1's recipe (the 1,500-step history: add cls.steps=1500)
        "cls.steps=3000", "cls.lr=0.002", "cls.batch_size=32",
        "transfer.feature_scale=0",                                # calibrate A = s * conv5_3 (max -> ~1)
        "transfer.att.steps=1000", "transfer.att.batch_size=16",   # stage 1: 16 target + 16 source rows
        "transfer.joint.steps=1400", "transfer.joint.batch_size=16",  # stage 2: 16 source-mask rows / step
        "crops.proposals=none",                                    # DecoupledNet crops: random boxes only
    ],
    "paper": paper.TRANSFER,  # configs/transfernet_coco_paper.yaml's training sections; ImageNet VGG-16
}


def equal_effort(cfg: Config) -> Config:
    """Every decoder gets stage 2's budget: the same optimizer steps with the same number of
    source-mask rows per step. BaselineNet (no recipe of its own) also takes TransferNet's
    optimizer; DecoupledNet-transfer keeps its own (``cfg.seg``: SGD, step policy) and its own micro-batch
    where that divides the rows per update: its BatchNorm layers (models/bridge.py) see ``cfg.seg.batch_size``
    crops, where stage 2's micro-batch (2 pairs at paper scale, for memory) would give them 2."""
    j = cfg.transfer.joint
    b = cfg.transfer.baseline
    for f in ("steps", "batch_size", "accumulate", "lr", "optimizer", "weight_decay", "lr_step", "momentum",
              "precision", "checkpoint_every"):
        setattr(b, f, getattr(j, f))
    rows = j.batch_size * j.accumulate
    micro = cfg.seg.batch_size if rows % cfg.seg.batch_size == 0 else j.batch_size
    cfg.seg.steps, cfg.seg.batch_size, cfg.seg.accumulate = j.steps, micro, rows // micro
    return cfg


def transfer_config(scale: str, seed: int, data: str, overrides: Sequence[str] = ()) -> Config:
    """The transfer bench's config for one seed: ``scale``'s recipe, then ``overrides``, then the equal-effort
    budgets (docs/BENCHMARKS.md). Raises HetsegError for an unknown scale."""
    if scale not in RECIPES:
        raise HetsegError(f"unknown scale '{scale}'; fix: --scale {' | '.join(RECIPES)}")
    cfg = Config(seed=seed).override([f"data.root={data}", f"model.scale={scale}", *RECIPES[scale], *overrides])
    return equal_effort(cfg)


def _command(scale, seeds, out, data, runs, jobs: int = 1) -> str:
    return (f"hetseg bench transfer --scale {scale} --seeds {' '.join(map(str, seeds))} --out {out} "
            f"--data {data} --runs {runs} --jobs {jobs}")


def _train_seed(cfg: Config, root: str) -> dict:
    """One seed's training (a worker of ``jobs`` > 1): {"train": summaries, "wall_s": per run}."""
    from hetseg.methods.transfernet.evaluate import run_recipe

    return run_recipe(cfg, root, evaluate=False, log=lambda *a: print(*a, flush=True))


def seed_record(cfg: Config, root: Path) -> dict | None:
    """A seed's evaluated results from ``root/transfer_eval.json`` (written after its evaluation), with
    its scores rebuilt from their confusion matrices; None when the seed has not been evaluated. The
    records, unlike the weights, can be committed, so seeds may be trained in different sessions
    (docs/BENCHMARKS.md, "Seeds across sessions"). Another recipe's record is refused."""
    from hetseg.metrics import scores_from_confusion

    p = root / "transfer_eval.json"
    if not p.is_file():
        return None
    rec = read_json(p)
    # Judged as the transfer methods read a config (their section included, DIS's and DeconvNet's not).
    diff = cfg.recipe_difference(rec.get("config", {}), reader="transfernet")
    if diff:
        raise HetsegError(f"{p}: seed {cfg.seed} was evaluated with another recipe (differs in "
                          f"{describe_difference(diff)}); fix: pass another --runs directory or delete this one")
    scores = {k: scores_from_confusion(v["confusion"], v["num_images"]) for k, v in rec["scores"].items()}
    return {**rec, "scores": scores}


def run_transfer(scale: str = "cpu", seeds: Sequence[int] = (0,), out: str = "benchmarks/results",
                 data: str = "data/fashion-scenes", runs: str = "runs/transfer", overrides: Sequence[str] = (),
                 log: Callable[[str], object] = print, jobs: int = 1) -> int:
    """Train + evaluate every method for each seed; write transfer.json/.md/_attention.png into ``out``.

    ``jobs`` > 1 trains that many seeds at once in single-thread processes (:mod:`hetseg.bench.workers`);
    evaluation then runs in this process, seed by seed, on the finished runs."""
    from hetseg.baselines import all_background, best_threshold
    from hetseg.demo import ensure_bench_data
    from hetseg.methods import class_names, load_config_split
    from hetseg.methods.transfernet.data import transfer_classes
    from hetseg.methods.transfernet.evaluate import METHODS, label_identification, run_recipe

    t0 = time.perf_counter()
    out_dir = Path(out)
    ensure_bench_data(data)  # as Table 1's and DIS's benches: the default fashion-scenes where there is none
    per_seed: list[dict] = []
    cfg = None
    trained: dict = {}  # seed -> what its worker measured while training (a rerun below only finds it done)
    roots = {s: Path(runs) / f"{scale}_s{s}" for s in seeds}
    cfgs = {s: transfer_config(scale, s, data, overrides) for s in seeds}
    if seeds:  # the data keys are every seed's: checked once, before any folder or training
        t = cfgs[seeds[0]].transfer
        check_inputs(cfgs[seeds[0]], "vgg", [
            ("transfer.source_split", t.source_split, "set it to the split of source-class images with masks", False),
            ("transfer.target_split", t.target_split, "set it to the split of target-class images with labels", False),
            ("transfer.val_split", t.val_split, "set it to the target-class split to score", True)])
        transfer_classes(cfgs[seeds[0]])  # read when stage 2 builds, after the shared classifier
    out_dir.mkdir(parents=True, exist_ok=True)  # after the refusals above: a refused bench leaves no folder
    done = {s: rec for s in seeds if (rec := seed_record(cfgs[s], roots[s]))}
    todo = [s for s in seeds if s not in done]
    workers = min(jobs, len(todo)) if jobs > 1 and len(todo) > 1 else 1  # what actually ran, as recorded
    if workers > 1:
        with cell_pool(workers) as pool:
            futs = {s: pool.submit(job, _train_seed, cfgs[s], str(roots[s]))
                    for s in todo}
            trained = {s: f.result() for s, f in futs.items()}
    figure = out_dir / "transfer_attention.png"  # from the first seed evaluated here (records have no weights)
    for seed in seeds:
        cfg, root = cfgs[seed], roots[seed]
        if seed in done:
            log(f"[bench transfer] seed {seed}: evaluated, from its records ({root / 'transfer_eval.json'})")
            per_seed.append(done[seed])
            continue
        log(f"[bench transfer] seed {seed} -> {root}")
        res = run_recipe(cfg, root, figure=figure, log=log)
        figure = None
        if seed in trained:
            res = {**res, "train": trained[seed]["train"],
                   "wall_s": {**trained[seed]["wall_s"], "evaluation": res["wall_s"]["evaluation"]}}
        rec = {"seed": seed, "run": str(root), "scores": res["scores"], "train": res["train"],
               "wall_s": res["wall_s"], "identification": label_identification(root / "classifier", res["val"], cfg),
               "train_loss": stage_losses(root), "jobs": workers if seed in trained else 1,
               # where this record was written: its evaluation, and its training unless an earlier invocation
               # trained the runs and stopped before evaluating them
               "machine": machine_info()}
        write_json(root / "transfer_eval.json", {**rec, "config": cfg.to_dict(), "scores": {
            k: v.to_dict(class_names(cfg)) for k, v in res["scores"].items()}})
        per_seed.append(rec)
    # seeds differ in nothing the val split depends on
    val = load_config_split(cfg, "transfer.val_split")
    first = roots[seeds[0]] / "transfernet"
    if figure is not None and (first / "model.safetensors").is_file():
        # Every seed came from its records, but the first seed's weights are still on this machine: the
        # figure then shows the recipe the tables report, not whatever an earlier invocation drew.
        from hetseg.engine.checkpoint import load_model
        from hetseg.methods.transfernet.evaluate import attention_figure

        tn = load_model(first)[0]
        attention_figure(tn, val, figure, tn.input_size, bg_scale=cfg.transfer.bg_scale)
        figure = None
    if figure is not None:
        log(f"[bench transfer] {figure}: not redrawn, every seed came from its records and seed "
            f"{seeds[0]}'s weights are gone")
    names = class_names(cfg)
    splits = {}
    for key in ("source_split", "target_split", "val_split"):
        sp = load_config_split(cfg, f"transfer.{key}")
        splits[key] = {"file": getattr(cfg.transfer, key), "images": len(sp), "checksum": sp.checksum(),
                       "masks": sum(r.mask is not None for r in sp.records)}
    context = {"all_background": all_background(val, cfg.data.num_classes).miou,
               "best_global_threshold_oracle_labels": best_threshold(val, cfg.data.num_classes)[0].miou}

    methods: dict = {}
    for m in METHODS:
        key = next(k for k in per_seed[0]["scores"] if k.split("+")[0] == m)
        mious = [s["scores"][key].miou for s in per_seed]
        ious = [s["scores"][key].to_dict(names)["iou"] for s in per_seed]
        mean, std = mean_std(mious)
        methods[m] = {"name": NAMES[m], "key": key, "miou": mious, "mean": mean, "std": std, "paper_val_miou": PAPER_VAL[m],
                      "iou_mean": {n: mean_or_none([d[n] for d in ious]) for n in names},
                      "per_seed": [s["scores"][key].to_dict(names) for s in per_seed]}
    found = claims(methods)
    t = per_seed[0]["train"]
    budgets = {
        "classifier_steps": cfg.cls.steps, "classifier_batch": cfg.cls.batch_size,
        "att_steps": cfg.transfer.att.steps,
        "decoder_steps": {"transfernet": cfg.transfer.joint.steps, "baselinenet": cfg.transfer.baseline.steps,
                          "decouplednet_transfer": cfg.seg.steps},
        "source_rows_per_step": cfg.transfer.joint.batch_size * cfg.transfer.joint.accumulate,
        "target_rows_per_step_transfernet": cfg.transfer.joint.batch_size * cfg.transfer.joint.accumulate,
        "seconds_per_step": per_step(t),
    }
    command = with_overrides(_command(scale, seeds, out, data, runs, jobs), overrides)
    report = {
        "benchmark": "transfer (TransferNet CVPR 2016, Table 1 / Sec. 6.3)", "scale": scale, "seeds": list(seeds),
        "data_root": data, "dataset": dataset_info(data), "splits": splits, "val": {"file": cfg.transfer.val_split, "images": len(val.strong()),
                                                     "checksum": val.checksum()},
        "class_names": names, "target_classes": transfer_classes(cfg)[1],
        "source_classes": transfer_classes(cfg)[0],
        "evaluation": "VOC devkit mIoU on the target val masks at original resolution; labels from the shared "
                      f"classifier restricted to target classes (sigmoid >= {cfg.transfer.threshold}, argmax "
                      "fallback), ground truth for -GT; background: P(bg) x "
                      f"{cfg.transfer.bg_scale}, fg where some label's P(fg) > 0.5"
                      + (", dense CRF" if cfg.transfer.crf else ", no CRF"),
        "methods": methods, "claims": found, "context": context, "budgets": budgets,
        "feature_scale": [s["train"]["transfernet"]["joint"].get("feature_scale") for s in per_seed],
        "identification": [s["identification"] for s in per_seed],
        "train_loss": {str(s["seed"]): s["train_loss"] for s in per_seed},  # per stage, per tenth of its steps
        "backbone": start_weights(cfg),  # file + sha256, as Table 1 records it
        "wall_s": {"per_seed": [s["wall_s"] for s in per_seed], "total": round(time.perf_counter() - t0, 1)},
        "config": cfg.to_dict(), "command": command, "machine": machine_info(),
        # where each seed's record was written (a record from before machines were recorded: not listed)
        "record_machines": machine_labels(per_seed),
        # each seed's training sessions (every stage of every run, the shared classifier once) by precision and
        # device: `precision: auto` resolves per machine, and seeds may train on different ones
        "trained_as": trained_as({s["seed"]: [x for stages in s["train"].values() for d in stages.values()
                                              if isinstance(d, dict) for x in stage_sessions(d)] for s in per_seed}),
        "jobs": workers,  # this invocation; > 1: seeds trained side by side in single-thread processes
        "jobs_per_seed": [s.get("jobs", 1) for s in per_seed],  # as each seed was trained (walls not comparable to 1)
    }
    write_json(out_dir / "transfer.json", report)
    write_text(out_dir / "transfer.md", markdown(report, names))
    log(f"[bench transfer] {out_dir / 'transfer.md'}; total {report['wall_s']['total']} s")
    for m in METHODS:
        log(f"  {NAMES[m]:22s} mIoU {methods[m]['mean'] * 100:.1f}")
    return 0

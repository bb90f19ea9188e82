"""The probe that fixes the fashion-scenes recipes from the shipped backbone (issue 12; docs/DECISIONS.md,
"Recipes from the shipped backbone"). Training scenes only, never val:

* held out: the last 500 scenes of ``train_weak.txt`` that are in no strong split
  (``splits/probe_heldout.txt``); the classifier trains on the other 9,500 (``splits/probe_weak.txt``).
* ``--stage cls``: DecoupledNet's classifier from ``model.backbone=shipped``; every ``--every`` steps
  the held-out mAP (``val/mAP``) and the mean training loss are printed.
* ``--stage seg``: the decoder on ``strong_<k>.txt`` from a finished ``--stage cls`` run
  (``init_from``); held-out mIoU with predicted labels and with true labels at the end, scored on the
  held-out scenes' masks (``splits/probe_heldout_masks.txt``).
* ``--stage deconv``: DeconvNet with Table 1's recipe (``hetseg.bench.table1_recipe.base_config``, pretrained)
  but ``--steps`` steps, on ``strong_<k>.txt`` or ``--k full``; the training loss per tenth (at full
  every train scene is a strong image, so no held-out score), held-out mIoU otherwise.

    python scripts/fashion_recipe_probe.py --stage cls --steps 1500 --run runs/probe/cls
    python scripts/fashion_recipe_probe.py --stage seg --steps 800 --init-from runs/probe/cls --run runs/probe/seg
    python scripts/fashion_recipe_probe.py --stage deconv --steps 5400 --k full --run runs/probe/deconv
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hetseg.bench.curves import curve, loss_by_parts
from hetseg.config import Config

HELD_OUT = 500


def write_probe_splits(root: Path) -> None:
    """probe_weak.txt / probe_heldout.txt under ``root/splits`` (idempotent; atomic: training reads them)."""
    from hetseg.io_atomic import write_text

    sp = root / "splits"
    weak = sp.joinpath("train_weak.txt").read_text().split()
    strong = set().union(*(set(sp.joinpath(f"strong_{k}.txt").read_text().split()) for k in (5, 10, 25)))
    held = [r for r in weak if r not in strong][-HELD_OUT:]
    keep = [r for r in weak if r not in set(held)]
    write_text(sp / "probe_heldout.txt", "\n".join(held) + "\n")
    write_text(sp / "probe_weak.txt", "\n".join(keep) + "\n")
    # The same held-out scenes with their masks (train_full.txt's lines), for scoring decoders:
    # an image-only line is a weak record, which evaluation has nothing to score against.
    full = {ln.split()[0]: ln for ln in sp.joinpath("train_full.txt").read_text().splitlines() if ln.strip()}
    write_text(sp / "probe_heldout_masks.txt", "\n".join(full[r] for r in held) + "\n")


def deconv_config(root: Path, a: argparse.Namespace) -> Config:
    """Table 1's DeconvNet cell recipe with ``a.steps`` deconv steps (the rest unchanged)."""
    import dataclasses

    from hetseg.bench.table1_recipe import base_config, cell_config

    cell = cell_config(base_config("cpu", 0, root, overrides=a.overrides, init="pretrained"), "deconvnet", a.k, "")
    return dataclasses.replace(cell, run_dir=a.run, deconv=dataclasses.replace(cell.deconv, steps=a.steps))


def log_points(stage_dir: Path, every: int) -> list[dict]:
    """[{step, train_loss (mean over the ``every`` steps before it), heldout_map}] of a cls stage."""
    c = curve(stage_dir, every, metric="val/mAP")
    loss = dict(c["train_loss"])
    return [{"step": s, "train_loss": loss.get(s), "heldout_map": m} for s, m in c["held_out_acc"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=("cls", "seg", "deconv"), required=True)
    ap.add_argument("--data", default="data/fashion-scenes")
    ap.add_argument("--run", required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--k", default="5")
    ap.add_argument("--init-from", default=None)
    ap.add_argument("overrides", nargs="*", help="extra Config overrides, e.g. cls.lr=0.001")
    a = ap.parse_args()
    from hetseg.engine.evaluate import evaluate_run
    from hetseg.methods import train

    root = Path(a.data)
    write_probe_splits(root)
    if a.stage == "deconv":
        cfg = deconv_config(root, a)
    else:
        cfg = Config(run_dir=a.run, seed=0).override([
            f"data.root={root}", "crops.proposals=none", "data.weak_split=splits/probe_weak.txt",
            "data.val_split=splits/probe_heldout.txt", f"data.strong_split=splits/strong_{a.k}.txt",
            *(["model.backbone=shipped", f"cls.steps={a.steps}", f"cls.val_every={a.every}"] if a.stage == "cls"
              else [f"seg.steps={a.steps}"]), *a.overrides])
    t0 = time.perf_counter()
    init = a.init_from if not Path(cfg.run_dir, "model.safetensors").is_file() else None  # a rerun reports again
    train(cfg, (a.stage,), init_from=init, progress=False)
    wall = time.perf_counter() - t0
    rec = {"stage": a.stage, "steps": a.steps, "overrides": a.overrides, "wall_s": round(wall, 1),
           # the stage's resolved optimizer (DeconvNet's is derived from cls.*, so overrides alone do not say it)
           "optimizer": {k: getattr(getattr(cfg, a.stage), k) for k in ("optimizer", "lr", "lr_step", "batch_size")}}
    if a.stage == "cls":
        rec["points"] = log_points(Path(a.run) / "cls", a.every)
    elif a.stage == "deconv":
        rec["train_loss"] = loss_by_parts(Path(a.run) / "deconv")
        if a.k != "full":
            scores, _ = evaluate_run(a.run, "splits/probe_heldout_masks.txt")
            rec["heldout_miou"] = round(scores.miou * 100, 1)
    else:
        rec["train_loss"] = loss_by_parts(Path(a.run) / "seg")
        for gt in (False, True):
            scores, _ = evaluate_run(a.run, "splits/probe_heldout_masks.txt", use_gt_labels=gt)
            rec["heldout_miou_gt" if gt else "heldout_miou"] = round(scores.miou * 100, 1)
    Path(a.run, "probe.json").write_text(json.dumps(rec, indent=1))
    print(json.dumps(rec))


if __name__ == "__main__":
    main()

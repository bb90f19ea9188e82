"""Retrain and ship the real-photo model ``voc-lite0`` (README, "Real photos"; docs/DECISIONS.md,
"The shipped real-photo model").

Needs a finished ``hetseg bench voc-real`` run (its division, weak-set classifier, DecoupledNet k = 10
cell and ``ship_about.json``). The shipped model is that cell -- same weak-set classifier recipe, same 151
strong images -- with the decoder recipe ``SHIP``: the bench's budget is an equal-effort
measurement rule; a shipped model only has to be as good as a short CPU budget allows.

``SHIP`` was chosen between two finished candidates on training images only: the 229 weak images
that are not among the 151 strong ones (their masks trained neither), DecoupledNet with predicted
labels. The bench recipe at 3x its seg steps (stride 4, Adam 1e-2, 900 steps) scored 18.8 mIoU
(44.2 with true labels); stride 2, Adam 1e-3, 720 steps scored 19.1 (44.3) and, on the test
fixtures, puts its foreground above 0.5 where the other stays below it -- a near-tie on mIoU, decided
by the rule fixed before the comparison (the higher predicted-label mIoU). Its scores on the
evaluation images are recorded in model.json, never used to choose. Resumable.

    python scripts/ship_voc_lite0.py --runs runs/voc_real --run-dir runs/voc_lite0_ship720 --replace
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hetseg import zoo
from hetseg.config import Config
from hetseg.bench.voc_real_report import figure
from hetseg.methods import evaluate_run, train

# Relative to the bench's DecoupledNet cell config (bench/voc_real.py RECIPE).
SHIP = ["seg.steps=720", "seg.lr=0.001", "model.decoder_stride=2"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/voc_real", help="the bench's --runs directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--run-dir", default="runs/voc_lite0_ship720")
    ap.add_argument("--name", default="voc-lite0")
    ap.add_argument("--replace", action="store_true")
    ap.add_argument("--figure", default="benchmarks/results/voc_lite0.png",
                    help="photo | prediction | truth on the first four evaluation photos")
    args = ap.parse_args(argv)

    cell = Path(args.runs) / f"seed{args.seed}" / f"decouplednet_k{args.k}"
    cfg = Config.load(cell / "config.json").override([*SHIP, f"run_dir={args.run_dir}"])
    # Both stages in this run: stage cls repeats the bench's weak-set classifier (same recipe and
    # seed; the classifier does not depend on the decoder's shape, so its weights are the bench's),
    # and the decoder starts from this model's own seeded initialisation.
    train(cfg, ("cls", "seg"), progress=False)

    scores, report = evaluate_run(args.run_dir, "val")
    gt = evaluate_run(args.run_dir, "val", use_gt_labels=True)[0]
    about = json.loads((Path(args.runs) / "ship_about.json").read_text())
    n_eval = about["scores"]["eval_images"]
    about.update({
        "summary": (f"DecoupledNet on ImageNet EfficientNet-Lite0, {cfg.model.input_size} px, 20 VOC classes; trained "
                    f"on {about['training_images']['weak_labels']} VOC photos with image labels, "
                    f"{about['training_images']['strong_masks']} of them with masks; {100 * scores.miou:.1f} mIoU on "
                    f"{n_eval} held-out VOC photos"),
        "command": [about["command"], "python scripts/ship_voc_lite0.py " + " ".join(sys.argv[1:] if argv is None else argv)],
        "run": args.run_dir,
        "budget": {**about["budget"], "seg": {"steps": cfg.seg.steps, "batch": cfg.seg.batch_size}},
        "recipe": [*about["recipe"], *SHIP],
        "bench_cell": {"run": str(cell), "eval_miou": about["scores"]["eval_miou"],
                       "eval_miou_gt_labels": about["scores"]["eval_miou_gt_labels"]},
    })
    about["scores"] = {**about["scores"], "eval_miou": scores.miou, "eval_miou_gt_labels": gt.miou,
                       "eval_iou": report["scores"]["iou"]}
    figure([{"method": "decouplednet", "k": args.k, "seed": args.seed, "run": args.run_dir}], cfg, Path(args.figure), 4)
    print(f"shipped: {zoo.ship(args.run_dir, args.name, about, replace=args.replace)}; eval mIoU "
          f"{100 * scores.miou:.1f} ({100 * gt.miou:.1f} with true labels)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The real-photo bench's results: ``voc_real.json`` (everything), ``voc_real.md`` (tables) and
``voc_real.png`` (evaluation photos: image | each method at the largest k | ground truth, legend)."""

from __future__ import annotations

from pathlib import Path

from hetseg.bench.curves import tenths_cells, tenths_header
from hetseg.bench.provenance import machine_info
from hetseg.config import Config
from hetseg.io_atomic import write_json, write_text

NAMES = {"decouplednet": "DecoupledNet", "decouplednet-str": "DecoupledNet-Str", "maskonly": "masks-only"}
PAPER = ("DecoupledNet paper, Table 1 (VOC 2012 val, ImageNet VGG-16, full VOC+SBD): DecoupledNet / -Str / "
         "DeconvNet 53.1 / 32.7 / 15.3 at 5 strong per class, 57.4 / 41.7 / 21.5 at 10.")


def figure(records: list[dict], cfg: Config, path: Path, n: int) -> list[str]:
    """Write ``n`` evaluation photos with their masks and each method's prediction to ``path`` -- the
    methods' runs at the largest k, of the first record's seed; returns the ids of the photos shown."""
    import torch

    from hetseg.data.io import read_image, read_mask
    from hetseg.engine.checkpoint import load_model
    from hetseg.engine.evaluate import predict_images
    from hetseg.methods import load_split
    from hetseg.viz import save_label_grid

    k = max(r["k"] for r in records)
    runs = [(NAMES[r["method"]], r["run"]) for r in records if r["k"] == k and r["seed"] == records[0]["seed"]]
    nets = [(name, load_model(run)[0]) for name, run in runs]
    ev = load_split(cfg, "val")
    rows, ids = [], []
    with torch.no_grad():
        for rec in [r for r in ev.records if r.mask is not None][:n]:
            img = read_image(ev.path(rec.image))
            rows.append([img, *[predict_images(net, [img])[0].label_map for _, net in nets], read_mask(ev.path(rec.mask))])
            ids.append(rec.id)
    save_label_grid(path, rows, ["photo", *[f"{name} k={k}" for name, _ in nets], "ground truth"], cfg.data.class_names)
    return ids


def markdown(r: dict) -> str:
    """The Markdown page for a real-photo bench record ``r`` (``benchmarks/results/voc_real.json``)."""
    ks, d = r["ks"], r["division"]
    enc = f"{'ImageNet ' if r['imagenet'] else 'randomly initialised '}{r['encoder']}"
    lines = [f"# Real photos: {r['division']['images']} PASCAL VOC images, {enc} encoder", "",
             f"Command: `{r['command']}`; wall {r['wall_s'] / 60:.1f} min on {r['machine']['usable_cpus']} CPUs "
             f"({r['machine']['cpu']}); input {r['input_size']} px" + (f"; scale {r['scale']}" if "scale" in r else "")
             + ("; precision " + ", ".join(sorted({f"{st} {p}" for c in r["records"] for st, p in c.get("precision", {}).items()}))
                if any(c.get("precision") for c in r["records"]) else "") + ".",  # the 2026-12-02 run predates both
             f"Division (seed {r['split_seed']}): {d['n_eval']} evaluation images (sha256 `{d['eval'][:12]}`), "
             f"{d['n_weak']} weak images (labels only; sha256 `{d['weak'][:12]}`), strong " +
             ", ".join(f"k={k}: {d[f'n_strong_{k}']} images (`{d[f'strong_{k}'][:12]}`)" for k in ks) + ".",
             f"Budgets (fixed before the run; Table 1's equal-effort rule): {r['budgets']}. Nothing was chosen on the "
             "evaluation images.", "", "## mIoU (%) on the evaluation images", "",
             "| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    # Predicted labels, then the same networks given the evaluation images' true labels (what the
    # classifier costs); the masks-only model has no labels to replace.
    for key, suffix in (("miou", ""), ("miou_gt", ", ground-truth image labels")):
        for m in NAMES:
            cells = {c["k"]: c for c in r["records"] if c["method"] == m and c.get(key) is not None}
            if cells:
                lines.append(f"| {NAMES[m]}{suffix} | "
                             + " | ".join(f"{100 * cells[k][key]:.1f}" if k in cells else "-" for k in ks) + " |")
    # One weak-set classifier per seed (its wall time is copied onto each of that seed's DecoupledNet records).
    cls_s = {c["seed"]: c["cls_wall_s"] for c in r["records"] if c.get("cls_wall_s")}
    train_s = sum(c.get("train_wall_s", 0.0) for c in r["records"]) + sum(cls_s.values())
    jobs = r.get("jobs", 2)  # the committed 2026-12-02 run predates the key; it ran two at once
    at_once = "one at a time" if jobs == 1 else f"{jobs} at once"
    lines += ["", f"Training time, summed over the cells (each on one thread, {at_once}): {train_s / 60:.1f} min."]
    maps = {c["k"]: c.get("cls_mAP_eval") for c in r["records"] if c["method"] == "decouplednet-str"}
    dn = next((c.get("cls_mAP_eval") for c in r["records"] if c["method"] == "decouplednet"), None)
    lines += ["", f"Classifier mAP on the evaluation images: weak-set classifier {dn if dn is None else f'{dn:.3f}'}; "
              "DecoupledNet-Str's " + ", ".join(f"k={k}: {v:.3f}" if v is not None else f"k={k}: -" for k, v in maps.items()) + ".",
              "", "## Per-class IoU (%) at the largest k", ""]
    kmax = max(ks)
    names = list(next(iter(r["records"]))["iou"])
    lines += ["| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for c in [c for c in r["records"] if c["k"] == kmax]:
        lines.append(f"| {NAMES[c['method']]} | " + " | ".join("-" if c["iou"][n] is None else f"{100 * c['iou'][n]:.1f}"
                                                             for n in names) + " |")
    lines += ["", "## Training loss of the decoder, mean over each tenth of its steps", "",
              "Flat at the end means the budget, not the run's length, is not what limits the cell "
              "(lr x0.1 after 70 % of the steps).", "", *tenths_header("cell")]
    for c in [c for c in r["records"] if c.get("decoder_loss") and c["seed"] == r["records"][0]["seed"]]:
        lines.append(f"| {NAMES[c['method']]} k={c['k']} | {tenths_cells(c['decoder_loss'])} |")
    lines += ["", PAPER, "", f"Figure: `voc_real.png` (evaluation images {r.get('figure_ids')}).", ""]
    return "\n".join(lines)


def write_results(records: list[dict], division: dict, out: str | Path, command: str, voc_root: str, runs: str,
                  wall: float, cfg: Config, ks: list[int], budget: str, overrides: list[str], figure_images: int,
                  jobs: int = 2) -> list[Path]:
    """Write ``voc_real.json`` (the cells' ``records`` with the command, division, recipe, budgets and machine),
    ``voc_real.md`` and, when ``figure_images`` > 0, ``voc_real.png`` into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from hetseg.bench.voc_real import SPLIT_SEED

    report = {"command": command, "voc_root": voc_root, "runs": runs, "budget": budget, "overrides": overrides, "jobs": jobs,
              "wall_s": round(wall, 1), "ks": ks, "division": division, "split_seed": SPLIT_SEED,
              "scale": cfg.model.scale, "encoder": cfg.model.encoder, "imagenet": cfg.model.imagenet,
              "input_size": cfg.model.input_size,
              "budgets": {"cls": {"steps": cfg.cls.steps, "batch": cfg.cls.batch_size},
                          "seg": {"steps": cfg.seg.steps, "batch": cfg.seg.batch_size},
                          "maskonly": {"steps": cfg.deconv.steps, "batch": cfg.deconv.batch_size}},
              "machine": machine_info(), "records": records, "paper": PAPER}
    if figure_images > 0:
        report["figure_ids"] = figure(records, cfg, out / "voc_real.png", figure_images)
    paths = [write_json(out / "voc_real.json", report), write_text(out / "voc_real.md", markdown(report))]
    return paths + ([out / "voc_real.png"] if figure_images > 0 else [])

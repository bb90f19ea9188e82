"""The DIS bench's results: ``dis.json`` (everything), ``dis.md`` (tables a person reads) and
``dis.png`` (image | labelmap t=0 | labelmap t=30 | reconstruction | ground truth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hetseg.bench.curves import tenths_cells, tenths_header
from hetseg.bench.provenance import (dataset_info, machine_info, machine_labels, read_json, start_weights,
                                     trained_as, trained_as_phrase, weights_phrase)
from hetseg.bench.table1_report import fmt_mean_std, mean_std, ordering
from hetseg.config import Config
from hetseg.io_atomic import write_json, write_text

PAPER = ("DIS paper (VOC 2012 test, ResNet-101, t_tr = t_ts = 30): 86.8 mIoU, 45.5 M parameters, 140 ms "
         "per image; the paper reports accuracy growing with t (its ablation).")


def parameter_counts(num_classes: int) -> dict[str, int]:
    """Parameters of DIS at both scales (built on the meta device: no memory, no time)."""
    from hetseg.models import create_model

    out = {}
    for scale in ("cpu", "paper"):
        k = num_classes if scale == "cpu" else 20
        with torch.device("meta"):
            out[f"{scale} (K={k})"] = sum(p.numel() for p in create_model("dis", num_classes=k, scale=scale).parameters())
    return out


def beside(out: Path, ks: list, dataset: dict, seeds: list, scale: str) -> dict:
    """DecoupledNet / DeconvNet mean mIoU (%) at the same k from OUT/table1.json, when present and made on
    the same data set (meta.json checksum, which a data set without one never matches), at the same scale
    and with the same seeds; another table1.json is not shown beside."""
    p = out / "table1.json"
    t1 = read_json(p)
    if not t1:
        return {}
    mine = dataset.get("meta_sha256")
    same_data = mine is not None and mine == (t1.get("dataset") or {}).get("meta_sha256")
    if not same_data or t1.get("scale") != scale or list(t1.get("seeds") or []) != list(seeds):
        return {}
    methods = ("decouplednet", "deconvnet")
    return {"source": str(p), "command": t1.get("command"), "init": t1.get("init"),
            "miou": {m: {str(k): t1["summary"].get(m, {}).get(str(k), {}).get("mean") for k in ks} for m in methods},
            # each method's budget (optimizer steps per stage) from its first cell: shown, not equalised
            "steps": {m: next((c.get("steps") for c in t1.get("cells", []) if c.get("method") == m), None)
                      for m in methods}}


def _stage_budget(cfg: Config) -> dict:
    return {s: {"steps": getattr(cfg.dis, s).steps, "pairs_per_step": getattr(cfg.dis, s).batch_size,
                "lr": getattr(cfg.dis, s).lr} for s in ("labelmap", "recon", "joint")}


@torch.no_grad()
def figure(run: str, cfg: Config, path: Path, n: int) -> list[str]:
    """A few val images: image | labelmap t=0 | labelmap t=30 | reconstruction at t=30 | truth."""
    from hetseg.data.io import read_image, read_mask
    from hetseg.data.transforms import MEAN, STD, prepare, restore_argmax
    from hetseg.engine.checkpoint import load_model
    from hetseg.methods import load_split
    from hetseg.viz import save_grid

    net = load_model(run)[0]
    val = load_split(cfg, "val")
    rows, ids = [], []
    for rec in [r for r in val.records if r.mask is not None][:n]:
        img = read_image(val.path(rec.image))
        x, geom = prepare(img, net.input_size)
        o0, o30 = net.predict(x[None], steps=0), net.predict(x[None], steps=30)
        recon = (o30.extras["recon"][0].float() * STD + MEAN).clamp(0, 1)
        recon = torch.nn.functional.interpolate(recon[None], size=img.shape[:2], mode="nearest")[0]
        rows.append([img, restore_argmax(o0.probs[0].float(), geom), restore_argmax(o30.probs[0].float(), geom),
                     (recon.permute(1, 2, 0).numpy() * 255).astype(np.uint8), read_mask(val.path(rec.mask))])
        ids.append(rec.id)
    save_grid(path, rows, ["image", "labelmap t=0", "labelmap t=30", "reconstruction t=30", "ground truth"])
    return ids


def summarise(records: list[dict], t_test: list[int]) -> list[dict]:
    """One row per (k, t_tr): mIoU (%) at every t_ts and with GT labels (t_ts = 0), each as
    {"mean", "std" (sample, None for one seed), "seeds": {seed: value}} over the seeds run."""
    rows: dict = {}
    for rec in records:
        for c in rec["cells"]:
            row = rows.setdefault((str(rec["k"]), c["t_train"]), {"k": rec["k"], "t_train": c["t_train"], "values": {}})
            m = {int(t): v for t, v in c["miou"].items()}
            for key, v in [*((str(t), m[t]) for t in t_test), ("gt_t0", c["miou_gt_labels_t0"])]:
                row["values"].setdefault(key, {})[str(rec["seed"])] = 100 * v
    for row in rows.values():
        for key, by_seed in row["values"].items():
            mean, std = mean_std(list(by_seed.values()))
            row["values"][key] = {"mean": mean, "std": std, "seeds": by_seed}
    return list(rows.values())


def claims(summary: list[dict], t_test: list[int]) -> list[dict]:
    """The DIS paper's ablation claims judged here on the seed means and on every seed
    (:func:`hetseg.bench.table1_report.ordering`): more test-time steps raise mIoU (t_ts = last > 0,
    per (k, t_tr)), and training with iterative inference beats t_tr = 0 (t_ts = last) at every k that
    has tag-only images (the paper's ablation as docs/DIS.md restates it)."""
    def judge(claim: str, a: dict, b: dict) -> dict:
        seeds = sorted(set(a["seeds"]) & set(b["seeds"]))
        holds, note = ordering([a["mean"], b["mean"]], [[a["seeds"][s], b["seeds"][s]] for s in seeds])
        return {"claim": claim, "here": f"{a['mean']:.1f} vs {b['mean']:.1f}{note}", "holds": holds}

    first, last, out = str(t_test[0]), str(t_test[-1]), []
    top = max(r["t_train"] for r in summary)
    for row in summary:
        if row["k"] == "full" and row["t_train"] != top:
            continue  # full: one joint run stands in every t_tr row (no tag-only image); judge it once
        ttr = "one joint run" if row["k"] == "full" else f"t_tr = {row['t_train']}"
        out.append(judge(f"k = {row['k']}, {ttr}: mIoU at t_ts = {last} > t_ts = {first}",
                         row["values"][last], row["values"][first]))
    for k in dict.fromkeys(r["k"] for r in summary if r["k"] != "full"):
        by_ttr = {r["t_train"]: r for r in summary if r["k"] == k}
        if len(by_ttr) > 1:
            lo, hi = min(by_ttr), max(by_ttr)
            out.append(judge(f"k = {k}: t_tr = {hi} > t_tr = {lo} at t_ts = {last}",
                             by_ttr[hi]["values"][last], by_ttr[lo]["values"][last]))
    return out


def markdown(r: dict) -> str:
    """The Markdown page for a DIS bench record ``r`` (``benchmarks/results/dis.json``): labelmap mIoU per
    (k, t_train) against the inference steps t, claims judged, loss curves (docs/DIS.md)."""
    ts = r["t_test"]
    lines = [f"# DIS as specified here: labelmap vs inference steps (scale {r['scale']})", "",
             f"Command: `{r['command']}`; seeds {r['seeds']}; wall {r['wall_s'] / 60:.1f} min this invocation "
             f"on {r['machine']['usable_cpus']} CPUs ({r['machine']['cpu']}), "
             f"{r.get('compute_wall_s', 0) / 60:.1f} min of recorded training (+ evaluation, where recorded) in "
             f"all (records made on: {', '.join(r.get('record_machines') or ['not recorded'])}). "
             f"Val: {r['dataset']['splits'].get('val', {})}.",
             f"Data checksum (meta.json content sha256) `{(r['dataset']['meta_sha256'] or '')[:12]}`. Budgets (fixed before the run): "
             f"{r['budgets']}. Nothing was chosen on val.",
             *([trained_as_phrase(r["trained_as"])] if r.get("trained_as") else []),
             "Initial weights: " + (f"{weights_phrase(b)}." if (b := r.get("backbone")) and b.get("imagenet") else
                                    f"the shipped ResNet backbone `{b['file']}` (sha256 `{b['sha256'][:12]}…`, "
                                    f"`{b['command']}`, held-out item accuracy {100 * b['held_out_acc']:.1f} %)."
                                    if b else "random (seeded) weights."), "",
             f"## mIoU (%) on val against test-time inference steps t_ts (mean ± sample std over seeds "
             f"{r['seeds']})", "",
             "| k | t_tr | " + " | ".join(f"t_ts={t}" for t in ts) + " | GT labels, t_ts=0 |",
             "|---|---|" + "---|" * (len(ts) + 1)]
    for row in r["summary"]:
        v = row["values"]
        lines.append(f"| {row['k']} | {row['t_train']} | " + " | ".join(fmt_mean_std(v[str(t)]) for t in ts)
                     + f" | {fmt_mean_std(v['gt_t0'])} |")
    lines += ["", "Claims of the paper's ablation (an ordering that holds on the means but not on every seed "
              "is *not shown*):", "", "| claim | here (mean) | holds |", "|---|---|---|",
              *(f"| {c['claim']} | {c['here']} | {'not shown' if c['holds'] is None else c['holds']} |"
                for c in r["claims"]),
              "", "Per seed:", "",
              "| seed | k | t_tr | " + " | ".join(f"t_ts={t}" for t in ts) + f" | GT labels, t_ts=0 | t_ts={ts[-1]} - t_ts=0 |",
              "|---|---|---|" + "---|" * (len(ts) + 2)]
    for rec in r["records"]:
        for c in rec["cells"]:
            m = {int(t): v for t, v in c["miou"].items()}
            lines.append(f"| {rec['seed']} | {rec['k']} | {c['t_train']} | " + " | ".join(f"{100 * m[t]:.1f}" for t in ts)
                         + f" | {100 * c['miou_gt_labels_t0']:.1f} | {100 * (m[ts[-1]] - m[ts[0]]):+.1f} |")
    lines += ["", "At k = full every train image has a mask, so there is no tag-only image and t_tr has nothing "
              "to act on: one joint run is trained and reported in every t_tr row. 'GT labels' replaces the tag "
              "scores' choice of classes by the ground-truth image labels (as DecoupledNet-GT).", "",
              "## Inference time (ms per image, model only, batch 16, one CPU thread)", "",
              "| seed | k | t_tr | " + " | ".join(f"t_ts={t}" for t in ts) + " |", "|---|---|---|" + "---|" * len(ts)]
    for rec in r["records"]:
        for c in rec["cells"]:
            ms = {int(t): v for t, v in c["ms_per_image"].items()}
            lines.append(f"| {rec['seed']} | {rec['k']} | {c['t_train']} | " + " | ".join(f"{ms[t]:.1f}" for t in ts)
                         + " |")
    lines += ["", "## Training loss per stage, mean over each tenth of its steps", "",
              *tenths_header("seed", "k", "run", "stage")]
    for rec in r["records"]:
        runs = [("base", rec.get("train_loss", {}))] + [(f"t_tr={c['t_train']}", c.get("train_loss", {}))
                                                         for c in rec["cells"] if not c.get("same_as")]
        lines += [f"| {rec['seed']} | {rec['k']} | {run} | {stage} | {tenths_cells(pts)} |"
                  for run, losses in runs for stage, pts in losses.items() if pts]
    lines += ["", f"Parameters: {r['parameters']}.", "", PAPER, ""]
    b = r.get("beside") or {}
    if b:
        lines += ["## Beside: Table 1 cells at the same k", "",
                  f"From `{b['source']}` (`{b['command']}`, init {b['init']}: the VGG networks start from the "
                  "shipped VGG backbone; DIS's initial weights: see above). Not an equal-effort comparison: "
                  f"their optimizer steps per stage were {b.get('steps')}, DIS's are in the budgets above.", "",
                  f"| k | DIS (t_tr default, t_ts={ts[-1]}, mean) | DecoupledNet | DeconvNet |", "|---|---|---|---|"]
        for row in (w for w in r["summary"] if w["t_train"] == max(r["t_trains"])):
            dn, dc = b["miou"]["decouplednet"].get(str(row["k"])), b["miou"]["deconvnet"].get(str(row["k"]))
            lines.append(f"| {row['k']} | {row['values'][str(ts[-1])]['mean']:.1f} | {dn if dn is None else f'{dn:.1f}'} | "
                         f"{dc if dc is None else f'{dc:.1f}'} |")
        lines.append("")
    lines += [f"Figure: `dis.png` (run `{r.get('figure_run')}`, val images {r['figure_ids']})." if r.get("figure_ids")
              else "No figure: no evaluated run's weights were on disk (records only).", ""]
    return "\n".join(lines)


def write_results(records: list[dict], out: str | Path, command: str, scale: str, seeds: list[int], data: str,
                  runs: str, wall: float, cfg: Config, t_test: list[int], t_trains: list[int], budget: str,
                  overrides: list[str], figure_images: int) -> list[Path]:
    """Write dis.json / dis.md / dis.png into ``out``; returns their paths."""
    out = Path(out)
    report = {"command": command, "scale": scale, "seeds": seeds, "runs": runs, "budget": budget,
              "overrides": overrides, "wall_s": round(wall, 1), "t_test": t_test, "t_trains": t_trains,
              "budgets": _stage_budget(cfg), "infer_lr": cfg.dis.infer_lr, "recon_weight": cfg.dis.recon_weight,
              "dataset": dataset_info(data), "machine": machine_info(), "backbone": start_weights(cfg, "resnet"),
              "parameters": parameter_counts(cfg.data.num_classes - 1), "records": records,
              "beside": beside(out, sorted({r["k"] for r in records}, key=str), dataset_info(data), seeds, scale),
              "paper": PAPER}
    # time and place of the work behind the numbers, not of this invocation (records may be older)
    walls = [r.get("base_wall_s") for r in records] + [c.get(f) for r in records for c in r["cells"]
                                                       if not c.get("same_as") for f in ("joint_wall_s", "eval_wall_s")]
    report["compute_wall_s"] = round(sum(w or 0 for w in walls), 1)
    report["record_machines"] = machine_labels(records)
    sessions: dict = {}  # every (seed, k) record of a seed: its stages' sessions, by precision and device
    for r in records:
        sessions.setdefault(r["seed"], []).extend(x for v in (r.get("sessions") or {}).values() for x in v)
    report["trained_as"] = trained_as(sessions)
    report["summary"] = summarise(records, t_test)
    report["claims"] = claims(report["summary"], t_test)
    # the figure needs weights: the first run with the largest t_tr still on disk (records may come without)
    fig_run = next((c["run"] for r in records for c in r["cells"] if c["t_train"] == max(t_trains)
                    and Path(c["run"], "model.safetensors").is_file()), None)
    if fig_run is not None and figure_images > 0:
        report["figure_run"], report["figure_ids"] = fig_run, figure(fig_run, cfg, out / "dis.png", figure_images)
    paths = [write_json(out / "dis.json", report), write_text(out / "dis.md", markdown(report))]
    return paths + ([out / "dis.png"] if report.get("figure_ids") else [])  # an older dis.png is not this run's

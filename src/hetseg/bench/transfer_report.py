"""What ``hetseg bench transfer`` reports (:mod:`hetseg.bench.transfer`): the paper's numbers and claims,
and ``transfer.md`` from the ``transfer.json`` report."""

from __future__ import annotations

import statistics

from hetseg.bench.curves import tenths_cells, tenths_header
from hetseg.bench.provenance import trained_as_phrase, weights_phrase
from hetseg.bench.table1_report import claim_lines, ordering

NAMES = {"transfernet": "TransferNet", "transfernet_gt": "TransferNet-GT", "baselinenet": "BaselineNet",
         "baselinenet_gt": "BaselineNet-GT", "decouplednet_transfer": "DecoupledNet-transfer",
         "decouplednet_transfer_gt": "DecoupledNet-transfer-GT"}
# The paper (TransferNet, Table 1) reports -GT for TransferNet only.
PAPER_VAL = {"transfernet": 52.1, "transfernet_gt": 54.3, "baselinenet": 36.3, "baselinenet_gt": None,
             "decouplednet_transfer": 25.4, "decouplednet_transfer_gt": None}
CLOSE_POINTS = 5.0  # "TransferNet close to TransferNet-GT": gap <= 5 mIoU points (paper: 2.2)


def mean_or_none(xs: list) -> float | None:
    """Mean of the values that are not None (None when there are none)."""
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def per_step(train: dict) -> dict:
    """Seconds per optimizer step of every trained stage: {"method/stage": s}."""
    out = {}
    for method, stages in train.items():
        for stage, s in stages.items():
            if isinstance(s, dict) and s.get("steps"):
                out[f"{method}/{stage}"] = round(s["wall_s"] / s["steps"], 3)
    return out


def claims(methods: dict) -> list[dict]:
    """The paper's claims on the seed means; an ordering must also hold on every seed
    (table1_report.ordering: otherwise 'not shown', within the seed spread)."""
    m = {k: v["mean"] * 100 for k, v in methods.items()}
    tn, gt = m["transfernet"], m["transfernet_gt"]

    def pair(a: str, b: str, paper: str) -> dict:
        holds, note = ordering([m[a], m[b]], list(zip(*([100 * v for v in methods[x]["miou"]] for x in (a, b)))))
        return {"claim": f"{NAMES[a]} > {NAMES[b]}", "paper": paper, "here": f"{m[a]:.1f} vs {m[b]:.1f}{note}",
                "holds": holds}

    return [
        pair("transfernet", "baselinenet", "52.1 > 36.3"),
        pair("baselinenet", "decouplednet_transfer", "36.3 > 25.4"),
        pair("transfernet", "decouplednet_transfer", "52.1 > 25.4"),
        {"claim": f"TransferNet close to TransferNet-GT (gap <= {CLOSE_POINTS:g} points)", "paper": "54.3 - 52.1 = 2.2",
         "here": f"{gt:.1f} - {tn:.1f} = {gt - tn:.1f}", "holds": abs(gt - tn) <= CLOSE_POINTS},
    ]


def markdown(r: dict, names: list[str]) -> str:
    """transfer.md from the transfer.json report ``r``."""
    shown = [n for n in names if any(v["iou_mean"].get(n) is not None for v in r["methods"].values())]
    head = "| method | " + " | ".join(shown) + " | mIoU | paper (VOC val) |"
    lines = [head, "|" + "---|" * (len(shown) + 3)]
    for v in r["methods"].values():
        cells = ["–" if v["iou_mean"][n] is None else f"{v['iou_mean'][n] * 100:.1f}" for n in shown]
        pm = f"{v['mean'] * 100:.1f}" + (f" ± {v['std'] * 100:.1f}" if len(r["seeds"]) > 1 else "")
        paper = "–" if v["paper_val_miou"] is None else v["paper_val_miou"]
        lines.append(f"| {v['name']} | " + " | ".join(cells) + f" | **{pm}** | {paper} |")
    claim_text = "\n".join(claim_lines(r["claims"]))
    ident = r["identification"][0]
    b = r["budgets"]
    loss = ["## Training loss per stage, mean over each tenth of its steps", "", *tenths_header("seed", "run/stage")]
    loss += [f"| {seed} | {stage} | {tenths_cells(pts)} |" for seed, by in r.get("train_loss", {}).items()
             for stage, pts in by.items() if pts]
    return (
        f"# TransferNet transfer benchmark ({r['scale']} scale)\n\n"
        f"Target val: `{r['val']['file']}` ({r['val']['images']} images, sha256 {r['val']['checksum'][:12]}); "
        f"source masks: `{r['splits']['source_split']['file']}` ({r['splits']['source_split']['images']} images); "
        f"target labels: `{r['splits']['target_split']['file']}` ({r['splits']['target_split']['images']} images). "
        f"Seeds {r['seeds']}. "
        + (f"Data set `{r['dataset']['root']}` (meta.json sha256 {r['dataset']['meta_sha256'][:12]}). "
           if (r.get("dataset") or {}).get("meta_sha256") else "")
        + f"{r['evaluation']}.\n\n" + "\n".join(lines) + "\n\n"
        f"Context on the same val set: all-background {r['context']['all_background'] * 100:.1f}, best global "
        f"intensity threshold with oracle labels {r['context']['best_global_threshold_oracle_labels'] * 100:.1f}.\n"
        f"Label identification (seed {r['seeds'][0]}): exact label set on {ident['exact'] * 100:.1f} % of images, "
        f"precision {ident['precision'] * 100:.1f} %, recall {ident['recall'] * 100:.1f} %.\n\n"
        f"## The paper's claims\n\n{claim_text}\n\n"
        f"## Budgets (equal effort)\n\nshared classifier {b['classifier_steps']} steps x {b['classifier_batch']}; "
        f"TransferNet stage 1 {b['att_steps']} steps; every decoder {b['decoder_steps']} steps with "
        f"{b['source_rows_per_step']} source-mask rows per step. Seconds per step: {b['seconds_per_step']}. "
        f"Training + evaluation, summed over the runs of every seed (as recorded when they ran): "
        f"{sum(sum(w.values()) for w in r['wall_s']['per_seed']) / 60:.1f} min; this invocation "
        f"{r['wall_s']['total']:.0f} s"
        + (f" on {r['machine']['usable_cpus']} CPUs ({r['machine']['cpu']}); records written on: "
           f"{', '.join(r.get('record_machines') or ['not recorded'])}" if r.get("machine") else "")
        + ". Initial weights: "
        + (weights_phrase(r["backbone"]) if (r.get("backbone") or {}).get("imagenet")
           else f"backbone `{r['backbone']['file']}` (sha256 `{r['backbone']['sha256'][:12]}…`)" if r.get("backbone")
           else "random") + ".\n\n"
        + (trained_as_phrase(r["trained_as"]) + "\n\n" if r.get("trained_as") else "") + "\n".join(loss) + "\n\n"
        f"Command: `{r['command']}`\n"
    )

"""Table 1 at three times the equal effort, seed 0: the diagnostic runs beside the table's own cells.

Why: the committed Table 1 (``make bench-table1``) trains every cell at one equal-effort budget, and by
the flatness rule most of its stages are still falling there (docs/BENCHMARKS.md, "Did the loss
flatten?"). docs/DECISIONS.md ("Equal effort at three times the budget", at full, at k = 5, at k = 10
and 25) fixed, before each run, a diagnostic: seed 0's DecoupledNet (classifier 9,000 + decoder 7,200
steps) and DeconvNet (16,200 steps) at three times that effort. This script reads those records and the
table's seed-0 cells and writes one results file; it reads committed records only and trains nothing.
The runs' commands are in benchmarks/runs/diagnostics/README.md. One seed: a diagnostic, not a claim.

    python scripts/table1_3x.py --out benchmarks/results/table1_3x_seed0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hetseg.bench.curves import loss_by_parts, pct, read_stage, tenths_cells, tenths_header, verdict
from hetseg.io_atomic import write_atomic, write_json, write_text

KS = ("5", "10", "25", "full")
DIAG = Path("benchmarks/runs/diagnostics")
TABLE = Path("benchmarks/runs/table1_cls3000/seed0")
# k = 10 and 25 start their decoder from the k = 5 run's classifier stage (docs/DECISIONS.md, "... at k = 10
# and 25"): that run's cls record is theirs.
CLS_RUN = {"5": "decouplednet_k5_3x_s0", "10": "decouplednet_k5_3x_s0", "25": "decouplednet_k5_3x_s0",
           "full": "decouplednet_kfull_3x_s0"}


def miou(path: Path) -> tuple[float, str]:
    """(val mIoU in points, unrounded, and the split checksum) of one eval_*.json."""
    rec = json.loads(path.read_text())
    return 100 * rec["scores"]["miou"], rec["split_checksum"]


def points(**values: float) -> dict:
    """mIoU points rounded to one decimal."""
    return {key: round(v, 1) for key, v in values.items()}


def stage(stage_dir: Path, root: Path) -> dict:
    """Flatness of one stage (hetseg.bench.curves.read_stage: the rule's change and verdict, and the final-lr
    phase's within-phase reading), its per-tenth curve and its wall time; labelled from ``root``'s parent on,
    so the record does not depend on where the script was run from."""
    read = read_stage(stage_dir, root)
    done = json.loads((stage_dir / "done.json").read_text())
    return {"stage": read["stage"], "steps": done["steps"], "wall_s": done["wall_s"],
            "tenths": loss_by_parts(stage_dir), "rule_change": read["rule_change"], "rule_flat": read["rule_flat"],
            "final_lr_change": read["phases"][-1]["change"], "final_lr_flat": read["flat_at_final_lr"]}


def collect(diag: Path = DIAG, table: Path = TABLE) -> dict:
    """Every k's numbers from the diagnostics folder ``diag`` and the table's seed-0 runs ``table``;
    raises ValueError when a record is missing or two evaluations differ in split."""
    rows, checksums = [], set()
    for k in KS:
        dn, dc, tdn, tdc = (diag / f"decouplednet_k{k}_3x_s0", diag / f"deconvnet_k{k}_3x_s0",
                            table / f"decouplednet_k{k}", table / f"deconvnet_k{k}")
        files = [dn / "eval_val.json", dn / "eval_val_gt.json", dc / "eval_val.json",
                 tdn / "eval_val.json", tdn / "eval_val_gt.json", tdc / "eval_val.json"]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"{missing[0]}: missing (k = {k} not trained or not evaluated yet)")
        (d, c1), (g, c2), (v, c3), (td, c4), (tg, c5), (tv, c6) = map(miou, files)
        checksums |= {c1, c2, c3, c4, c5, c6}
        # rounded after the subtraction, as every table of the project does (a lead of 16.7, not 55.1 - 38.3)
        rows.append({"k": k, **points(decouplednet=d, decouplednet_gt=g, deconvnet=v, lead=d - v),
                     "table": points(decouplednet=td, decouplednet_gt=tg, deconvnet=tv, lead=td - tv),
                     "stages": [stage(diag / CLS_RUN[k] / "cls", diag), stage(dn / "seg", diag), stage(dc / "deconv", diag)]})
    if len(checksums) != 1:
        raise ValueError(f"the evaluations read {len(checksums)} different val splits; fix: evaluate every run on one")
    leads = [r["lead"] for r in rows]
    return {"rows": rows, "val_checksum": checksums.pop(), "seed": 0, "scale": "cpu",
            "questions": {"decouplednet_above_deconvnet_at_10_25": all(r["lead"] > 0 for r in rows if r["k"] in ("10", "25")),
                          "lead_shrinks_at_every_step": all(a >= b for a, b in zip(leads, leads[1:])),
                          "lead_shrinks_end_to_end": leads[0] > leads[-1]}}


def flat_cell(s: dict) -> str:
    """'rule / final lr' verdicts of one stage as a Markdown cell."""
    def one(flat: bool | None, change: float | None) -> str:
        return "-" if flat is None else f"{pct(change)} {verdict(flat, change)}"
    return f"{one(s['rule_flat'], s['rule_change'])} / {one(s['final_lr_flat'], s['final_lr_change'])}"


def report(res: dict, command: str) -> str:
    """The Markdown: mIoU per k at 3x beside the table's budget, the two questions, the flatness per stage."""
    yes = {True: "yes", False: "**no**"}
    q = res["questions"]
    lines = ["# Table 1 at three times the equal effort, seed 0 (a diagnostic, not a claim)", "",
             f"Command: `{command}` (reads records only). Scale {res['scale']}, seed {res['seed']}, val "
             f"`{res['val_checksum'][:12]}…` (1,000 images). Rules and questions written before each run: "
             "docs/DECISIONS.md, \"Equal effort at three times the budget\" (at full, at k = 5, at k = 10 and 25); "
             "runs and commands: benchmarks/runs/diagnostics/README.md. 3x: DecoupledNet classifier 9,000 + decoder "
             "7,200 steps, DeconvNet 16,200; the table: 3,000 + 2,400 and 5,400. DecoupledNet-Str was not run.", "",
             "| k | DecoupledNet 3x | (true labels) | DeconvNet 3x | lead 3x | DecoupledNet table | (true labels) | "
             "DeconvNet table | lead table |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        t = r["table"]
        lines.append(f"| {r['k']} | {r['decouplednet']:.1f} | {r['decouplednet_gt']:.1f} | {r['deconvnet']:.1f} | "
                     f"{r['lead']:+.1f} | {t['decouplednet']:.1f} | {t['decouplednet_gt']:.1f} | {t['deconvnet']:.1f} | "
                     f"{t['lead']:+.1f} |")
    lines += ["", f"- DecoupledNet above DeconvNet at k = 10 and 25 (3x): {yes[q['decouplednet_above_deconvnet_at_10_25']]}.",
              f"- Lead shrinks at every step 5 → 10 → 25 → full (3x): {yes[q['lead_shrinks_at_every_step']]}; "
              f"from k = 5 to full: {yes[q['lead_shrinks_end_to_end']]}.", "",
              "Training loss, flatness rule (last 3/10 vs 5-7/10) / within-phase reading at the final lr "
              "(docs/BENCHMARKS.md, \"Did the loss flatten?\"; \"flat (floor)\": more than 5 % but at most 0.01 lower). "
              "k = 10 and 25 share the k = 5 run's classifier.", "",
              "| k | classifier | decoder | DeconvNet | wall s (cls + seg; deconv) |", "|---|---|---|---|---|"]
    for r in res["rows"]:
        c, s, d = r["stages"]
        lines.append(f"| {r['k']} | {flat_cell(c)} | {flat_cell(s)} | {flat_cell(d)} | "
                     f"{c['wall_s']:.0f} + {s['wall_s']:.0f}; {d['wall_s']:.0f} |")
    lines += ["", "The curves: mean training loss over each tenth of a stage's steps (the classifier once per run that "
              "trained one).", "", *tenths_header("stage", "steps")]
    seen = set()
    for r in res["rows"]:
        for st in r["stages"]:
            if st["stage"] not in seen:
                seen.add(st["stage"])
                lines.append(f"| {st['stage']} | {st['steps']} | {tenths_cells(st['tenths'])} |")
    return "\n".join(lines) + "\n"


def figure(res: dict, path: Path) -> None:
    """val mIoU against k: 3x solid, the table's budget dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = range(len(res["rows"]))
    for key, label, colour in (("decouplednet", "DecoupledNet", "C0"), ("decouplednet_gt", "DecoupledNet, true labels", "C2"),
                               ("deconvnet", "DeconvNet", "C3")):
        ax.plot(x, [r[key] for r in res["rows"]], "o-", color=colour, label=f"{label} 3x")
        ax.plot(x, [r["table"][key] for r in res["rows"]], "o--", color=colour, alpha=0.5, label=f"{label} table")
    ax.set_xticks(list(x), [r["k"] for r in res["rows"]])
    ax.set_xlabel("masks per class (k)")
    ax.set_ylabel("val mIoU")
    ax.set_title("Table 1, seed 0: 3x equal effort (solid) vs the table's budget (dashed)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))  # as every bench figure
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.json, OUT.md, OUT.png")
    ap.add_argument("--diagnostics", type=Path, default=DIAG, help=f"the 3x runs (default {DIAG})")
    ap.add_argument("--table", type=Path, default=TABLE, help=f"the table's seed-0 cells (default {TABLE})")
    a = ap.parse_args(argv)
    try:
        res = collect(a.diagnostics, a.table)
    except (OSError, ValueError, KeyError) as e:
        print(f"hetseg: error: {str(e).split('; fix:')[0]}; fix: run from the repository root after the "
              "diagnostic runs of benchmarks/runs/diagnostics/README.md", file=sys.stderr)
        return 2
    command = "python scripts/table1_3x.py" + "".join(
        f" --{name} {path}" for name, path, default in (("diagnostics", a.diagnostics, DIAG), ("table", a.table, TABLE))
        if path != default) + f" --out {a.out}"
    res["command"] = command
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(a.out.with_suffix(".json"), res)
    write_text(a.out.with_suffix(".md"), report(res, command))
    figure(res, a.out.with_suffix(".png"))
    print(f"table1_3x: {len(res['rows'])} k -> {a.out}.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

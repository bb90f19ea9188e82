"""Markdown and a figure for the recipe probes' record, benchmarks/results/fashion_recipe_probe.json.

Why a separate reader: that record was assembled by hand, across sessions, from each probe run's own
files (scripts/fashion_recipe_probe.py prints and logs; scripts/unseen_item_scenes.py scores), so there
was no writer to give it its Markdown. This renders what the record holds and nothing else -- no run
is read, nothing is trained or scored -- so the Markdown can never say more than the JSON
(tests/test_recipe_probe_report.py holds the committed Markdown equal to this rendering).
The decisions the probes informed: docs/DECISIONS.md, "Recipes from the shipped backbone" and
"Classifier recipe, three-seed decision on training data".

    python scripts/recipe_probe_report.py benchmarks/results/fashion_recipe_probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hetseg.io_atomic import write_atomic, write_text


def _curve(run: dict) -> list[tuple[int, float, float | None]]:
    """(step, training loss, held-out mAP or None) of one probe run, whichever form it was logged in."""
    if "points" in run:
        return [(p["step"], p["train_loss"], p.get("heldout_map")) for p in run["points"]]
    return [(int(s), float(v), None) for s, v in run.get("train_loss", [])]


def _section(i: int, name: str, run: dict) -> list[str]:
    """Probe run ``i`` (as numbered in the figure): its settings, its curve and, where recorded, its scores
    at the end and the decision."""
    head = [f"### {i}. `{name}`", "",
            f"Stage {run['stage']}, {run['steps']} steps"
            + (f" (stopped at {run['stopped_at_step']})" if "stopped_at_step" in run else "")
            + (f", overrides `{' '.join(run['overrides'])}`" if run.get("overrides") else "")
            + (f", from `{run['init_from']}`" if run.get("init_from") else "")
            + (f", wall {run['wall_s']} s" if "wall_s" in run else "") + "."]
    for key in ("optimizer", "deconv"):
        if key in run:
            head.append(f"Optimizer: {', '.join(f'{k} {v}' for k, v in run[key].items())}.")
    if "command" in run:
        head.append(f"Command: `{run['command']}`.")
    rows = _curve(run)
    maps = any(m is not None for _, _, m in rows)
    table = ["", "| step | training loss |" + (" mAP on the run's data.val_split (held out) |" if maps else ""),
             "|---|---|" + ("---|" if maps else "")]
    table += [f"| {s} | {loss} |" + (f" {'-' if m is None else m} |" if maps else "") for s, loss, m in rows]
    tail = [""]
    if "heldout_miou" in run:
        tail.append(f"Held-out mIoU at the end: {run['heldout_miou']} (true labels {run['heldout_miou_gt']}).")
    if "scores_at_end" in run:
        tail.append("mAP at the end: " + ", ".join(f"{k} {v}" for k, v in run["scores_at_end"].items())
                    + (f" ({run['scores_note']})" if "scores_note" in run else "") + ".")
    if "late_change_percent" in run:
        tail.append(f"Flatness rule, last 3/10 vs 5-7/10: {run['late_change_percent']:+.1f} %.")
    if "baseline" in run:
        tail.append("Compared with: " + ", ".join(f"{k} {v}" for k, v in run["baseline"].items()) + ".")
    for key in ("decision", "note", "scores_reader"):
        if key in run:
            tail.append(f"{key.replace('_', ' ').capitalize()}: {run[key]}.")
    return head + table + (tail if len(tail) > 1 else []) + [""]


def report(rec: dict, source: str) -> str:
    """The whole Markdown of the record."""
    def split(s: dict) -> str:
        return f"`{s['file']}` ({s['images']} images, sha256 `{s['checksum'][:12]}…`)"

    lines = ["# Recipe probes from the shipped backbone (training scenes only, never val)", "",
             f"Rendered by `python scripts/recipe_probe_report.py {source}` from the record, which was assembled "
             "from each probe run's own files; nothing here was re-run. Probe command: "
             f"`{rec['command']}`. Seed {rec['seed']} unless a run says otherwise; data {rec['dataset']}; "
             f"scale cpu; init {rec['init']}.", "",
             f"- Trained on: {split(rec['trained_on'])}.", f"- Held out: {split(rec['held_out'])}."]
    u = rec.get("unseen_items")
    if u:
        lines += [f"- Unseen items: {split(u)}: {u['items']} ({u['pool_items']} in the pool, rendering seed "
                  f"{u['rendering_seed']}; `{u['command']}`)."]
    lines += ["", "## Runs", ""]
    for i, (name, run) in enumerate(rec["runs"].items(), 1):
        lines += _section(i, name, run)
    if u and "classifier_map" in u:
        c = u["classifier_map"]
        sets = list(next(iter(c["runs"].values())))
        lines += ["## Classifier mAP on the selection sets", "", f"Command: `{c['command']}`. {c['note']}.", "",
                  "| run | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
        lines += [f"| {r} | " + " | ".join(str(v[s]) for s in sets) + " |" for r, v in c["runs"].items()]
        lines += [""]
    d = rec.get("three_seed_decision")
    if d:
        per = d["unseen_items_map"]
        lines += ["## Three-seed decision", "", f"Rule: {d['rule']}; decided {d['date']}.", "",
                  "| steps | " + " | ".join(f"seed {s}" for s in per["3000_steps"]) + " | mean |",
                  "|---|" + "---|" * (len(per["3000_steps"]) + 1)]
        for key, mean in (("3000_steps", d["mean_3000"]), ("1500_steps", d["mean_1500"])):
            lines.append(f"| {key.split('_')[0]} | " + " | ".join(str(v) for v in per[key].values()) + f" | {mean} |")
        lines += ["", f"Needed: mean at least {d['needed']}; every seed higher: {d['every_seed_higher']}. "
                  f"Outcome: **{d['outcome']}**. Val mAP, read after the decision: "
                  + ", ".join(f"seed {s} {v}" for s, v in d["val_map_after_decision"].items()) + ".", ""]
    return "\n".join(lines)


def figure(rec: dict, path: Path) -> None:
    """Training loss (left) and held-out mAP (right) against step, one line per probe run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    for i, run in enumerate(rec["runs"].values(), 1):  # numbered as the Markdown's sections
        rows, color = _curve(run), f"C{(i - 1) % 10}"
        label = f"{i}. {run['stage']}, {run['steps']} steps"
        a.plot([s for s, _, _ in rows], [v for _, v, _ in rows], marker=".", color=color, label=label)
        pts = [(s, m) for s, _, m in rows if m is not None]
        if pts:
            b.plot(*zip(*pts), marker=".", color=color, label=label)
    a.set(xlabel="step", ylabel="training loss", title="Training loss (as logged)")
    b.set(xlabel="step", ylabel="mAP", title="Classifier mAP on each run's data.val_split\n(held-out training scenes or unseen items)")
    a.legend(fontsize=7)
    b.legend(fontsize=7)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))  # as every bench figure
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", type=Path, help="the probes' JSON record; writes the .md and .png beside it")
    a = ap.parse_args(argv)
    try:
        rec = json.loads(a.record.read_text())
        md = report(rec, str(a.record))
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as e:
        print(f"hetseg: error: {a.record}: not a readable probe record ({type(e).__name__}: {e}); fix: pass "
              "benchmarks/results/fashion_recipe_probe.json", file=sys.stderr)
        return 2
    write_text(a.record.with_suffix(".md"), md)
    figure(rec, a.record.with_suffix(".png"))
    print(f"recipe_probe_report: {len(rec['runs'])} runs -> {a.record.with_suffix('.md')}, .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Within-phase flatness of every training stage under some runs roots, beside the flatness rule.

Why: the flatness rule (hetseg.bench.curves.flattened; docs/BENCHMARKS.md, "Did the loss flatten?")
compares tenths 5-7 with tenths 8-10 of a stage, and with the step schedule every stage here runs
(lr x0.1 after 70 or 75 % of its steps) those windows sit on either side of the drop. This reads each
stage's logged loss inside its constant-lr phases instead (hetseg.bench.curves.phase_flatness), as
docs/DECISIONS.md, "Within-phase flatness", states -- a second reading that replaces nothing. It reads
committed records only (each stage's metrics.csv and its run's config.json); nothing is trained.

    python scripts/phase_flatness.py benchmarks/runs/table1_converged benchmarks/runs/table1_repro_seed0 \\
        benchmarks/runs/transfer benchmarks/runs/dis benchmarks/runs/diagnostics --out benchmarks/results/phase_flatness

A stage without its done.json (still training, or stopped) is listed as unfinished and read no further.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

from hetseg.bench.curves import pct, read_stage, verdict
from hetseg.io_atomic import write_atomic, write_json, write_text


def group(stage: str) -> str:
    """The summary row of a stage label ``root/.../<run>/<stage>``: root, method (the run's name
    without its ``_k...`` cell suffix) and stage, so memorised -Str classifiers and the weak-set one
    are counted apart."""
    parts = stage.split("/")
    return f"{parts[0]}: {re.sub(r'_k[^/]*$', '', parts[-2])}/{parts[-1]}"


def report(stages: list[dict], unfinished: list[str], command: str, checksum: str) -> str:
    """The Markdown: counts per method and stage, then one row per stage."""
    def count(rows: list[dict], key: str) -> str:
        known = [r[key] for r in rows if r[key] is not None]
        return f"{sum(known)} / {len(known)}"

    kinds: dict[str, list[dict]] = {}
    for r in stages:
        kinds.setdefault(group(r["stage"]), []).append(r)
    scales = sorted({str(r["scale"]) for r in stages})
    seeds = sorted({r["seed"] for r in stages})
    lines = ["# Within-phase flatness beside the flatness rule", "",
             f"Command: `{command}`. Records read: {len(stages)} stages at scale {', '.join(scales)} (each run's "
             f"config.json, model.scale), seeds {', '.join(map(str, seeds))}, sha256 of their logs and configs "
             f"`{checksum[:12]}…`. The reading and why it exists: docs/DECISIONS.md, \"Within-phase flatness\" "
             "(a second reading, stated after the rule had failed to say flat on tripled budgets; it "
             "replaces nothing). Each constant-lr phase [a, b) of length L: mean loss over "
             "[a + 0.2 L, a + 0.6 L) vs [a + 0.6 L, b); flat unless more than 5 % and 0.01 lower "
             "(\"flat (floor)\": more than 5 % but at most 0.01 lower). The final-lr windows are 0.4 L apart, "
             "a shorter span than the rule's; a fixed-lr stage has one phase, so there it is only another "
             "window pair ([20 %, 60 %) vs [60 %, 100 %) of its steps), not a correction for a drop.", "",
             *([f"Unfinished (no done.json), not read: {', '.join(unfinished)}.", ""] if unfinished else []),
             "| runs: method/stage | stages | rule: flat | within phases: final lr flat | every phase flat |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {len(v)} | {count(v, 'rule_flat')} | {count(v, 'flat_at_final_lr')} | "
              f"{count(v, 'flat_within_phases')} |" for k, v in sorted(kinds.items())]
    lines += ["", "| stage | scale | seed | steps | lr ×0.1 at | rule (last 3/10 vs 5-7/10) | before the drop | "
              "at the final lr |", "|---|---|---|---|---|---|---|---|"]
    for r in stages:
        ph = r["phases"]
        before = f"{pct(ph[0]['change'])} {verdict(ph[0]['flat'], ph[0]['change'])}" if len(ph) == 2 else "(fixed lr)"
        drop = str(ph[1]["from"]) if len(ph) == 2 else "-"
        lines.append(f"| {r['stage']} | {r['scale']} | {r['seed']} | {r['steps']} | {drop} | {r['rule_verdict']} | "
                     f"{before} | {pct(ph[-1]['change'])} {verdict(ph[-1]['flat'], ph[-1]['change'])} |")
    return "\n".join(lines) + "\n"


def figure(stages: list[dict], path: Path) -> None:
    """Rule change against final-phase change, one point per stage, coloured by runs root."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    roots = sorted({r["stage"].split("/")[0] for r in stages})
    for root in roots:
        pts = [(100 * r["rule_change"], 100 * r["phases"][-1]["change"]) for r in stages
               if r["stage"].split("/")[0] == root and r["rule_change"] is not None
               and r["phases"][-1]["change"] is not None]
        if pts:
            ax.scatter(*zip(*pts), label=root, s=18)
    for f in (ax.axhline, ax.axvline):
        f(-5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("rule: last 3/10 vs 5-7/10 (%)")
    ax.set_ylabel("final-lr phase: late vs early window (%)")
    ax.set_title("Training-loss change per stage\n(dashed: -5 %; the 0.01 absolute floor is not drawn)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))  # as every bench figure
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", nargs="+", type=Path, help="runs roots (every */metrics.csv below is a stage)")
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.json, OUT.md, OUT.png")
    a = ap.parse_args(argv)
    stages, unfinished, digest = [], [], hashlib.sha256()
    for root in a.roots:
        if not root.is_dir():
            print(f"hetseg: error: {root}: not a folder; fix: pass a runs root such as benchmarks/runs/dis",
                  file=sys.stderr)
            return 2
        for log in sorted(root.rglob("metrics.csv")):
            label = str(log.parent.relative_to(root.parent))
            if not (log.parent / "done.json").is_file():
                unfinished.append(label)
                continue
            try:
                stages.append(read_stage(log.parent, root))
            except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
                print(f"hetseg: error: {log.parent.parent / 'config.json'}: {e}; fix: pass runs roots whose "
                      "runs were written by hetseg (each run dir keeps its config.json)", file=sys.stderr)
                return 2
            for f in [*sorted(log.parent.glob("metrics*.csv")), log.parent.parent / "config.json"]:
                digest.update(f.read_bytes())
    command = "python scripts/phase_flatness.py " + " ".join(map(str, a.roots)) + f" --out {a.out}"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(a.out.with_suffix(".json"), {"command": command, "records_sha256": digest.hexdigest(),
                                            "rule": "docs/DECISIONS.md, Within-phase flatness", "unfinished": unfinished,
                                            "stages": stages})
    write_text(a.out.with_suffix(".md"), report(stages, unfinished, command, digest.hexdigest()))
    figure(stages, a.out.with_suffix(".png"))
    print(f"phase_flatness: {len(stages)} stages -> {a.out}.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training-loss curves read back from a stage's CSV log: the evidence, in every bench's Markdown,
of whether a budget let the loss flatten (issue 12; docs/BENCHMARKS.md)."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def _rows(stage_dir: Path) -> list[dict]:
    """A stage's log rows. A resumed stage keeps its earlier log as ``metrics.partN.csv``
    (hetseg.engine.train); those rows count up to where the next part starts, since a resume
    replays the steps after its checkpoint."""
    parts = sorted(stage_dir.glob("metrics.part*.csv"), key=lambda p: int(p.stem.split("part")[1]))
    rows: list[dict] = []
    for f in [*parts, stage_dir / "metrics.csv"]:
        if not f.is_file():
            continue
        new = list(csv.DictReader(f.open()))
        start = min((int(r["step"]) for r in new), default=None)
        rows = [r for r in rows if start is None or int(r["step"]) < start] + new
    return rows


def curve(stage_dir: Path, every: int = 100, metric: str = "val/acc") -> dict[str, list]:
    """Train loss averaged per ``every`` steps ([[last step of the bucket, mean], ...]) and the
    held-out ``metric`` points ([[step, value], ...], key ``held_out_acc``) of one stage."""
    loss: dict[int, list[float]] = {}
    acc: list[tuple[int, float]] = []
    for r in _rows(Path(stage_dir)):
        step = int(r["step"])
        if r.get("train/loss"):
            loss.setdefault((step // every + 1) * every, []).append(float(r["train/loss"]))
        if r.get(metric):
            # The end-of-stage evaluation is logged again one step later: keep the first.
            if not acc or step + 1 - acc[-1][0] > 1:
                acc.append((step + 1, float(r[metric])))
    return {"train_loss": [[s, round(sum(v) / len(v), 4)] for s, v in sorted(loss.items())],
            "held_out_acc": [[s, round(a, 4)] for s, a in acc]}


def loss_by_parts(stage_dir: Path, parts: int = 10) -> list[list[float]]:
    """Train loss averaged over each 1/``parts`` of the stage's logged steps: [[last step, mean], ...];
    [] when the stage has no log (e.g. a stage trained before logs were kept)."""
    steps = 1 + max((int(r["step"]) for r in _rows(Path(stage_dir)) if r.get("train/loss")), default=-1)
    if steps <= 0:
        return []
    return curve(stage_dir, every=max(1, -(-steps // parts)))["train_loss"]


# The one flatness rule every bench reports (docs/BENCHMARKS.md, "Did the loss flatten?"), fixed
# before any converged-budget run: the mean training loss over the last three tenths of a stage's
# steps is at most FLAT_TOLERANCE below the mean over the three tenths before (tenths 5-7), or at
# most FLAT_ABSOLUTE below it (a loss near zero -- a memorised small set -- halving from 0.006 to
# 0.003 is not a budget too short). Three tenths each side, because one tenth of a small-batch
# stage swings by 10 % or more.
FLAT_TOLERANCE = 0.05
FLAT_ABSOLUTE = 0.01


def _windows(pts: list[list[float]]) -> tuple[float, float] | None:
    """(mean over tenths 5-7, mean over the last three tenths); None for fewer than ten points."""
    vals = [v for _, v in pts]
    return None if len(vals) < 10 else (sum(vals[4:7]) / 3, sum(vals[7:10]) / 3)


def late_change(pts: list[list[float]]) -> float | None:
    """Relative change of the mean loss, last three tenths vs tenths 5-7 (negative: still falling);
    None for a curve of fewer than ten points (or a zero loss before)."""
    w = _windows(pts)
    return None if w is None or w[0] <= 0 else (w[1] - w[0]) / w[0]


def _flat(before: float, after: float) -> bool:
    """The rule's thresholds on two window means: flat unless more than 5 % and more than 0.01 lower."""
    return after >= before * (1 - FLAT_TOLERANCE) or before - after <= FLAT_ABSOLUTE


def flattened(pts: list[list[float]]) -> bool | None:
    """The flatness rule above on a :func:`loss_by_parts` curve (None: too short to say)."""
    w, change = _windows(pts), late_change(pts)
    if w is None or change is None:
        return None
    return _flat(*w)


# A second reading beside the rule (docs/DECISIONS.md, "Within-phase flatness"), stated after the rule
# had failed to say flat on tripled budgets: the rule's tenths 5-7 and 8-10 straddle every step
# schedule's lr drop, so it measures the drop as much as the budget. This one compares windows inside
# each constant-lr phase, skipping the phase's first fifth (the start, or the drop's own transient).
PHASE_SKIP, PHASE_SPLIT, PHASE_MIN_POINTS = 0.2, 0.6, 5


def phase_flatness(stage_dir: Path, steps: int, lr_step: float) -> list[dict]:
    """Within-phase flatness of one stage's logged training loss: one dict per constant-lr phase
    (``[0, m)`` and ``[m, steps)`` with m = max(1, int(lr_step * steps)), the milestone of
    hetseg.engine.optim; one phase when lr_step = 1.0), each with its steps ``from``/``to``, the mean
    logged loss over ``early`` = [a + 0.2 L, a + 0.6 L) and ``late`` = [a + 0.6 L, b), their point
    counts ``n``, the relative ``change`` and ``flat`` by the flatness rule's thresholds (None: a window
    has fewer than 5 logged losses, or the stage has no log)."""
    m = max(1, int(lr_step * steps))
    bounds = [(0, m), (m, steps)] if m < steps else [(0, steps)]
    pts = [(int(r["step"]), float(r["train/loss"])) for r in _rows(Path(stage_dir)) if r.get("train/loss")]
    phases = []
    for a, b in bounds:
        cut0, cut1 = a + PHASE_SKIP * (b - a), a + PHASE_SPLIT * (b - a)
        early = [v for s, v in pts if cut0 <= s < cut1]
        late = [v for s, v in pts if cut1 <= s < b]
        ph = {"from": a, "to": b, "n": [len(early), len(late)], "early": None, "late": None,
              "change": None, "flat": None}
        if min(len(early), len(late)) >= PHASE_MIN_POINTS:
            e, l_ = sum(early) / len(early), sum(late) / len(late)
            change = (l_ - e) / e if e > 0 else 0.0
            ph.update(early=round(e, 4), late=round(l_, 4), change=round(change, 4), flat=_flat(e, l_))
        phases.append(ph)
    return phases


def tenths_header(*columns: str) -> list[str]:
    """The two header lines of a loss table: ``columns``, 1/10 ... 10/10, then the flatness verdict."""
    return ["| " + " | ".join([*columns, *(f"{i}/10" for i in range(1, 11)), "last 3/10 vs 5-7/10"]) + " |",
            "|" + "---|" * (len(columns) + 11)]


def tenths_cells(pts: list[list[float]]) -> str:
    """A loss curve of :func:`loss_by_parts` as ten Markdown table cells ('-' where a short stage
    has fewer than ten points) and the verdict cell: the change and "flat" or "**falling**"."""
    vals = [f"{v:.3f}" for _, v in pts][:10]
    change = late_change(pts)
    flat = flattened(pts)
    w = _windows(pts)
    verdict = ("flat (loss 0)" if w is not None and w[0] == 0 else "-") if flat is None else \
        f"{100 * change:+.1f} % " + ("flat" if flat else "**falling**")
    return " | ".join(vals + ["-"] * (10 - len(vals)) + [verdict])


def run_losses(run_dir: Path) -> dict[str, list[list[float]]]:
    """{stage: loss_by_parts} for every stage log of one run dir (``RUN/<stage>/metrics.csv``)."""
    return {f.parent.name: loss_by_parts(f.parent) for f in sorted(Path(run_dir).glob("*/metrics.csv"))}


def stage_losses(run_root: Path) -> dict[str, list[list[float]]]:
    """{"<run>/<stage>": loss_by_parts} for every run dir directly below ``run_root``."""
    return {f"{run.name}/{stage}": pts for run in sorted(p for p in Path(run_root).iterdir() if p.is_dir())
            for stage, pts in run_losses(run).items()}


# Reading a stage from its run dir's records (its config.json and metrics.csv), for the scripts that report
# flatness across committed runs.
def stage_config(cfg: dict, stage: str) -> dict:
    """The StageConfig dict (steps, lr_step, ...) of ``stage`` in a run's saved config.json, found where
    the run's method reads it (``Method.stage_section``: "joint" is DIS's dis.joint, TransferNet's
    transfer.joint)."""
    from hetseg.errors import HetsegError
    from hetseg.methods import get_method

    try:
        found = cfg
        for part in get_method(cfg.get("model", {}).get("name", "")).stage_section(stage).split("."):
            found = found.get(part) if isinstance(found, dict) else None
    except HetsegError as e:  # an unknown model.name
        raise ValueError(str(e).split("; fix:")[0]) from None
    if not isinstance(found, dict) or "steps" not in found or "lr_step" not in found:
        raise ValueError(f"its config.json has no stage {stage!r} with steps and lr_step")
    return found


def read_stage(stage_dir: Path, root: Path) -> dict:
    """One finished stage's record, labelled from ``root``'s parent on: the flatness rule's change and verdict
    and the within-phase reading (scripts/phase_flatness.py, scripts/table1_3x.py)."""
    run_cfg = json.loads((stage_dir.parent / "config.json").read_text())
    sc = stage_config(run_cfg, stage_dir.name)
    if not isinstance(run_cfg.get("model"), dict) or "scale" not in run_cfg["model"] or "seed" not in run_cfg:
        raise ValueError("no model.scale or seed")  # every config hetseg writes has both
    tenths = loss_by_parts(stage_dir)
    phases = phase_flatness(stage_dir, int(sc["steps"]), float(sc["lr_step"]))
    rule = tenths_cells(tenths).rsplit(" | ", 1)[1]  # the bench tables' own verdict cell
    return {"stage": str(stage_dir.relative_to(root.parent)), "scale": run_cfg["model"]["scale"],
            "seed": run_cfg["seed"], "steps": int(sc["steps"]),
            "lr_step": float(sc["lr_step"]), "rule_change": late_change(tenths), "rule_verdict": rule,
            "rule_flat": True if rule == "flat (loss 0)" else flattened(tenths),
            "phases": phases, "flat_at_final_lr": phases[-1]["flat"],
            "flat_within_phases": None if any(p["flat"] is None for p in phases) else all(p["flat"] for p in phases)}


def verdict(flat: bool | None, change: float | None = None) -> str:
    """A Markdown cell for a flat / falling / unknown verdict; "flat (floor)" when only the absolute
    floor (a fall of at most 0.01 in loss units) makes a fall of more than 5 % flat."""
    if flat is None:
        return "-"
    return ("flat (floor)" if change is not None and change < -FLAT_TOLERANCE else "flat") if flat else "**falling**"


def pct(x: float | None) -> str:
    """A relative change as a signed percentage ('-' when unknown)."""
    return "-" if x is None else f"{100 * x:+.1f} %"

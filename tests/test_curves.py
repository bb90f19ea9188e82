"""The flatness rule every bench's loss table reports (hetseg.bench.curves; docs/BENCHMARKS.md,
"Did the loss flatten?"): last three tenths vs tenths 5-7, 5 % tolerance."""

from __future__ import annotations

import pytest

from hetseg.bench.curves import FLAT_ABSOLUTE, FLAT_TOLERANCE, flattened, late_change, tenths_cells, tenths_header


def _pts(vals):
    return [[100 * (i + 1), v] for i, v in enumerate(vals)]


def test_a_curve_still_falling_is_called_falling():
    # Table 1's DecoupledNet k = 5 decoder (seed 0): 0.358 over tenths 5-7, 0.330 over the last three.
    pts = _pts([0.565, 0.573, 0.502, 0.433, 0.368, 0.364, 0.343, 0.342, 0.353, 0.296])
    assert late_change(pts) == pytest.approx((0.330333 - 0.358333) / 0.358333, rel=1e-3)
    assert flattened(pts) is False
    assert tenths_cells(pts).endswith("-7.8 % **falling**")


def test_a_plateau_and_a_rise_are_flat_and_the_tolerance_is_the_boundary():
    assert flattened(_pts([1.5, 0.9, 0.86, 0.76, 0.737, 0.717, 0.773, 0.754, 0.806, 0.764])) is True
    just_inside = _pts([1.0] * 7 + [1.0 - FLAT_TOLERANCE + 1e-6] * 3)
    just_outside = _pts([1.0] * 7 + [1.0 - FLAT_TOLERANCE - 1e-6] * 3)
    assert flattened(just_inside) is True and flattened(just_outside) is False


def test_a_short_curve_gets_no_verdict_and_the_table_keeps_its_width():
    assert flattened(_pts([0.5, 0.4])) is None and late_change([]) is None
    head = tenths_header("stage")
    cells = tenths_cells(_pts([0.5, 0.4])).split(" | ")
    assert len(cells) == head[0].count("|") - 2 == 11 and cells[-1] == "-"


def test_a_loss_near_zero_is_flat_by_the_absolute_floor():
    # Table 1's -Str classifier at k = 25 memorises its 172 images: 0.006 -> 0.002 is -77 % but 0.004 absolute.
    pts = _pts([0.242, 0.131, 0.044, 0.018, 0.012, 0.006, 0.011, 0.002, 0.003, 0.002])
    assert late_change(pts) < -0.5 and flattened(pts) is True
    assert flattened(_pts([1.0] * 7 + [0.9] * 3)) is False  # the floor does not excuse a large loss falling
    assert flattened(_pts([0.1] * 7 + [0.1 - 2 * FLAT_ABSOLUTE] * 3)) is False  # -20 % and 0.02 absolute
    assert tenths_cells(_pts([0.1, 0.01] + [0.0] * 8)).endswith("flat (loss 0)")


def _log(tmp_path, losses, every=10):
    """A stage dir whose metrics.csv logs ``losses[i]`` at step every*(i+1)-1, as the trainer logs."""
    stage = tmp_path / "seg"
    stage.mkdir(exist_ok=True)
    rows = ["epoch,step,train/loss"] + [f"0,{every * (i + 1) - 1},{v}" for i, v in enumerate(losses)]
    (stage / "metrics.csv").write_text("\n".join(rows) + "\n")
    return stage


def test_within_phase_reading_splits_at_the_schedulers_milestone_and_skips_each_phases_first_fifth(tmp_path):
    from hetseg.bench.curves import phase_flatness

    # 1,000 steps, lr drop at 700: level at 1.0 before the drop, a transient right after it (700-759,
    # inside the skipped fifth of the 300-step phase), then level at 0.5. The rule calls this falling
    # (tenths 8-10 sit after the drop); inside each phase it is flat.
    losses = [1.0] * 70 + [0.8] * 6 + [0.5] * 24
    stage = _log(tmp_path, losses)
    (before, after) = phase_flatness(stage, steps=1000, lr_step=0.7)
    assert (before["from"], before["to"], after["from"], after["to"]) == (0, 700, 700, 1000)
    assert before["flat"] is True and after["flat"] is True and after["early"] == after["late"] == 0.5
    assert flattened(_pts([1.0] * 7 + [0.5] * 3)) is False
    # Still falling inside the final phase: falling, with the change measured inside the phase.
    stage = _log(tmp_path, [1.0] * 70 + [0.5] * 12 + [0.4] * 18)
    after = phase_flatness(stage, steps=1000, lr_step=0.7)[-1]
    assert after["flat"] is False and after["change"] == pytest.approx((0.4 - (0.5 * 6 + 0.4 * 6) / 12) / 0.45, abs=1e-3)


def test_within_phase_reading_of_a_fixed_lr_or_short_stage(tmp_path):
    from hetseg.bench.curves import phase_flatness

    # lr_step 1.0: one phase, windows [200, 600) and [600, 1000).
    stage = _log(tmp_path, [2.0] * 20 + [1.0] * 40 + [0.9] * 40)
    (only,) = phase_flatness(stage, steps=1000, lr_step=1.0)
    assert only["n"] == [40, 40] and only["flat"] is False
    assert only["change"] == pytest.approx(-0.1, abs=1e-4)
    # Too few logged points in a window: no verdict, not a guess.
    stage = _log(tmp_path, [1.0] * 10, every=100)
    assert [p["flat"] for p in phase_flatness(stage, steps=1000, lr_step=0.75)] == [None, None]


def test_phase_flatness_script_reads_each_methods_own_stage_config_and_writes_its_report(tmp_path, capsys):
    """"joint" is both DIS's stage (step schedule) and TransferNet's (fixed lr): the script must read
    each run's own section, and a runs root that is not a folder is one error line."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "phase_flatness.py"
    spec = importlib.util.spec_from_file_location("phase_flatness", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    root = tmp_path / "runs"
    sections = {"dis": {"joint": {"steps": 1000, "lr_step": 0.75}},
                "transfer": {"joint": {"steps": 1000, "lr_step": 1.0}}, "seg": {"steps": 1000, "lr_step": 0.7}}
    # decouplednet_transfer's seg lives at the top level although the method has a transfer section.
    for run, name, stage in (("dis_run", "dis", "joint"), ("tn_run", "transfernet", "joint"),
                             ("dt_run", "decouplednet_transfer", "seg"), ("busy_run", "dis", "joint")):
        (root / run).mkdir(parents=True)
        (root / run / "config.json").write_text(json.dumps({"model": {"name": name, "scale": "cpu"}, "seed": 1,
                                                            **sections}))
        _log(root / run, [1.0] * 100).rename(root / run / stage)
        if run != "busy_run":  # a stage still training has no done.json
            (root / run / stage / "done.json").write_text("{}")
    assert mod.main([str(root), "--out", str(tmp_path / "out" / "pf")]) == 0
    rec = json.loads((tmp_path / "out" / "pf.json").read_text())
    by = {r["stage"]: r for r in rec["stages"]}
    assert {k: [p["to"] for p in r["phases"]] for k, r in by.items()} == {
        "runs/dis_run/joint": [750, 1000], "runs/tn_run/joint": [1000], "runs/dt_run/seg": [700, 1000]}
    assert rec["unfinished"] == ["runs/busy_run/joint"]
    assert all(r["flat_at_final_lr"] is True for r in rec["stages"])
    assert {(r["scale"], r["seed"]) for r in rec["stages"]} == {("cpu", 1)}
    md = (tmp_path / "out" / "pf.md").read_text()
    assert md.count("(fixed lr)") == 1 and "3 stages at scale cpu" in md and "seeds 1," in md
    assert "| runs/dis_run/joint | cpu | 1 | 1000 | 750 |" in md
    assert (tmp_path / "out" / "pf.png").stat().st_size > 0
    capsys.readouterr()
    assert mod.main([str(tmp_path / "absent"), "--out", str(tmp_path / "x")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()  # exactly one line
    assert line.startswith("hetseg: error: ") and "; fix: " in line
    (root / "dt_run" / "config.json").write_text(json.dumps({"model": {"name": "decouplednet_transfer"}}))  # no seg, no scale
    assert mod.main([str(root), "--out", str(tmp_path / "y")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("hetseg: error: ") and "; fix: " in line
    assert not (tmp_path / "y.json").exists()


def test_within_phase_reading_keeps_the_rules_thresholds_floor_and_boundary(tmp_path):
    from hetseg.bench.curves import phase_flatness

    def final(late):  # fixed lr, early window [200, 600) at 1.0 or 0.1, late window [600, 1000) at ``late``
        return phase_flatness(_log(tmp_path, [9.9] * 20 + [base] * 40 + [late] * 40), 1000, 1.0)[0]["flat"]

    base = 1.0
    assert final(1.0 - FLAT_TOLERANCE + 1e-6) is True and final(1.0 - FLAT_TOLERANCE - 1e-6) is False
    base = 0.1  # -8 % but 0.008 lower: flat by the absolute floor; 0.012 lower is falling
    assert final(0.092) is True and final(0.088) is False

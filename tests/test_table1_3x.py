"""scripts/table1_3x.py: the seed-0 3x diagnostic beside Table 1's cells (docs/DECISIONS.md, "Equal effort
at three times the budget"), read from records: leads rounded after the subtraction, the two questions
read as the rule fixed them, one val split or one error line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "table1_3x.py"


def _script():
    spec = importlib.util.spec_from_file_location("table1_3x", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(path: Path, stage: str | None, miou: float, gt: float | None = None, checksum: str = "c" * 64) -> None:
    path.mkdir(parents=True)
    model = "deconvnet" if path.name.startswith("deconvnet") else "decouplednet"  # each stage read where its method reads it
    (path / "config.json").write_text(json.dumps({"model": {"name": model, "scale": "cpu"}, "seed": 0,
                                                  **{s: {"steps": 1000, "lr_step": 0.75} for s in ("cls", "seg", "deconv")}}))
    for name, value in (("eval_val.json", miou), ("eval_val_gt.json", gt)):
        if value is not None:
            (path / name).write_text(json.dumps({"split_checksum": checksum, "scores": {"miou": value / 100}}))
    for s in ([stage] if stage else []) + (["cls"] if stage == "seg" else []):
        (path / s).mkdir()
        rows = [f"0,{20 * i + 19},{1.0 - 0.001 * i}" for i in range(50)]
        (path / s / "metrics.csv").write_text("epoch,step,train/loss\n" + "\n".join(rows) + "\n")
        (path / s / "done.json").write_text(json.dumps({"steps": 1000, "wall_s": 10.0}))


def _records(tmp_path: Path, leads_3x: dict, checksum_full: str = "c" * 64) -> tuple[Path, Path]:
    diag, table = tmp_path / "diag", tmp_path / "table"
    for k, (dn, dc) in leads_3x.items():
        _run(diag / f"decouplednet_k{k}_3x_s0", "seg", dn, dn + 10)
        _run(diag / f"deconvnet_k{k}_3x_s0", "deconv", dc, checksum=checksum_full if k == "full" else "c" * 64)
        _run(table / f"decouplednet_k{k}", None, 55.14, 66.0)
        _run(table / f"deconvnet_k{k}", None, 38.36)
    return diag, table


def test_leads_questions_and_report(tmp_path):
    mod = _script()
    # lead 30 at 5, 35 at 10 (grows), 20 at 25, 7 at full: shrinks end to end but not at every step
    diag, table = _records(tmp_path, {"5": (60, 30), "10": (60, 25), "25": (60, 40), "full": (63, 56)})
    assert mod.main(["--diagnostics", str(diag), "--table", str(table), "--out", str(tmp_path / "o" / "t")]) == 0
    res = json.loads((tmp_path / "o" / "t.json").read_text())
    assert [r["lead"] for r in res["rows"]] == [30, 35, 20, 7]
    assert res["rows"][0]["table"]["lead"] == 16.8  # 55.14 - 38.36 = 16.78: rounded after subtracting, not 16.7
    assert res["questions"] == {"decouplednet_above_deconvnet_at_10_25": True, "lead_shrinks_at_every_step": False,
                                "lead_shrinks_end_to_end": True}
    md = (tmp_path / "o" / "t.md").read_text()
    assert "at every step 5 → 10 → 25 → full (3x): **no**" in md and "--diagnostics" in res["command"]
    assert (tmp_path / "o" / "t.png").stat().st_size > 0


def test_a_tie_still_shrinks_and_a_growing_lead_does_not(tmp_path):
    mod = _script()
    for name, leads, every, end in (("tie", {"5": (60, 30), "10": (60, 30), "25": (60, 40), "full": (63, 56)}, True, True),
                                    ("grows", {"5": (60, 50), "10": (60, 40), "25": (60, 35), "full": (63, 33)},
                                     False, False)):
        diag, table = _records(tmp_path / name, leads)
        assert mod.main(["--diagnostics", str(diag), "--table", str(table), "--out", str(tmp_path / name / "t")]) == 0
        q = json.loads((tmp_path / name / "t.json").read_text())["questions"]
        # the rule reads 36.2 >= L10 >= L25 >= 7.1: equal leads still shrink; a lead growing end to end does not
        assert (q["lead_shrinks_at_every_step"], q["lead_shrinks_end_to_end"]) == (every, end)


def test_a_cell_below_deconvnet_and_a_mixed_val_split(tmp_path, capsys):
    mod = _script()
    diag, table = _records(tmp_path / "a", {"5": (60, 30), "10": (40, 45), "25": (60, 40), "full": (63, 56)})
    assert mod.main(["--diagnostics", str(diag), "--table", str(table), "--out", str(tmp_path / "a" / "t")]) == 0
    assert json.loads((tmp_path / "a" / "t.json").read_text())["questions"]["decouplednet_above_deconvnet_at_10_25"] is False
    capsys.readouterr()
    diag, table = _records(tmp_path / "b", {"5": (60, 30), "10": (60, 25), "25": (60, 40), "full": (63, 56)},
                           checksum_full="d" * 64)
    assert mod.main(["--diagnostics", str(diag), "--table", str(table), "--out", str(tmp_path / "b" / "t")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("hetseg: error: ") and "different val splits" in line and "; fix: " in line
    assert not (tmp_path / "b" / "t.json").exists()


def test_the_committed_results_are_the_scripts_output_on_the_committed_records(tmp_path):
    """benchmarks/results/table1_3x_seed0.json is what the script writes from the committed records: nothing in
    it was typed by hand or left from older records."""
    repo = SCRIPT.parents[1]
    committed = json.loads((repo / "benchmarks" / "results" / "table1_3x_seed0.json").read_text())
    mod = _script()
    assert mod.main(["--diagnostics", str(repo / mod.DIAG), "--table", str(repo / mod.TABLE),
                     "--out", str(tmp_path / "t")]) == 0
    fresh = json.loads((tmp_path / "t.json").read_text())
    assert committed["command"] == "python scripts/table1_3x.py --out benchmarks/results/table1_3x_seed0"
    assert {k: v for k, v in fresh.items() if k != "command"} == {k: v for k, v in committed.items() if k != "command"}


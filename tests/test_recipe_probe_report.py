"""scripts/recipe_probe_report.py: the recipe probes' Markdown is a rendering of their JSON record and
nothing more (benchmarks/results/fashion_recipe_probe.{json,md}; docs/DECISIONS.md, "Recipes from the
shipped backbone")."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "benchmarks" / "results" / "fashion_recipe_probe.json"


def _script():
    spec = importlib.util.spec_from_file_location("recipe_probe_report", ROOT / "scripts" / "recipe_probe_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_committed_markdown_is_the_rendering_of_the_committed_record():
    mod = _script()
    rec = json.loads(RECORD.read_text())
    md = RECORD.with_suffix(".md").read_text()
    assert md == mod.report(rec, "benchmarks/results/fashion_recipe_probe.json")
    # every probe run has its section, and the decision's numbers are the record's
    assert all(f"### {i}. `{name}`" in md for i, name in enumerate(rec["runs"], 1))
    assert f"| 3000 | {' | '.join(map(str, rec['three_seed_decision']['unseen_items_map']['3000_steps'].values()))}" in md
    assert RECORD.with_suffix(".png").stat().st_size > 0


def test_a_record_written_elsewhere_gets_its_markdown_and_figure_and_a_bad_one_is_one_line(tmp_path, capsys):
    mod = _script()
    rec = {"command": "probe", "seed": 0, "dataset": "d", "init": "shipped",
           "trained_on": {"file": "a.txt", "images": 9, "checksum": "ab" * 32},
           "held_out": {"file": "b.txt", "images": 1, "checksum": "cd" * 32},
           "runs": {"r1": {"stage": "cls", "steps": 20, "overrides": ["cls.lr=0.1"], "wall_s": 1.0,
                           "points": [{"step": 10, "train_loss": 0.5, "heldout_map": 0.7},
                                      {"step": 20, "train_loss": 0.4, "heldout_map": 0.8}]},
                    "r2": {"stage": "seg", "steps": 20, "overrides": [], "train_loss": [[10, 0.9], [20, 0.6]],
                           "heldout_miou": 40.0, "heldout_miou_gt": 50.0}}}
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(rec))
    assert mod.main([str(path)]) == 0
    md = (tmp_path / "probe.md").read_text()
    assert "| 20 | 0.4 | 0.8 |" in md and "| 20 | 0.6 |" in md and "true labels 50.0" in md
    assert "Three-seed" not in md and (tmp_path / "probe.png").stat().st_size > 0
    capsys.readouterr()
    del rec["runs"]["r1"]["steps"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(rec))
    assert mod.main([str(bad)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"hetseg: error: {bad}: ") and "; fix: " in line
    assert not (tmp_path / "bad.md").exists()

"""``hetseg demo`` writes ``RUN/demo.json``: every number it prints, with command, seed, data and split
checksums, scale, budgets and machine (a provenance audit: the README's demo numbers had no file behind
them). The training and evaluation are stubbed here -- `make demo` itself runs them; this checks the wiring."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import make_scenes

pytestmark = pytest.mark.usefixtures("one_thread")


def test_demo_writes_its_numbers_and_their_provenance(tmp_path_factory, tmp_path, monkeypatch, capsys):
    import hetseg.demo as demo
    import hetseg.engine.evaluate as evaluate
    import hetseg.engine.predict as predict
    import hetseg.methods as methods
    import hetseg.metrics as metrics
    from hetseg.data.scenes import read_meta

    data = make_scenes(tmp_path_factory, "demo_record", seed=3, num_train=12, num_val=6)
    monkeypatch.setattr(demo, "ensure_scenes", lambda root, seed=0, *a: read_meta(root))
    stages = {"cls": {"steps": 300, "effective_batch": 32, "wall_s": 1.5, "precision": "32-true",
                      "metrics": {"val/mAP": 0.79}},
              "seg": {"steps": 400, "effective_batch": 16, "wall_s": 2.5, "precision": "32-true", "metrics": {}}}
    monkeypatch.setattr(methods, "train", lambda cfg, progress=False: stages)
    monkeypatch.setattr(evaluate, "evaluate_run", lambda run, split, use_gt_labels=False, **k: (
        SimpleNamespace(miou=0.312 if use_gt_labels else 0.279), {"scores": {"iou": {}}}))
    monkeypatch.setattr(metrics, "format_table", lambda *a: "(table)")
    monkeypatch.setattr(predict, "run_predict", lambda *a, **k: None)
    run = tmp_path / "demo"
    assert demo.run_demo(str(data), str(run)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"demo: mIoU=27.9 (run dir: {run})"  # still the last line
    assert "[demo] the same model given the val images' true labels: mIoU=31.2" in out
    rec = json.loads((run / "demo.json").read_text())
    assert (rec["miou"], rec["miou_gt_labels"], rec["seed"], rec["scale"]) == (0.279, 0.312, 0, "cpu")
    from hetseg.data.records import read_split

    val = read_split(Path(data) / "splits" / "val.txt", data)
    assert rec["val_split_sha256"] == val.checksum() and rec["data"]["meta_sha256"]
    assert rec["stages"] == stages  # every stage's budget, wall time, precision and metrics as train returned them
    assert rec["command"] and rec["machine"]["cpu_count"]
    # the baselines recorded are the ones printed (computed from the val masks, not stubbed here)
    printed = {k: float(next(line for line in out if line.strip().startswith(p)).split("mIoU=")[1].split()[0])
               for k, p in (("all_background", "all-background"), ("best_global_threshold", "best global threshold"))}
    assert set(rec["baselines"]) == set(printed) and 0 < printed["all_background"] < 100
    assert all(f"{rec['baselines'][k] * 100:.1f}" == f"{v:.1f}" for k, v in printed.items())

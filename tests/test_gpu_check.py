"""benchmarks/gpu_check.py (the paper-scale GPU checks) builds each method's paper recipe on the
small data set, and its report shows every measured row. The GPU run itself cannot run here; its
``--smoke cpu`` mode runs the same code for 2 steps (about 5 minutes, not part of the suite)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hetseg.config import Config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402
import gpu_report  # noqa: E402
from conftest import make_scenes  # noqa: E402


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return make_scenes(tmp_path_factory, "gpu_scenes", seed=3, num_train=120, num_val=16)


class Captured(Exception):
    """Raised by the stand-in for the engine's run_stage: the stage's config was seen, nothing trains."""


@pytest.mark.parametrize("label", list(gpu_check.METHODS))
def test_each_stage_trains_with_the_config_the_report_names(label, scenes, tmp_path, monkeypatch):
    """What the method really hands the engine for each stage is the StageConfig whose batch,
    accumulate, optimizer and lr the report prints (gpu_check.stage_config)."""
    import hetseg.methods.decouplednet as dn
    import hetseg.methods.deconvnet as dc
    import hetseg.methods.dis as dis
    import hetseg.methods.transfernet as tn

    seen = []

    def capture(name, module, cfg, sc, *args, **kwargs):
        seen.append((name, sc))
        raise Captured

    for mod in (dn, dc, dis, tn):
        monkeypatch.setattr(mod, "run_stage", capture)
    cfg, stages = gpu_check.method_config(label, scenes, tmp_path / "run", smoke="cpu")
    for stage in stages:
        with pytest.raises(Captured):
            gpu_check.train_stage(cfg, stage, 3)
        assert seen[-1][0] == stage and seen[-1][1] is gpu_check.stage_config(cfg, stage)
        assert seen[-1][1].steps == 3


@pytest.mark.parametrize("label", list(gpu_check.METHODS))
def test_each_method_gets_the_paper_recipe_on_the_given_data(label, tmp_path):
    paper_name, _, stages, _ = gpu_check.METHODS[label]
    paper = Config.load(ROOT / "configs" / f"{paper_name}.yaml")
    cfg, got = gpu_check.method_config(label, tmp_path / "scenes", tmp_path / "run")
    assert got == stages and cfg.model.scale == "paper" and cfg.data.root == str(tmp_path / "scenes")
    assert cfg.model.vgg_weights == "" and cfg.model.backbone == ""  # random start, no file needed
    for stage in stages:
        want = gpu_check.stage_config(paper, stage)
        sc = gpu_check.stage_config(cfg, stage)
        assert (sc.batch_size, sc.accumulate, sc.optimizer, sc.lr, sc.precision) == \
            (want.batch_size, want.accumulate, want.optimizer, want.lr, want.precision), stage
    if label == "DIS":
        assert gpu_check.stage_config(cfg, "joint") is cfg.dis.joint and cfg.dis.t_train == paper.dis.t_train
    if label == "TransferNet":
        assert gpu_check.stage_config(cfg, "joint") is cfg.transfer.joint
    if label == "DecoupledNet-Str":
        assert cfg.data.weak_split == cfg.data.strong_split


def test_smoke_paper_shrinks_batches_only():
    cfg, stages = gpu_check.method_config("DIS", Path("d"), Path("r"), smoke="paper")
    assert cfg.model.scale == "paper" and cfg.data.workers == 0
    assert all(gpu_check.stage_config(cfg, s).batch_size == 1 for s in stages)


def test_report_lists_every_measured_row(tmp_path):
    row = {"batch": 8, "accumulate": 1, "rows_per_micro_batch": 16, "optimizer": "sgd", "lr": 0.001,
           "precision": "bf16-mixed", "crops_per_s": 123.4, "peak_gib": 7.5, "steps": 300}
    res = {"command": "python3 benchmarks/gpu_check.py", "seed": 0, "scale": "paper", "wall_s": 1.0,
           "machine": {"device": "GPU X"}, "dataset": {"meta_sha256": "ab" * 32}, "workers": 12,
           "real_budget_s": 75.0, "dis_paper_ms": 140.0, "skipped": [], "errors": ["DeconvNet: OOM"],
           "training": {"DIS": [{**row, "stage": s} for s in ("labelmap", "recon", "joint")]},
           "inference": {"DIS": [{"ms_per_image": 9.0, "input_size": 360, "params_m": 50.0, "predict": {"steps": t}}
                                 for t in (0, 30)]},
           "real": {"DIS": {**row, "stage": "labelmap", "loss_tenths": [[30 * i, 2.0 - 0.1 * i] for i in range(1, 11)],
                            "late_change": -0.1, "first_tenth": 1.9, "last_tenth": 1.0}}}
    md = gpu_report.markdown(res)
    for s in ("labelmap", "recon", "joint"):
        assert f"| DIS | {s} | 8 x 1 | 16 | sgd 0.001 | bf16-mixed | 123.4 | 7.50 |" in md
    assert "| DIS (t = 0) | 360 | 50.0 | 9.0 |" in md and "| DIS (t = 30) |" in md
    assert "140 ms" in md and "DeconvNet: OOM" in md and "`abababababab`" in md
    assert "| DIS | labelmap | 300 | 123.4 | 1.9000 | 1.0000 | -10.0 % |" in md
    gpu_report.write_report(res, tmp_path)
    assert (tmp_path / "gpu.md").read_text() == md and (tmp_path / "gpu.png").stat().st_size > 0

"""DIS's recipe: the mixed dataset, the three stages, the CLI on a DIS run, and the bench (tiny)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_scenes
from PIL import Image

from hetseg.cli import main
from hetseg.config import Config
from hetseg.errors import HetsegError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["dis.labelmap.steps=3", "dis.recon.steps=3", "dis.joint.steps=3", "dis.labelmap.batch_size=2",
        "dis.recon.batch_size=2", "dis.joint.batch_size=2", "dis.t_train=2", "dis.t_test=2"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return make_scenes(tmp_path_factory, "dis_scenes", seed=6, num_train=60, num_val=8)


def test_mixed_dataset_pairs_masked_and_tag_only_rows(scenes):
    from hetseg.data.mixed import MixedDataset
    from hetseg.methods import load_split

    cfg = Config().override([f"data.root={scenes}"])
    strong, weak = load_split(cfg, "strong"), load_split(cfg, "weak").weak()
    ds = MixedDataset(strong, weak, 11, 96, seed=0)
    assert len(ds.strong) == len(strong.strong()) and len(ds.weak) == len(weak) - len(ds.strong)
    strong_imgs = {strong.path(r.image) for _, r in ds.strong}
    assert not any(weak.path(r.image) in strong_imgs for _, r in ds.weak)  # no image twice
    xs, ms, ts, hs, xw, mw, tw, hw = ds[0]
    assert xs.shape == xw.shape == (3, 96, 96) and bool(hs) and not bool(hw)
    assert (mw == 255).all() and (ms != 255).any()  # tag-only rows: no fake mask
    assert tw.sum() >= 1 and ts.shape == (10,)
    before = ds._perm.copy()
    ds.set_epoch(1)
    assert not np.array_equal(before, ds._perm)  # weak rows re-drawn per epoch


def test_inferred_labelmaps_keep_to_the_tags(scenes):
    from hetseg.methods.dis.stages import JointStage
    from hetseg.models import create_model

    torch.manual_seed(0)
    net = create_model("dis", num_classes=10)
    stage = JointStage(net, Config().dis.joint, t_train=3, recon_weight=1.0)
    x = torch.randn(4, 3, 96, 96)
    tags = torch.zeros(4, 10)
    tags[:, 2] = 1
    tags[1, 7] = 1
    with torch.no_grad():  # untagged class 5 (channel 6) outscores everything, tagged class 2 (channel 3) beats bg
        net.labelmap.bias.zero_()
        net.labelmap.bias[6] = 50.0
        net.labelmap.bias[3] = 25.0
    target = stage.inferred_targets(x, tags)
    assert target.shape == (4, 96, 96)
    assert set(target.unique().tolist()) <= {0, 3, 8}  # mask indices: background, class 2, class 7
    assert not (target[[0, 2, 3]] == 8).any()
    assert (target == 3).float().mean() > 0.5  # the dominant untagged class gave way to the tagged one
    assert net.training  # restored after the inference


@pytest.fixture(scope="module")
def dis_run(scenes, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("dis_run") / "run"
    assert main(["train", "--method", "dis", "--run-dir", str(run), "--no-progress", f"data.root={scenes}", *TINY]) == 0
    return run


def test_cli_trains_all_three_stages(dis_run):
    run = dis_run
    info = json.loads((run / "model.json").read_text())
    assert info["model"] == "dis" and list(info["stages"]) == ["labelmap", "recon", "joint"]
    assert info["stages"]["joint"]["t_train"] == 2 and info["model_kwargs"]["infer_steps"] == 2
    assert info["splits"]["weak"]["images"] > 0 and info["splits"]["strong"]["images"] > 0
    assert all(json.loads((run / s / "done.json").read_text())["steps"] == 3 for s in info["stages"])


def test_recon_stage_keeps_the_rest_frozen(scenes, tmp_path):
    from safetensors.torch import load_file

    from hetseg.methods import train

    cfg = Config(run_dir=str(tmp_path / "r")).override([f"data.root={scenes}", "model.name=dis", *TINY])
    train(cfg, ("labelmap",), progress=False)
    a = load_file(str(tmp_path / "r" / "model.safetensors"))
    train(cfg, ("recon",), progress=False)
    b = load_file(str(tmp_path / "r" / "model.safetensors"))
    changed = {k.split(".")[0] for k in a if not torch.equal(a[k], b[k])}
    assert changed == {"recon"}  # parameters and BN buffers of everything else unchanged


def test_eval_and_predict_open_a_dis_run(dis_run, tmp_path):
    from hetseg.methods import evaluate_run

    run = dis_run
    assert main(["eval", "--checkpoint", str(run)]) == 0
    report = json.loads((run / "eval_val.json").read_text())
    assert report["model"] == "dis" and report["images"] == 8
    s0, _ = evaluate_run(run, "val", predict_kwargs={"steps": 0}, suffix="_t0")
    assert (run / "eval_val_t0.json").is_file() and 0 <= s0.miou <= 1
    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 50, 3), np.uint8)).save(inp / "p.png")
    assert main(["predict", "--checkpoint", str(run), "--input", str(inp), "--output", str(tmp_path / "out")]) == 0
    assert Image.open(tmp_path / "out" / "p.png").size == (50, 70)


def test_bench_dis_tiny_writes_results(scenes, tmp_path, capsys):
    from hetseg.bench.dis import T_TEST, run_dis

    out = tmp_path / "res"
    out.mkdir()  # Table 1's committed results beside it: DecoupledNet / DeconvNet at the same k, with their budgets
    t1 = json.loads(Path(__file__).parents[1].joinpath("benchmarks/results/table1.json").read_text())
    from hetseg.bench.dis_report import beside
    from hetseg.bench.provenance import dataset_info

    (out / "table1.json").write_text(json.dumps(t1))  # as committed: another data set and seeds, so not beside
    assert beside(out, [5], dataset_info(scenes), [0], "cpu") == {}
    t1 = {**t1, "dataset": dataset_info(scenes), "seeds": [0]}  # a Table 1 made on these scenes with this seed
    (out / "table1.json").write_text(json.dumps({**t1, "scale": "paper"}))
    assert beside(out, [5], dataset_info(scenes), [0], "cpu") == {}  # another scale: not beside
    (out / "table1.json").write_text(json.dumps({**t1, "dataset": {"meta_sha256": None}}))
    assert beside(out, [5], {"meta_sha256": None}, [0], "cpu") == {}  # two sets without meta.json: unknown, not same
    (out / "table1.json").write_text(json.dumps(t1))
    assert run_dis("cpu", [0], str(out), str(scenes), str(tmp_path / "runs"), budget="tiny", jobs=1,
                   figure_images=1) == 0
    r = json.loads((out / "dis.json").read_text())
    assert [rec["k"] for rec in r["records"]] == [5, "full"]
    cell = r["records"][0]["cells"][-1]
    assert set(cell["miou"]) == {str(t) for t in T_TEST} and set(cell["ms_per_image"]) == {str(t) for t in T_TEST}
    assert r["parameters"]["paper (K=20)"] == pytest.approx(45.5e6, rel=0.03)
    md = (out / "dis.md").read_text()
    assert "t_ts=30" in md and "hetseg bench dis" in md and (out / "dis.png").stat().st_size > 0
    dn_steps = next(c["steps"] for c in t1["cells"] if c["method"] == "decouplednet")
    assert r["beside"]["steps"]["decouplednet"] == dn_steps and "Not an equal-effort comparison" in md
    dn5 = t1["summary"]["decouplednet"]["5"]["mean"]
    assert f"| 5 | {100 * cell['miou']['30']:.1f} | {dn5:.1f} |" in md
    # Loss curves of every stage (tiny: a few points each): the base run's and each joint run's.
    rec = r["records"][0]
    assert set(rec["train_loss"]) == {"labelmap", "recon"} and list(cell["train_loss"]) == ["joint"]
    assert all(pts and pts[-1][1] > 0 for pts in [*rec["train_loss"].values(), *cell["train_loss"].values()])
    assert "## Training loss per stage" in md and "| 0 | 5 | base | labelmap |" in md
    first, s30 = rec["cells"][0], r["summary"][0]["values"]["30"]  # one seed: the mean is that seed's value
    assert s30["mean"] == pytest.approx(100 * first["miou"]["30"], abs=1e-4) and s30["std"] is None
    assert r["claims"] and all(c["holds"] in (True, False) for c in r["claims"])  # one seed: every claim judged
    # Started from the shipped ResNet backbone, named by checksum; k = full trains one joint run.
    from hetseg.zoo import RESNET_BACKBONE_DIR

    assert r["backbone"]["sha256"] == json.loads((RESNET_BACKBONE_DIR / "backbone.json").read_text())["sha256"]
    assert "shipped ResNet backbone" in md
    full = r["records"][1]["cells"]
    assert [c["t_train"] for c in full] == r["t_trains"] and full[1]["same_as"] == full[0]["run"]
    assert not (tmp_path / "runs" / "seed0" / f"dis_kfull_ttr{r['t_trains'][1]}").exists()
    # Seeds across sessions: each (seed, k) left its record beside its base run; with the weights gone
    # (a clean clone of the committed records) the same command reports from the records alone.
    assert r["compute_wall_s"] > 0 and r["record_machines"] and rec["config"]["model"]["name"] == "dis"
    # Training walls are the stages' own (done.json), not a clock around a call that may skip them.
    base_done = [json.loads((tmp_path / "runs/seed0/dis_k5_base" / s / "done.json").read_text())["wall_s"]
                 for s in ("labelmap", "recon")]
    assert rec["base_wall_s"] == pytest.approx(sum(base_done), abs=0.11) and rec["base_wall_s"] > 0
    # ... and so are its sessions, by precision and device: labelmap, recon and two joint runs at k = 5; labelmap,
    # recon and one joint run at k = full (its t_tr alias trains nothing): seven stages of one session each.
    from hetseg.bench.provenance import trained_as_phrase
    from hetseg.engine.train import device_label

    precision = json.loads((tmp_path / "runs/seed0/dis_k5_base/recon/done.json").read_text())["precision"]
    assert {stage: [x["from_step"] for x in v] for stage, v in rec["sessions"].items()} == {
        "dis_k5_base/labelmap": [0], "dis_k5_base/recon": [0], **{f"dis_k5_ttr{t}/joint": [0] for t in r["t_trains"]}}
    assert r["trained_as"] == {"0": {f"{precision} on {device_label()}": 7}} and trained_as_phrase(r["trained_as"]) in md
    # A record made for another t_ts grid is not reported: its runs are evaluated again on this grid,
    # from their weights (nothing retrained), with the same scores and the training's walls.
    rf = tmp_path / "runs" / "seed0" / "dis_k5_base" / "dis_record.json"
    rf.write_text(json.dumps({**json.loads(rf.read_text()), "t_test": [0, 99]}))
    weights = {w: w.stat().st_mtime_ns for w in (tmp_path / "runs").rglob("model.safetensors")}
    assert run_dis("cpu", [0], str(out), str(scenes), str(tmp_path / "runs"), budget="tiny", jobs=1,
                   figure_images=0) == 0
    regraded = json.loads((out / "dis.json").read_text())["records"][0]
    assert json.loads(rf.read_text())["t_test"] == list(T_TEST)
    assert [c["miou"] for c in regraded["cells"]] == [c["miou"] for c in rec["cells"]]
    assert {w: w.stat().st_mtime_ns for w in weights} == weights
    assert regraded["base_wall_s"] == rec["base_wall_s"]
    assert [c["joint_wall_s"] for c in regraded["cells"]] == [c["joint_wall_s"] for c in rec["cells"]]
    # ... and a record whose walls were clocked around such a re-evaluation reports the stages' walls.
    rf.write_text(json.dumps({**json.loads(rf.read_text()), "base_wall_s": 0.1}))
    assert run_dis("cpu", [0], str(out), str(scenes), str(tmp_path / "runs"), budget="tiny", jobs=1,
                   figure_images=1) == 0
    r = json.loads((out / "dis.json").read_text())
    assert r["records"][0]["base_wall_s"] == rec["base_wall_s"]
    for w in (tmp_path / "runs").rglob("model.safetensors"):
        w.unlink()
    capsys.readouterr()
    assert run_dis("cpu", [0], str(out), str(scenes), str(tmp_path / "runs"), budget="tiny", jobs=1,
                   figure_images=1) == 0
    again = json.loads((out / "dis.json").read_text())
    assert again["records"] == r["records"] and again["summary"] == r["summary"] and again["claims"] == r["claims"]
    assert again["compute_wall_s"] == r["compute_wall_s"]  # the records' time, not this invocation's
    assert again["trained_as"] == r["trained_as"]  # the stages' markers, weights or not
    # A stage whose marker is gone keeps the record's own entry (as the walls do); with neither, it counts as
    # one session of unknown precision and device, never as none.
    (tmp_path / "runs" / "seed0" / f"dis_k5_ttr{r['t_trains'][-1]}" / "joint" / "done.json").unlink()
    assert run_dis("cpu", [0], str(out), str(scenes), str(tmp_path / "runs"), budget="tiny", jobs=1,
                   figure_images=0) == 0
    assert json.loads((out / "dis.json").read_text())["trained_as"] == r["trained_as"]
    rf.write_text(json.dumps({k: v for k, v in json.loads(rf.read_text()).items() if k != "sessions"}))
    assert run_dis("cpu", [0], str(out), str(scenes), str(tmp_path / "runs"), budget="tiny", jobs=1,
                   figure_images=0) == 0
    unknown = "precision not recorded on a device not recorded (its stage's last session; earlier ones unknown)"
    assert json.loads((out / "dis.json").read_text())["trained_as"] == {
        "0": {f"{precision} on {device_label()}": 6, unknown: 1}}
    assert "No figure" in (out / "dis.md").read_text() and "dis.png" not in capsys.readouterr().out  # old png unlisted
    assert not list((tmp_path / "runs").rglob("model.safetensors"))  # nothing was retrained
    # ... a record of another recipe is refused, not mixed in (by the record's own config too) ...
    with pytest.raises(HetsegError, match="trained with another recipe"):
        run_dis("cpu", [0], str(out), str(scenes), str(tmp_path / "runs"), budget="tiny", jobs=1,
                overrides=["dis.joint.lr=0.1"], figure_images=0)
    saved = json.loads(rf.read_text())
    rf.write_text(json.dumps({**saved, "config": {**saved["config"], "dis": {**saved["config"]["dis"], "infer_lr": 9.0}}}))
    with pytest.raises(HetsegError, match="a record of another recipe"):
        run_dis("cpu", [0], str(out), str(scenes), str(tmp_path / "runs"), budget="tiny", jobs=1, figure_images=0)
    # ... and one that does not parse is one error, not a traceback.
    rf.write_text("<<<<<<< HEAD")
    with pytest.raises(HetsegError, match="not a readable DIS bench record"):
        run_dis("cpu", [0], str(out), str(scenes), str(tmp_path / "runs"), budget="tiny", jobs=1, figure_images=0)


def _dis_record(seed: int, k, cells: list[tuple[int, float, float]]) -> dict:
    """A bench record with the fields the report reads: cells (t_tr, mIoU at t_ts=0, at t_ts=30)."""
    return {"seed": seed, "k": k, "cells": [{"t_train": t, "miou": {"0": a, "30": b}, "miou_gt_labels_t0": a + 0.1}
                                            for t, a, b in cells]}


def test_dis_seed_summary_and_claims():
    """Mean ± sample std per (k, t_tr, t_ts) across seeds; a claim that holds on the means but not on
    every seed is 'not shown' (None), one that fails on the means is False."""
    from hetseg.bench.dis_report import claims, markdown, summarise

    recs = [_dis_record(0, 5, [(0, 0.30, 0.20), (5, 0.20, 0.25)]), _dis_record(0, "full", [(0, 0.3, 0.5), (5, 0.3, 0.5)]),
            _dis_record(1, 5, [(0, 0.32, 0.22), (5, 0.22, 0.23)]), _dis_record(1, "full", [(0, 0.45, 0.4), (5, 0.45, 0.4)])]
    summary = summarise(recs, [0, 30])
    assert [(r["k"], r["t_train"]) for r in summary] == [(5, 0), (5, 5), ("full", 0), ("full", 5)]
    v = summary[0]["values"]["0"]
    assert v["mean"] == pytest.approx(31.0) and v["std"] == pytest.approx(2 ** 0.5) and v["seeds"] == {"0": 30.0, "1": 32.0}
    assert summary[1]["values"]["gt_t0"]["mean"] == pytest.approx(31.0)
    c = {x["claim"]: x["holds"] for x in claims(summary, [0, 30])}
    assert c == {"k = 5, t_tr = 0: mIoU at t_ts = 30 > t_ts = 0": False,  # 21 vs 31
                 "k = 5, t_tr = 5: mIoU at t_ts = 30 > t_ts = 0": True,  # 24 vs 21, and on both seeds
                 "k = full, one joint run: mIoU at t_ts = 30 > t_ts = 0": None,  # 45 vs 37.5, seed 1 40 < 45
                 "k = 5: t_tr = 5 > t_tr = 0 at t_ts = 30": True}  # 24 vs 21; 25 > 20 and 23 > 22
    one = {x["claim"]: x["holds"] for x in claims(summarise(recs[:2], [0, 30]), [0, 30])}
    assert one["k = full, one joint run: mIoU at t_ts = 30 > t_ts = 0"] is True  # one seed: judged on its values
    report = {"scale": "cpu", "command": "hetseg bench dis", "seeds": [0, 1], "wall_s": 60, "t_test": [0, 30],
              "machine": {"usable_cpus": 2, "cpu": "x"}, "dataset": {"splits": {}, "meta_sha256": "ab"},
              "budgets": {}, "records": [{**r, "cells": [{**c, "ms_per_image": {"0": 1.0, "30": 9.0}} for c in r["cells"]]}
                                         for r in recs],
              "summary": summary, "claims": claims(summary, [0, 30]), "parameters": {}}
    md = markdown(report)
    assert "| 5 | 0 | 31.0 ± 1.4 | 21.0 ± 1.4 | 41.0 ± 1.4 |" in md and "| not shown |" in md
    assert "| 1 | full | 5 | 45.0 | 40.0 | 55.0 | -5.0 |" in md


def test_bench_dis_starts_from_the_shipped_backbone_unless_the_weights_are_named():
    """Paper scale has no shipped backbone: naming ``model.resnet_weights`` (ImageNet ResNet-101) replaces
    it, and without it the bench refuses the run before any folder (tests/test_bench_paper.py; it used to
    train from random weights, then named a shipped backbone the user never asked for)."""
    from hetseg.bench.dis import base_config

    assert base_config("cpu", 0, "d", 5, "runs").model.backbone == "shipped"
    named = base_config("paper", 0, "d", 5, "runs", overrides=["model.resnet_weights=r101.pth"])
    assert named.model.backbone == "" and named.model.resnet_weights == "r101.pth"
    mapping = base_config("paper", 0, "d", 5, "runs", overrides=["model={resnet_weights: r101.pth}"])
    assert mapping.model.backbone == "" and mapping.model.resnet_weights == "r101.pth"
    assert base_config("paper", 0, "d", 5, "runs").model.backbone == ""


@pytest.mark.parametrize("stage_name", ["recon", "joint"])
def test_subnet2_trains_on_the_tag_restricted_labelmap(stage_name):
    """The refinement objective feeds subnet-2 softmax(u3) restricted to the tags (docs/DIS.md), so the
    recon and joint stages train it on that input too: a class no row is tagged with reaches subnet-2
    as exactly 0, so its first conv's weights for that input channel get no gradient (they did when
    subnet-2 was trained on the unrestricted softmax, which the refinement never showed it)."""
    from hetseg.methods.dis.stages import JointStage, ReconStage
    from hetseg.models import create_model

    torch.manual_seed(0)
    net = create_model("dis", num_classes=10)
    sc = Config().dis.recon if stage_name == "recon" else Config().dis.joint
    stage = ReconStage(net, sc) if stage_name == "recon" else JointStage(net, sc, t_train=0, recon_weight=1.0)
    x = torch.randn(4, 3, 96, 96)
    tags = torch.zeros(4, 10)
    tags[:, 2], tags[3, 7] = 1, 1  # every row: class 2; the second tag-only row also class 7
    mask = torch.full((4, 96, 96), 255, dtype=torch.long)
    mask[:2, :48], mask[:2, 48:] = 0, 3  # the two masked rows: background and class 2
    has = torch.tensor([True, True, False, False])
    halves = [(t[:2], t[2:]) for t in (x, mask, tags, has)]
    batch = [h[0] for h in halves] + [h[1] for h in halves]  # (masked half, tag-only half), as MixedDataset
    net.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        stage.training_step(batch, 0).backward()
    grad = net.recon[0].weight.grad.abs().sum(dim=(0, 2, 3))  # per input channel = mask index
    untagged = [c + 1 for c in range(10) if c not in (2, 7)]
    assert (grad[untagged] == 0).all() and (grad[[0, 3, 8]] > 0).all()


def test_an_error_line_names_a_nested_stage_by_its_config_section(scenes, tmp_path, capsys, monkeypatch):
    """DIS's stages live under dis.*: a fix naming labelmap.batch_size would name no setting."""
    import torch

    from hetseg.methods.dis.stages import LabelmapStage

    def no_memory(self, batch, batch_idx):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(LabelmapStage, "training_step", no_memory)
    assert main(["train", "--method", "dis", "--stage", "labelmap", "--run-dir", str(tmp_path / "run"), "--no-progress",
                 f"data.root={scenes}", *TINY]) == 2
    assert "fix: dis.labelmap.batch_size=1 dis.labelmap.accumulate=2 keep the effective batch 2 (in another" in \
        capsys.readouterr().err

"""Engine: config round trip, crops, tiny end-to-end train -> eval -> predict, resume, CLI errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from PIL import Image

from hetseg.cli import main
from hetseg.config import Config
from hetseg.data.crops import binary_target, crop_pad, enclosing_box, foreground_box, label_subsets
from hetseg.errors import HetsegError

from conftest import make_scenes


# ---------------------------------------------------------------- config -------------------------
def test_config_roundtrip_and_overrides(tmp_path):
    cfg = Config().override(["seg.steps=7", "model.scale=paper", "data.root=/x", "crops.max_scale=2"])
    assert cfg.seg.steps == 7 and cfg.model.scale == "paper" and cfg.crops.max_scale == 2.0
    cfg.save(tmp_path / "c.json")
    assert Config.load(tmp_path / "c.json") == cfg
    with pytest.raises(HetsegError, match="unknown config key"):
        Config().override(["seg.stpes=3"])
    with pytest.raises(HetsegError):
        Config.from_dict({"sge": {}})


# ---------------------------------------------------------------- crops --------------------------
def test_label_subsets_and_binary_target():
    assert label_subsets((2, 5)) == [(2,), (5,), (2, 5)]
    assert len(label_subsets((1, 2, 3))) == 7
    mask = np.array([[0, 2, 5], [255, 5, 2]], np.uint8)
    np.testing.assert_array_equal(binary_target(mask, (5,)), [[0, 0, 1], [255, 1, 0]])


def test_enclosing_box_contains_foreground_and_may_leave_image():
    rng = np.random.default_rng(0)
    fg = (30, 40, 50, 60)
    outside = 0
    for _ in range(200):
        x0, y0, x1, y1 = enclosing_box(fg, 96, 96, rng, max_scale=1.6)
        assert x0 <= 30 and y0 <= 40 and x1 >= 50 and y1 >= 60
        outside += x0 < 0 or y0 < 0 or x1 > 96 or y1 > 96
    assert outside > 0


def test_crop_pad_pads_image_black_and_mask_void():
    img = np.full((4, 4, 3), 200, np.uint8)
    mask = np.ones((4, 4), np.uint8)
    ci, cm = crop_pad(img, mask, (-2, -1, 3, 3))
    assert ci.shape == (4, 5, 3) and cm.shape == (4, 5)
    assert (ci[0] == 0).all() and (cm[0] == 255).all() and (cm[:, :2] == 255).all()
    assert (cm[1:, 2:] == 1).all() and (ci[1:, 2:] == 200).all()
    assert foreground_box(np.pad(np.ones((2, 2), np.uint8), 3), (1,)) == (3, 3, 5, 5)


# ---------------------------------------------------------------- end to end ---------------------
@pytest.fixture(scope="module")
def tiny_scenes(tmp_path_factory) -> Path:
    return make_scenes(tmp_path_factory, "scenes", seed=3, num_train=120, num_val=16)


def tiny_config(root: Path, run: Path) -> Config:
    return Config(run_dir=str(run)).override([
        f"data.root={root}", "data.strong_split=splits/strong_5.txt",
        "cls.steps=6", "cls.batch_size=8", "cls.checkpoint_every=2",
        "seg.steps=6", "seg.batch_size=4", "seg.accumulate=2", "seg.checkpoint_every=2",
        "crops.crops_per_subset=4", "crops.proposals=none",
    ])


def test_train_eval_predict_end_to_end(tiny_scenes, tmp_path):
    from hetseg.methods import evaluate_run, train

    run = tmp_path / "run"
    cfg = tiny_config(tiny_scenes, run)
    summaries = train(cfg, ("cls", "seg"), progress=False)
    assert summaries["cls"]["steps"] == 6 and summaries["seg"]["steps"] == 6
    assert summaries["seg"]["effective_batch"] == 8
    assert "val/mAP" in summaries["cls"]["metrics"]
    assert (run / "model.safetensors").is_file() and (run / "config.json").is_file()
    assert (run / "cls" / "metrics.csv").is_file()
    scores, report = evaluate_run(run, "val")
    assert 0.0 <= scores.miou <= 1.0 and report["images"] == 16
    assert len(list((run / "predictions_val").glob("*.png"))) == 16
    # predictions load like ground truth: palette PNGs of the input's size
    pred = Image.open(next((run / "predictions_val").glob("*.png")))
    assert pred.mode == "P" and pred.size == (96, 96)
    # a rerun replaces the folder whole: no stale PNG of an earlier evaluation, no staging folder left
    (run / "predictions_val" / "stale_0001.png").write_bytes(b"old")
    evaluate_run(run, "val")
    assert len(list((run / "predictions_val").glob("*.png"))) == 16
    assert not (run / "predictions_val" / "stale_0001.png").exists()
    assert not [p.name for p in run.iterdir() if p.name.startswith(".predictions_val")]
    # CLI predict on odd inputs: grey, RGBA, tiny, non-square
    inp = tmp_path / "inputs"
    inp.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70), np.uint8), "L").save(inp / "grey.png")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (33, 20, 4), np.uint8), "RGBA").save(inp / "rgba.png")
    Image.fromarray(np.zeros((3, 5, 3), np.uint8)).save(inp / "tiny.jpg")
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(run), "--input", str(inp), "--output", str(out), "--overlay"]) == 0
    for name, (h, w) in {"grey": (50, 70), "rgba": (33, 20), "tiny": (3, 5)}.items():
        im = Image.open(out / f"{name}.png")
        assert im.mode == "P" and im.size == (w, h)
        fig = Image.open(out / "figures" / f"{name}.png")  # image | prediction + legend
        assert fig.format == "PNG" and fig.mode in ("RGB", "RGBA") and fig.size[0] > fig.size[1]
    data = json.loads((out / "scores.json").read_text())
    assert len(data["images"]) == 3 and len(data["images"][0]["class_scores"]) == 10


class _StopAt(L.Callback):
    """Simulates a crash (a killed job) right after optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise RuntimeError("simulated crash")


class _FirstStep(L.Callback):
    def __init__(self) -> None:
        self.first = None

    def on_train_batch_start(self, trainer, *args) -> None:
        if self.first is None:
            self.first = trainer.global_step


def test_resume_after_interruption_continues_from_saved_step(tiny_scenes, tmp_path):
    from hetseg.methods import train

    cfg = tiny_config(tiny_scenes, tmp_path / "run")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, ("cls",), progress=False, callbacks=[_StopAt(5)])
    ckpt = tmp_path / "run" / "cls" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    probe = _FirstStep()
    summary = train(cfg, ("cls",), progress=False, callbacks=[probe])["cls"]
    assert probe.first == 4  # last.ckpt was written at step 4 (checkpoint_every=2); 5 was lost
    assert summary["steps"] == 6 and summary["resumed_from"] == str(ckpt)
    assert (tmp_path / "run" / "cls" / "metrics.part1.csv").is_file()  # the log before the crash is kept
    # a finished stage is skipped, not retrained, and says so
    again = train(cfg, ("cls",), progress=False)["cls"]
    assert again.pop("skipped") is True and again == json.loads((tmp_path / "run" / "cls" / "done.json").read_text())


def test_same_command_runs_under_torchrun_ddp(tiny_scenes, tmp_path):
    """`torchrun --nproc_per_node 2 -m hetseg train ...`: 2 CPU processes (gloo), one done.json."""
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "hetseg", "train", "--stage", "cls",
           "--run-dir", str(run), "--no-progress", f"data.root={tiny_scenes}", "cls.steps=3", "cls.batch_size=4"]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = json.loads((run / "cls" / "done.json").read_text())
    assert done["world_size"] == 2 and done["effective_batch"] == 8 and done["steps"] == 3
    assert (run / "model.safetensors").is_file()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["predict", "--checkpoint", str(tmp_path), "--input", "x.jpg", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hetseg: error:") and "\n" not in err and str(tmp_path) in err


def test_pretrain_stage_and_backbone_errors_are_one_line(tmp_path, capsys):
    """Stage pre needs the 10-class fashion classifier; a missing backbone names the fix."""
    run = str(tmp_path / "run")
    assert main(["train", "--stage", "pre", "--run-dir", run, "--no-progress", "model.name=deconvnet"]) == 2
    err = capsys.readouterr().err.strip()  # DeconvNet has no stage pre: the method names its own stages
    assert "\n" not in err and "--stage pre" in err and "'deconvnet' has stages deconv" in err and "fix:" in err
    assert main(["train", "--stage", "pre", "--run-dir", run, "--no-progress", "data.num_classes=21"]) == 2
    err = capsys.readouterr().err.strip()  # DecoupledNet, but not the 10-class fashion classifier
    assert "\n" not in err and "--stage pre" in err and "model.name=decouplednet" in err
    assert main(["train", "--stage", "deconv", "--run-dir", run, "--no-progress", "model.name=deconvnet",
                 f"model.backbone={tmp_path / 'nothing'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no backbone file" in err and "hetseg train --stage pre" in err


@pytest.mark.parametrize("method, override, names", [
    ("deconvnet", "seg.steps=3", "deconv.*"),                   # DeconvNet's budget is deconv.*
    ("baselinenet", "transfer.joint.steps=3", "transfer.baseline.*"),
    ("dis", "seg.steps=3", "dis.labelmap.*"),
    ("decouplednet", "transfer.threshold=0.5", "--method baselinenet"),  # a section only the transfer family reads
    ("deconvnet", "seg={steps: 3}", "deconv.*"),                # a whole section as a mapping, merged leaf by leaf
    ("baselinenet", "transfer={att: {steps: 3}}", "transfer.baseline.*"),
])
def test_an_override_the_method_would_ignore_is_refused(tmp_path, capsys, method, override, names):
    """Before, ``--method deconvnet seg.steps=3`` trained the default 3,900 deconv steps without a word."""
    run = tmp_path / "run"
    assert main(["train", "--method", method, "--run-dir", str(run), "--no-progress", override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hetseg: error: {override}: method '{method}'") and "\n" not in err
    assert names in err and "fix:" in err and not run.exists()


def test_a_budget_of_a_stage_the_config_skips_is_refused(tmp_path, capsys):
    """transfer.classifier_run skips the transfer family's stage cls, so cls.* would be ignored there."""
    run = tmp_path / "run"
    item = "cls.steps=3"
    args = ["train", "--method", "transfernet", "--run-dir", str(run), "--no-progress",
            f"transfer.classifier_run={tmp_path / 'cls_run'}", item]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hetseg: error: {item}: method 'transfernet' skips the stage reading cls.*") and "\n" not in err
    assert "it trains att, joint" in err and not run.exists()


def test_a_config_file_gets_a_note_for_each_setting_its_method_ignores(tiny_scenes, tmp_path, capsys):
    """A config file may serve several methods, so it is not refused: each ignored setting is named, one
    note line per reason, once nothing is refused (a refused command prints its one error line only: here
    the notes came first, then the error on the missing data root)."""
    cfg = tmp_path / "shared.yaml"
    cfg.write_text("model: {name: deconvnet}\nseg: {steps: 9, lr: 0.1}\ndis: {t_train: 2}\ndeconv: {steps: 3}\n"
                   f"data: {{root: {tmp_path / 'nowhere'}}}\n")
    assert main(["train", "--config", str(cfg), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hetseg: error: "), lines
    ok = ["deconv.steps=1", "deconv.batch_size=2", "crops.crops_per_subset=1", "crops.proposals=none"]
    assert main(["train", "--config", str(cfg), "--run-dir", str(tmp_path / "ran"), "--no-progress",
                 f"data.root={tiny_scenes}", *ok]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"hetseg: note: {cfg}: dis.t_train: method 'deconvnet' does not read dis.*")
    assert lines[1] == (f"hetseg: note: {cfg}: seg.lr, seg.steps: method 'deconvnet' has no stage reading seg.*, "
                        "so it would be ignored; fix: set its own stages' deconv.*")
    # a rerun with the run's own config.json (which records every section) gets no notes
    run = tmp_path / "run"
    assert not run.exists()  # the refused run above left no folder
    run.mkdir()
    (run / "config.json").write_text(json.dumps(Config.load(cfg).to_dict()))
    assert main(["train", "--config", str(run / "config.json"), "--run-dir", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hetseg: error: ") and "hetseg: note" not in err


def test_overrides_of_the_methods_own_stages_pass_the_check():
    from hetseg.methods import get_method

    for method, overrides in (("decouplednet", ["cls.lr=0.1", "seg.steps=2", "pre.steps=1", "crops.max_scale=1"]),
                              ("dis", ["dis.labelmap.steps=3", "dis.t_train=2", "pre.steps=1"]),
                              ("transfernet", ["cls.steps=2", "transfer.att.steps=2", "transfer.threshold=0.5"]),
                              ("decouplednet_transfer", ["seg.steps=2", "transfer.source_split=x"])):
        get_method(method).check_overrides(overrides)  # raises on a refusal


def test_label_loss_outside_the_classifier_stage_is_named_as_ignored(tmp_path, capsys):
    """Every stage section is a StageConfig, so seg.label_loss parsed and was silently ignored (only the
    image classifier's BCE reads it); on the command line it is refused, in a config file it gets a note,
    and it does not make a rerun's recipe differ."""
    from hetseg.methods import get_method

    get_method("decouplednet").check_overrides(["cls.label_loss=caffe"])
    for method, key in (("decouplednet", "seg.label_loss"), ("dis", "dis.labelmap.label_loss"),
                        ("transfernet", "transfer.att.label_loss"), ("decouplednet", "pre.label_loss")):
        why = get_method(method).unread(key)
        assert why and why.startswith("only stage cls") and why.endswith("fix: drop it, or set cls.label_loss")
    item = "seg.label_loss=caffe"
    args = ["train", "--method", "decouplednet", "--run-dir", str(tmp_path / "run"), "--no-progress", item]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hetseg: error: {item}: only stage cls") and "\n" not in err
    assert not (tmp_path / "run").exists()
    cfg = tmp_path / "loss.yaml"
    cfg.write_text(f"seg: {{label_loss: caffe}}\ndata: {{root: {tmp_path / 'nowhere'}}}\n")
    assert main(["train", "--config", str(cfg), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # refused (no data): its error line only, the note is not said
    assert get_method("decouplednet").unread_settings(Config.load(cfg)) == [
        "seg.label_loss: only stage cls (the image classifier) reads label_loss, so seg.label_loss would be ignored; "
        "fix: drop it, or set cls.label_loss"]  # the note a run that starts says (CLI: "<config>: " before it)
    from hetseg.errors import HetsegError
    from hetseg.methods.run_state import refuse_other_recipe

    run = tmp_path / "trained"
    (run / "cls").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(Config(run_dir=str(run)).to_dict()))
    (run / "cls" / "done.json").write_text("{}")  # trained_stages reads the marker's presence only
    method = get_method("decouplednet")
    refuse_other_recipe(run, Config(run_dir=str(run)).override([item]), ("cls", "seg"), method)
    with pytest.raises(HetsegError, match="differs in cls.label_loss"):
        refuse_other_recipe(run, Config(run_dir=str(run)).override(["cls.label_loss=caffe"]), ("cls", "seg"), method)


def test_every_stage_of_every_method_has_a_budget_section_it_accepts():
    """stage_section must name a real StageConfig (the one run_stage trains with), and an override of it passes."""
    from hetseg.config import STAGE_SECTIONS, Config, StageConfig
    from hetseg.methods import METHODS

    cfg = Config()
    assert len(METHODS) >= 6
    for method in METHODS.values():
        for stage in method.stages + method.extra_stages:
            section = method.stage_section(stage)
            assert section in STAGE_SECTIONS and isinstance(method.stage_config(cfg, stage), StageConfig)
            method.check_overrides([f"{section}.steps=1", f"{section}={{lr: 0.1}}"])


def test_auto_precision_is_bf16_only_where_bf16_is_native(monkeypatch):
    """An AVX2-only CPU emulates bf16 (~7x slower than float32 here), so "auto" means float32 there."""
    import torch

    from hetseg.engine.train import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native, expect in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda n=native: n)
        assert resolve_precision("auto") == expect
    assert resolve_precision("bf16-mixed") == "bf16-mixed" and resolve_precision("32-true") == "32-true"
    from hetseg.config import Config

    assert Config().cls.precision == "auto"


def test_stage_sessions_survive_a_checkpoint_and_older_checkpoints_say_unknown(monkeypatch):
    """A stage records each session's first step, precision and device in its checkpoint, so a stage
    resumed on another machine (another `precision: auto`) says so; a checkpoint written before
    sessions were recorded gives one session of unknown precision and device, not this machine's."""
    import torch
    from torch import nn

    from hetseg.engine import train
    from hetseg.engine.stage import Stage

    stage = Stage(nn.Conv2d(3, 2, 1), Config().seg)
    stage.sessions = [{"from_step": 0, "precision": "bf16-mixed", "device": "X (avx2, avx512f, avx512_bf16)"}]
    ckpt: dict = {}
    stage.on_save_checkpoint(ckpt)
    resumed = Stage(nn.Conv2d(3, 2, 1), Config().seg)
    resumed.on_load_checkpoint(ckpt)
    assert resumed.sessions == stage.sessions and resumed.sessions is not stage.sessions
    old = Stage(nn.Conv2d(3, 2, 1), Config().seg)
    old.on_load_checkpoint({"hetseg_wall_s": 3.0})
    assert old.sessions == [{"from_step": 0, "precision": None, "device": None}] and old.wall_before == 3.0
    # The device in a CPU's words: model name and the vector units that decide `precision: auto`.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(train, "cpu_info", lambda: ("AMD EPYC", ["avx2"]))
    assert train.device_label() == "AMD EPYC (avx2)" and train.cpu_label("Y", []) == "Y (no AVX2)"


def test_a_batch_larger_than_the_training_set_is_refused_in_one_line(tiny_scenes, tmp_path, capsys):
    """It used to run 0 steps and then blame a last.ckpt that did not exist ("rerun to resume")."""
    from hetseg.data.records import read_split, write_split

    strong = read_split(tiny_scenes / "splits" / "strong_5.txt", tiny_scenes)
    write_split(tiny_scenes / "splits" / "three.txt", strong.records[:3])
    run = tmp_path / "run"
    assert main(["train", "--method", "deconvnet", "--run-dir", str(run), "--no-progress", f"data.root={tiny_scenes}",
                 "data.strong_split=splits/three.txt", "deconv.steps=2", "deconv.batch_size=16",
                 "crops.crops_per_subset=1", "crops.proposals=none"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hetseg: error: stage 'deconv': ") and "fewer than its batch_size 16" in err
    assert not (run / "deconv" / "checkpoints").exists() and not run.exists()  # refused: no run dir left behind
    run.mkdir()  # a folder that was there before a refused run stays, with what was in it
    assert main(["train", "--method", "deconvnet", "--run-dir", str(run), "--no-progress", f"data.root={tiny_scenes}",
                 "data.strong_split=splits/three.txt", "deconv.steps=2", "deconv.batch_size=16",
                 "crops.crops_per_subset=1", "crops.proposals=none"]) == 2
    capsys.readouterr()
    assert run.is_dir()


@pytest.mark.parametrize("batch, fix", [(8, "cls.batch_size=4 cls.accumulate=2 keep the effective batch 8 (in another "
                                               "run directory: this one holds its recipe), or a GPU with more memory"),
                                          (1, "a GPU with more memory (a batch of one does not fit)")])
def test_a_gpu_out_of_memory_is_one_line_with_the_fix_that_keeps_the_recipe(tiny_scenes, tmp_path, capsys,
                                                                             monkeypatch, batch, fix):
    """A paper-scale batch on a smaller card was a traceback through Lightning's and torch's frames."""
    import torch

    from hetseg.methods.decouplednet.stages import ClsStage

    def no_memory(self, batch, batch_idx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(ClsStage, "training_step", no_memory)
    assert main(["train", "--run-dir", str(tmp_path / "run"), "--stage", "cls", "--no-progress",
                 f"data.root={tiny_scenes}", "cls.steps=2", f"cls.batch_size={batch}"]) == 2
    err = capsys.readouterr().err
    assert err == f"hetseg: error: stage 'cls': out of GPU memory at batch_size {batch}; fix: {fix}\n", err


@pytest.mark.parametrize("steps, every, at", [(6, 2, 2), (3, 100, 3)])
def test_a_diverged_stage_stops_at_its_next_save_without_writing_the_nan_weights(tiny_scenes, tmp_path, capsys,
                                                                                  steps, every, at):
    """A stage whose weights went NaN trained to its last step and wrote a model that eval refused; it now stops at
    the first checkpoint save after it (at step 2 of 2-step saves), or at the save that ends the stage (step 3)."""
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--stage", "cls", "--no-progress", f"data.root={tiny_scenes}",
                 f"cls.steps={steps}", "cls.batch_size=4", f"cls.checkpoint_every={every}", "cls.lr=1e+30"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hetseg: error: stage 'cls': the weights hold NaN or inf at step "
                                                   f"{at} (first in "), err
    # the first stage: no model yet for --init-from to start from
    assert err.endswith("training diverged, and no checkpoint was written with them; fix: a lower cls.lr (it is "
                        "1e+30), trained into another run directory\n"), err
    assert not (run / "model.safetensors").exists() and not (run / "cls" / "done.json").exists()
    assert not list(run.glob("cls/checkpoints/*.ckpt"))


def test_weights_gone_nan_after_the_last_periodic_save_are_caught_before_the_model_is_written(tiny_scenes, tmp_path,
                                                                                              capsys, monkeypatch):
    """Lightning makes its closing save only when the session saved nothing before it, so a stage of 3 steps saved
    every 2 whose weights go NaN in step 3 was written as the run's model, exit 0."""
    import torch

    from hetseg.methods.decouplednet.stages import ClsStage

    step = ClsStage.training_step

    def poisoned_in_step_3(self, batch, batch_idx):
        if self.trainer.global_step == 2:
            with torch.no_grad():
                next(self.net.parameters()).fill_(float("nan"))
        return step(self, batch, batch_idx)

    monkeypatch.setattr(ClsStage, "training_step", poisoned_in_step_3)
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--stage", "cls", "--no-progress", f"data.root={tiny_scenes}",
                 "cls.steps=3", "cls.batch_size=4", "cls.checkpoint_every=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights hold NaN or inf at step 3 (first in " in err, err
    assert not (run / "model.safetensors").exists() and not (run / "cls" / "done.json").exists()
    from hetseg.engine.resume import checkpoint_step

    assert checkpoint_step(run / "cls" / "checkpoints" / "last.ckpt") == 2  # the finite weights stay


def test_a_stage_is_named_by_its_config_section_in_error_lines():
    """Fixes name the section's keys: DIS's stages live under dis.*, not under their stage names."""
    from hetseg.config import section_of

    cfg = Config()
    assert section_of(cfg, cfg.cls) == "cls" and section_of(cfg, cfg.dis.labelmap) == "dis.labelmap"
    assert section_of(cfg, cfg.transfer.att) == "transfer.att" and section_of(cfg, Config().cls) is None


def test_lightnings_stop_is_kept_for_the_stopped_line_and_other_exits_are_not():
    """stops_kept swallows Lightning's own stops (SIGTERMException; the SystemExit(1) its KeyboardInterrupt handler
    raises) and, after a SIGTERM, a dead DataLoader worker (the signal reached the whole process group); any other
    exit or error goes on, a diverged stage's line after a SIGTERM included."""
    from types import SimpleNamespace

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from hetseg.engine.stops import WorkerGone, stops_kept

    after_sigterm, plain = SimpleNamespace(received_sigterm=True), SimpleNamespace(received_sigterm=False)
    with stops_kept(plain):
        raise SIGTERMException()
    with stops_kept(plain):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise SystemExit(1)  # noqa: B904 - Lightning's own shape
    with stops_kept(after_sigterm):
        raise WorkerGone("stage 'cls': DataLoader worker (pid(s) 7) exited unexpectedly")
    with pytest.raises(SystemExit), stops_kept(after_sigterm):
        raise SystemExit(0)  # a callback's own exit is not Lightning's stop
    with pytest.raises(WorkerGone), stops_kept(plain):
        raise WorkerGone("stage 'cls': DataLoader worker (pid(s) 7) exited unexpectedly")
    with pytest.raises(HetsegError, match="NaN"), stops_kept(after_sigterm):
        raise HetsegError("stage 'cls': the weights hold NaN or inf at step 5")


def test_val_every_counts_optimizer_steps_under_accumulation(tiny_scenes, tmp_path):
    """Lightning's val_check_interval counts batches: with accumulate 2, cls.val_every=2 validated every step."""
    import csv

    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--stage", "cls", "--no-progress", f"data.root={tiny_scenes}",
                 "cls.steps=4", "cls.batch_size=4", "cls.accumulate=2", "cls.val_every=2"]) == 0
    rows = list(csv.DictReader((run / "cls" / "metrics.csv").open()))
    # after steps 2 and 4 (Lightning logs a validation inside fit one step lower), then the closing one; every
    # step, before the fix: [0, 1, 2, 3, 4]
    assert [int(r["step"]) for r in rows if r.get("val/mAP")] == [1, 3, 4]


def test_a_dataloader_worker_killed_is_one_line_naming_shared_memory_and_workers(tiny_scenes, tmp_path, capsys,
                                                                                 monkeypatch):
    """A worker killed by a signal (a bus error when a container's /dev/shm is full, the kernel's OOM killer) was a
    traceback through Lightning's frames. Here a real worker process kills itself with SIGBUS."""
    import os
    import signal

    import torch

    from hetseg.data.datasets import ImageLabelDataset

    read = ImageLabelDataset.__getitem__

    def bus_error_in_a_worker(self, i):
        if torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGBUS)
        return read(self, i)

    monkeypatch.setattr(ImageLabelDataset, "__getitem__", bus_error_in_a_worker)
    args = ["train", "--run-dir", str(tmp_path / "run"), "--stage", "cls", "--no-progress", f"data.root={tiny_scenes}",
            "cls.steps=2", "cls.batch_size=4"]
    assert main([*args, "data.workers=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hetseg: error: stage 'cls': DataLoader worker (pid"), err
    # torch says "is killed by signal: Bus error" or, where its SIGCHLD handler is not the one to see it, "exited
    # unexpectedly"; the worker's own "ERROR: Unexpected bus error" line is torch's, from the worker's process
    assert re.search(r"\(pid\(?s?\)? \d+\) (is killed by signal: Bus error|exited unexpectedly) \(data.workers 1\); fix: "
                     "a worker is most often killed for memory", err), err
    assert "--shm-size" in err and "data.workers lower" in err and "(data.workers may differ)\n" in err, err
    assert main([*args, "data.workers=0"]) == 0  # the fix it names: batches loaded in this process
    assert (tmp_path / "run" / "cls" / "done.json").is_file()


def test_too_many_open_files_between_workers_is_one_line_naming_the_limit(tiny_scenes, tmp_path, capsys, monkeypatch):
    """torch's DataLoader raises this RuntimeError when this process runs out of file descriptors for its workers'
    batches (injected with torch's text: the limit is hard to reach reliably in a test)."""
    from hetseg.methods.decouplednet.stages import ClsStage

    def no_descriptors(self, batch, batch_idx):
        raise RuntimeError("Too many open files. Communication with the workers is no longer possible. Please increase "
                           "the limit using `ulimit -n` in the shell or change the sharing strategy")

    monkeypatch.setattr(ClsStage, "training_step", no_descriptors)
    args = ["train", "--run-dir", str(tmp_path / "run"), "--stage", "cls", "--no-progress", f"data.root={tiny_scenes}",
            "cls.steps=2", "cls.batch_size=4"]
    assert main([*args, "data.workers=1"]) == 2
    assert capsys.readouterr().err == (
        "hetseg: error: stage 'cls': too many open files between this process and its DataLoader workers (data.workers 1); "
        "fix: raise "
        "the open-file limit (ulimit -n 65536) or set data.workers lower; the same command resumes from the last "
        "checkpoint (data.workers may differ)\n")
    with pytest.raises(RuntimeError, match="Too many open files"):  # without workers the message is not about them
        main([*args, "data.workers=0"])


def test_a_checkpoint_the_disk_cannot_take_is_one_line_naming_the_stage(tiny_scenes, tmp_path):
    """A full disk when Lightning writes last.ckpt raised an OSError without a file name: a traceback, exit 1.
    Simulated with a 1 MiB file-size limit (EFBIG, as ENOSPC, from the same write), in a child process."""
    import resource
    import signal
    import subprocess
    import sys

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of the process being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "hetseg", "train", "--run-dir", str(run), "--stage", "cls", "--no-progress",
                          f"data.root={tiny_scenes}", "cls.steps=2", "cls.batch_size=4", "cls.checkpoint_every=1"],
                         preexec_fn=limit, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stderr == (f"hetseg: error: {run / 'cls'}: File too large; fix: free disk space, "
                                                  "or raise the disk quota or file-size limit (ulimit -f), and rerun\n"), \
        out.stderr[-3000:]
    assert not list((run / "cls" / "checkpoints").iterdir())  # no half-written checkpoint left to resume from


def test_eval_refuses_a_split_where_some_images_have_no_mask(tiny_scenes, tmp_path):
    """A val list whose mask went missing used to be scored on the other images without a word (7 of 8)."""
    from hetseg.data.records import read_split
    from hetseg.engine.evaluate import evaluate_split
    from hetseg.models import create_model

    val = read_split(tiny_scenes / "splits" / "val.txt")
    a, b = val.records[:2]
    mixed = tiny_scenes / "splits" / "mixed_masks.txt"
    mixed.write_text(f"{a.image} {a.mask}\n{b.image}\n")
    try:
        split = read_split(mixed)  # b's labels come from labels.json
    finally:
        mixed.unlink()
    net = create_model("decouplednet", num_classes=10, scale="cpu").eval()
    with pytest.raises(HetsegError, match=rf"mixed_masks.txt: 1 of 2 images have no mask \(first: {b.image}\)"):
        evaluate_split(net, split, 11)
    evaluate_split(net, read_split(tiny_scenes / "splits" / "val.txt"), 11)  # all masked: scored


def test_eval_refuses_options_and_data_sets_that_do_not_fit_the_run(tiny_scenes, tmp_path, capsys):
    """--gt-labels / --threshold on a masks-only run changed nothing without a word, and an 11-class run was scored
    on another root's masks whatever that root's classes were."""
    import shutil

    from hetseg.engine.checkpoint import save_model
    from hetseg.metrics import read_classes_file
    from hetseg.models import create_model

    cfg = Config(run_dir=str(tmp_path / "run")).override([f"data.root={tiny_scenes}", "model.name=deconvnet"])
    names = read_classes_file(tiny_scenes / "classes.txt")
    save_model(tmp_path / "run", create_model("deconvnet", num_classes=10, scale="cpu").eval(), cfg, names, {})
    for flag in (["--gt-labels"], ["--threshold", "0.3"]):
        assert main(["eval", "--checkpoint", str(tmp_path / "run"), *flag]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"hetseg: error: {' '.join(flag)}: a deconvnet run identifies no image labels" in err
    photo = tmp_path / "a.jpg"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(photo)
    assert main(["predict", "--checkpoint", str(tmp_path / "run"), "--input", str(photo), "--output",
                 str(tmp_path / "out"), "--threshold", "0.3"]) == 2
    assert "--threshold 0.3: a deconvnet run identifies no image labels" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # without the option both run, and record no threshold (they said 0.5, which changed nothing)
    assert main(["predict", "--checkpoint", str(tmp_path / "run"), "--input", str(photo), "--output",
                 str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "scores.json").read_text())["threshold"] is None
    assert main(["eval", "--checkpoint", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "eval_val.json").read_text())["threshold"] is None
    assert "threshold none (masks only)" in (tmp_path / "run" / "eval_val.md").read_text()
    capsys.readouterr()
    for f in (tmp_path / "run").glob("eval_*"):
        f.unlink()  # the refusal below must leave no eval file of its own
    other = tmp_path / "other"
    shutil.copytree(tiny_scenes, other)
    (other / "classes.txt").write_text("background\ncat\ndog\nbird\n")
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--split", str(other / "splits" / "val.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hetseg: error: {other / 'classes.txt'}: 4 classes (background, cat")
    assert not list((tmp_path / "run").glob("eval_*"))


def test_predict_images_uses_the_models_threshold_and_refuses_what_it_cannot_read():
    """It passed 0.5 to every model (TransferNet's own default, and its runs', is 0.6), cast float images to
    near-black without a word, and reported a background label in internal indices."""
    import torch

    from hetseg.data.transforms import prepare
    from hetseg.engine.evaluate import predict_images
    from hetseg.models import create_model

    torch.manual_seed(0)
    net = create_model("transfernet", num_classes=10, scale="cpu").eval()
    img = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    x = prepare(img, net.input_size)[0][None]
    with torch.no_grad():
        net.classifier.score.bias[0] += 1.51  # class 1 scores 0.55 here: identified at 0.5, not at 0.6
        scores = net.predict(x).class_scores[0]
    assert 0.5 < scores[0] <= 0.6
    for thr in (0.6, 0.5):  # the model's default, then a chosen one
        want = [k + 1 for k in range(10) if scores[k] > thr] or [int(scores.argmax()) + 1]
        got = predict_images(net, [img])[0] if thr == 0.6 else predict_images(net, [img], threshold=thr)[0]
        assert got.identified == want, (thr, scores)
    for bad, where in ((img / 255.0, "images[0]: expected an (H, W, 3) uint8 RGB array, got a float64"),
                       (img[..., 0], "images[0]"), (img, "images: expected a non-empty list")):
        with pytest.raises(HetsegError, match=re.escape(where)):
            predict_images(net, bad if bad is img else [bad])
    with pytest.raises(HetsegError, match=re.escape("labels[0] = [0]: mask indices must be in 1..10")):
        predict_images(net, [img], labels=[[0]])


def test_the_one_recipe_rule_ignores_settings_the_method_never_reads(tmp_path):
    """The transfer family's configs lost the other methods' budgets (seg.* for TransferNet); a run started with
    the old file and resumed with the new one was refused on keys it never read."""
    from hetseg.methods import get_method
    from hetseg.methods.base import refuse_other_recipe

    run = tmp_path / "run"
    (run / "deconv").mkdir(parents=True)
    (run / "deconv" / "done.json").write_text("{}")
    cfg = Config(run_dir=str(run)).override(["model.name=deconvnet"])
    cfg.save(run / "config.json")
    method = get_method("deconvnet")
    refuse_other_recipe(run, cfg.override(["seg.steps=5", "cls.lr=0.1", "dis.t_train=1"]), ("deconv",), method)
    with pytest.raises(HetsegError, match=r"differs in deconv.steps"):
        refuse_other_recipe(run, cfg.override(["seg.steps=5", "deconv.steps=7"]), ("deconv",), method)


def test_recorded_command_names_the_script_that_drove_the_library(monkeypatch):
    """model.json's ``command`` must be runnable as written: a script's arguments are not hetseg's
    (the shipped voc-lite0 model recorded ``hetseg --runs ...`` before this)."""
    from hetseg.engine.context import command_line

    monkeypatch.setattr("sys.argv", ["scripts/ship_voc_lite0.py", "--runs", "runs/a b"])
    assert command_line() == "python scripts/ship_voc_lite0.py --runs 'runs/a b'"
    monkeypatch.setattr("sys.argv", ["/x/hetseg/__main__.py", "train", "cls.steps=3"])
    assert command_line() == "hetseg train cls.steps=3"
    monkeypatch.setattr("sys.argv", ["/venv/bin/hetseg", "eval"])
    assert command_line() == "hetseg eval"


@pytest.mark.parametrize("overrides, says", [
    (["model.encoder=lite0"], "model.encoder=lite0: unknown encoder"),  # was blamed on model.name
    (["model.input_size=500"], "model.input_size=500: read only with a non-VGG encoder"),  # was ignored silently
    (["model.imagenet=false"], "model.imagenet=False: read only with a non-VGG encoder"),
    (["model.encoder=efficientnet_lite0_tiny", "model.imagenet=false", "model.input_size=1"], "input_size 1 must be"),
    (["--method", "deconvnet", "model.encoder=efficientnet_lite0_tiny", "model.imagenet=false", "model.input_size=16"],
     "input_size 16 must be from 32"),
    (["--method", "transfernet", "model.input_size=320"], "drop it (method 'transfernet' runs on"),
    (["model.encoder=efficientnet_lite0_tiny", "model.imagenet=false", "model.scale=paper"], "model.scale=paper"),
    (["model.encoder=efficientnet_lite0_tiny", "model.imagenet=false", "model.input_size=64"], "from 65 to 2048"),
    (["model.encoder=efficientnet_lite0_tiny", "model.imagenet=false", "model.input_size=4096"], "to 2048"),
    (["model.encoder=efficientnet_lite0_tiny", "model.imagenet=false", "model.bridge_kernel=50"], "bridge_kernel 50"),
])
def test_an_encoder_setting_the_model_cannot_take_is_one_line_before_training(tiny_scenes, tmp_path, capsys,
                                                                               overrides, says):
    """Input sizes and kernels the encoder cannot take were a conv traceback (4096: an out-of-memory kill);
    sizes given to the VGG encoder, which takes its sizes from model.scale, were dropped without a word."""
    run = tmp_path / "run"
    budget = {"deconvnet": ["deconv.steps=1"], "transfernet": ["transfer.att.steps=1"]}.get(
        overrides[1] if overrides[0] == "--method" else "", ["cls.steps=1", "seg.steps=1"])
    assert main(["train", "--run-dir", str(run), "--no-progress", f"data.root={tiny_scenes}", *budget, *overrides]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hetseg: error: ") and says in err and "; fix: " in err, err
    assert not run.exists()


def test_a_missing_split_of_the_config_names_its_setting(tiny_scenes, tmp_path, capsys):
    """It said "split file not found; fix: check the path or run 'hetseg data splits'" without the key to set
    (TransferNet users set transfer.val_split and met data.val_split this way)."""
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--no-progress", f"data.root={tiny_scenes}", "cls.steps=1",
                 "seg.steps=1", "data.val_split=splits/mine.txt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hetseg: error: data.val_split=splits/mine.txt: no such split file")
    assert "fix: set data.val_split to a split file of" in err and not run.exists()


def _strong_case(root: Path, tmp_path: Path, case: str) -> tuple[Path, str]:
    """A copy of ``root`` with the first strong_5 image's mask or labels broken; (new root, the file to name)."""
    import json
    import shutil

    from PIL import Image

    new = tmp_path / "data"
    shutil.copytree(root, new)
    img, mask = (new / "splits" / "strong_5.txt").read_text().splitlines()[0].split()
    if case == "rgb":
        Image.open(new / mask).convert("RGB").save(new / mask)
    elif case == "labels":
        labels = json.loads((new / "labels.json").read_text())
        key = Path(img).stem
        labels[key] = sorted(set(labels[key]) ^ {1, 2})  # a class the mask does not hold, or one missing
        (new / "labels.json").write_text(json.dumps(labels))
    return new, mask


@pytest.mark.parametrize("case,says", [("missing", "no such split file"), ("rgb", "mask is RGB"),
                                       ("labels", "holds classes")])
def test_a_bad_strong_split_is_refused_before_the_classifier_trains(tiny_scenes, tmp_path, capsys, case, says):
    """Review s16 (findings 2-4): a missing strong split, a colour mask or image labels that contradict the mask
    surfaced only when stage seg began (after the classifier's whole budget, and the corrected command was then
    refused as another recipe), when a crop first sampled the mask, or never (the decoder learnt wrong targets).
    Now each is one line before any stage, and no run dir is left."""
    root, named = (tiny_scenes, "splits/nonexist.txt") if case == "missing" else _strong_case(tiny_scenes, tmp_path, case)
    split = "splits/nonexist.txt" if case == "missing" else "splits/strong_5.txt"
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--no-progress", f"data.root={root}", f"data.strong_split={split}",
                 "cls.steps=1", "cls.batch_size=4", "seg.steps=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hetseg: error: ") and says in err and named in err, err
    assert not run.exists()
    if case == "labels":  # the same data is fine for a method that reads no mask: the classifier alone
        assert main(["train", "--run-dir", str(run), "--no-progress", f"data.root={root}", f"data.strong_split={split}",
                     "cls.steps=1", "cls.batch_size=4", "--stage", "cls"]) == 0


def test_an_accumulate_that_does_not_divide_an_epoch_is_said(tiny_scenes, tmp_path, capsys):
    """Review s16 (finding 9): exact resume needs batches per epoch to be a multiple of accumulate
    (docs/GUARANTEES.md, Resume) and each epoch's last step otherwise averages fewer batches; nothing said so."""
    n = len((tiny_scenes / "splits" / "train_weak.txt").read_text().splitlines()) // 8  # batches per epoch
    divides, not_divides = 1, next(a for a in range(2, n + 2) if n % a)
    for acc, said in ((divides, False), (not_divides, True)):
        run = tmp_path / f"acc{acc}"
        assert main(["train", "--run-dir", str(run), "--no-progress", f"data.root={tiny_scenes}", "--stage", "cls",
                     "cls.steps=1", "cls.batch_size=8", f"cls.accumulate={acc}"]) == 0
        err = capsys.readouterr().err
        assert (f"hetseg: note: stage 'cls': {n} batches per epoch is not a multiple of accumulate {acc}" in err) is said


def test_a_later_stage_on_an_untrained_earlier_one_is_said_when_training(tiny_scenes, tmp_path, capsys):
    """Review s16 (finding 11): ``train --stage seg`` into a new run dir trained the decoder on a random
    classifier; eval and predict said so only afterwards. The training command now says it first."""
    base = ["--no-progress", f"data.root={tiny_scenes}", "cls.steps=1", "cls.batch_size=8", "seg.steps=1",
            "seg.batch_size=4", "crops.crops_per_subset=2", "crops.proposals=none"]
    cls_run = tmp_path / "cls"
    assert main(["train", "--run-dir", str(cls_run), "--stage", "cls", *base]) == 0
    assert "hetseg: note" not in capsys.readouterr().err
    assert main(["train", "--run-dir", str(tmp_path / "bare"), "--stage", "seg", *base]) == 0
    err = capsys.readouterr().err
    assert f"hetseg: note: {tmp_path / 'bare'}: stage cls has no trained weights here" in err and err.count("\n") == 1
    assert main(["train", "--run-dir", str(tmp_path / "from"), "--stage", "seg", "--init-from", str(cls_run), *base]) == 0
    assert "hetseg: note" not in capsys.readouterr().err
    assert main(["train", "--run-dir", str(tmp_path / "from"), "--stage", "seg", *base]) == 0  # its rerun: recorded
    assert "hetseg: note" not in capsys.readouterr().err


def test_selective_search_proposals_without_opencv_are_refused_before_training(tiny_scenes, tmp_path, capsys,
                                                                                monkeypatch):
    """Without opencv-contrib, crops.proposals=selective-search trained on random boxes only and recorded
    "selective-search" in model.json; now it is one line before any work (auto still falls back, by design)."""
    import hetseg.data.crops as crops

    monkeypatch.setattr(crops, "_selective_search", lambda: None)
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--no-progress", f"data.root={tiny_scenes}", "cls.steps=1",
                 "seg.steps=1", "crops.proposals=selective-search"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hetseg: error: crops.proposals=selective-search: needs opencv")
    assert "fix: pip install" in err and not run.exists()
    # a stage that crops nothing (the classifier) trains; the crop stage after it is refused
    args = ["train", "--run-dir", str(run), "--no-progress", f"data.root={tiny_scenes}", "cls.steps=1", "cls.batch_size=4",
            "seg.steps=1", "crops.proposals=selective-search"]
    assert main([*args, "--stage", "cls"]) == 0 and (run / "cls" / "done.json").is_file()
    capsys.readouterr()
    assert main(args) == 2 and "needs opencv" in capsys.readouterr().err and not (run / "seg").exists()


def test_a_paper_scale_run_is_told_when_auto_proposals_fall_back_to_random_boxes():
    """crops.proposals=auto without opencv-contrib crops random boxes (recorded in model.json); a paper-scale
    run, whose recipe crops around proposals, is told so when it starts. CPU scale is not: its benches and
    the demo crop random boxes on purpose."""
    from hetseg.config import Config
    from hetseg.methods.base import proposals_note

    paper = Config().override(["model.scale=paper"])
    assert "random boxes only" in proposals_note(paper, available=False)
    assert "fix: pip install" in proposals_note(paper, available=False)
    assert proposals_note(paper, available=True) is None
    assert proposals_note(paper.override(["crops.proposals=none"]), available=False) is None
    assert proposals_note(Config(), available=False) is None  # CPU scale


def test_hetseg_train_at_paper_scale_prints_the_auto_proposals_note_once(tiny_scenes, tmp_path, capsys, monkeypatch):
    """The note above as a user meets it (review s18): `hetseg train` prints it once on stderr when a crop stage
    is to train, and not for a classifier-only run. The paper-scale network is swapped for the CPU-scale one
    and the stages' training for a no-op, so the test reads only what train says before it trains."""
    import hetseg.data.crops
    from hetseg.methods.base import Method

    monkeypatch.setattr(hetseg.data.crops, "proposals_available", lambda: False)
    real_build = Method.build
    monkeypatch.setattr(Method, "build", lambda self, cfg: real_build(self, cfg.override(["model.scale=cpu", "model.imagenet=true"])))
    monkeypatch.setattr(Method, "_train_stages", lambda self, *a, **k: {})
    args = ["train", "--no-progress", f"data.root={tiny_scenes}", "model.scale=paper", "model.imagenet=false",
            "crops.proposals=auto"]
    for stage, notes in (("seg", 1), ("cls", 0)):
        capsys.readouterr()
        assert main([*args, "--run-dir", str(tmp_path / stage), "--stage", stage]) == 0
        err = capsys.readouterr().err
        said = [line for line in err.splitlines() if line.startswith("hetseg: note: crops.proposals=auto")]
        assert len(said) == notes and ("random boxes only" in said[0] if said else True), err


def test_paper_scale_without_imagenet_weights_is_refused_unless_asked(tmp_path):
    """Review s16 (paper scale, finding 1): the README's own-data command trained paper-scale VGG-16 from random
    weights without a word when model.vgg_weights was not given; the papers start from ImageNet. Now one line,
    and model.imagenet=false (read at paper scale only) says "from random weights" on purpose."""
    from hetseg.engine.context import init_weights
    from hetseg.errors import HetsegError
    from hetseg.methods import get_method
    from hetseg.methods.model_keys import check_encoder_keys
    from hetseg.models import create_model

    for name, key in (("decouplednet", "model.vgg_weights"), ("dis", "model.resnet_weights")):
        net = create_model(name, num_classes=3, scale="cpu")  # the rule reads the config's scale, not the net's
        cfg = Config(run_dir=str(tmp_path / name)).override([f"model.name={name}", "model.scale=paper"])
        with pytest.raises(HetsegError, match=f"^{key}: not given, so this paper-scale run would start"):
            init_weights(net, cfg, None)
        off = cfg.override(["model.imagenet=false"])
        check_encoder_keys(off, get_method(name))  # not refused as a setting vgg16 ignores, at paper scale
        assert init_weights(net, off, None) == "seeded init"
        assert init_weights(net, Config(run_dir=str(tmp_path / name)).override([f"model.name={name}"]), None) == "seeded init"
    with pytest.raises(HetsegError, match="model.imagenet=False: read only with a non-VGG encoder"):
        check_encoder_keys(Config().override(["model.imagenet=false"]), get_method("decouplednet"))  # CPU scale


def test_the_caffe_label_loss_is_summed_over_classes_and_the_paper_configs_use_it():
    """Caffe's SigmoidCrossEntropyLoss (the original classifiers') sums over classes and averages over images;
    torch's mean also averages over the K classes, so SGD at a Caffe learning rate took K-times-smaller
    steps (a read against the paper, 2026-12-07). ``cls.label_loss=caffe`` gives Caffe's loss; the CPU
    recipes keep "mean" (Adam barely sees the factor)."""
    import torch
    import torch.nn.functional as F

    from hetseg.methods.decouplednet.stages import ClsStage, label_bce
    from hetseg.models import create_model

    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(4, 20, generator=g), (torch.rand(4, 20, generator=g) > 0.7).float()
    per = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    assert torch.allclose(label_bce(logits, y, "caffe"), per.sum(1).mean())
    assert torch.allclose(label_bce(logits, y), per.mean())
    # the stage reads its section's setting
    net = create_model("decouplednet", num_classes=5, scale="cpu")
    x, t = torch.randn(2, 3, 96, 96, generator=g), torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 0]])
    losses = {}
    for how in ("mean", "caffe"):
        stage = ClsStage(net, Config().override([f"cls.label_loss={how}"]).cls, 5)
        stage.log = lambda *a, **k: None
        losses[how] = stage.training_step((x, t), 0).item()
    assert losses["caffe"] == pytest.approx(5 * losses["mean"], rel=1e-5)  # K = 5 object classes
    assert "on_validation_epoch_end" in vars(ClsStage)  # val/mAP is logged there (once lost to a misplaced edit)
    for name in ("decouplednet_voc_paper", "transfernet_coco_paper", "baselinenet_coco_paper",
                 "decouplednet_transfer_coco_paper"):
        assert Config.load(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml").cls.label_loss == "caffe"
    assert Config().cls.label_loss == "mean"


def test_a_resume_after_checkpoint_every_changed_says_no_lightning_warning(tmp_path):
    """Lightning warns that the checkpoint's callbacks are missing when the saved ModelCheckpoint's key (its
    every_n_train_steps) differs; hetseg's keeps no best-k state, so the line was noise (a helper's probe).
    Any other callback it names is still said. The message is built as lightning/pytorch/trainer/call.py does."""
    import warnings

    from lightning.pytorch.callbacks import ModelCheckpoint

    from hetseg.engine.console import quiet_lightning

    key = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=7, save_last=True, save_top_k=0).state_key
    said = ("Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided during "
            "`Trainer` instantiation. Please add the following callbacks: {}.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_lightning()
        warnings.warn(said.format([key]), UserWarning)
        warnings.warn(said.format([key, "EarlyStopping{'monitor': 'val/miou'}"]), UserWarning)
    assert [str(w.message) for w in caught] == [said.format([key, "EarlyStopping{'monitor': 'val/miou'}"])]

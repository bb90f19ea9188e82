"""The run-directory and input guarantees of docs/GUARANTEES.md, each tested."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_scenes
from PIL import Image

from hetseg.cli import main
from hetseg.config import Config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return make_scenes(tmp_path_factory, "g_scenes", seed=4, num_train=60, num_val=8)


TINY = ["cls.steps=3", "cls.batch_size=4", "cls.checkpoint_every=1", "seg.steps=3", "seg.batch_size=4",
        "seg.checkpoint_every=1", "crops.crops_per_subset=2", "crops.proposals=none"]


def _cfg(root: Path, run: Path) -> Config:
    return Config(run_dir=str(run)).override([f"data.root={root}", *TINY])


@pytest.fixture(scope="module")
def trained(scenes, tmp_path_factory) -> tuple[Config, Path, dict]:
    from safetensors.torch import load_file

    from hetseg.methods import train

    run = tmp_path_factory.mktemp("g_run") / "run"
    cfg = _cfg(scenes, run)
    train(cfg, ("cls",), progress=False)
    after_cls = load_file(str(run / "model.safetensors"))
    train(cfg, progress=False)
    return cfg, run, after_cls


def test_frozen_classifier_is_unchanged_by_stage_seg(trained):
    """Parameters *and buffers* (BN running statistics, counters) of the frozen classifier."""
    from safetensors.torch import load_file

    _, run, after_cls = trained
    final = load_file(str(run / "model.safetensors"))
    cls_keys = [k for k in after_cls if k.startswith("classifier.")]
    assert cls_keys and all(torch.equal(after_cls[k], final[k]) for k in cls_keys)
    assert any(not torch.equal(after_cls[k], final[k]) for k in final if k.startswith("bridge."))


def test_a_run_dir_holds_one_recipe(trained, tmp_path, capsys):
    """Training into a run dir whose stages are done, with another config, would skip those stages
    under settings they never trained with while config.json claimed them: refused in one line,
    nothing written. The same config passes (the finished stages are skipped)."""
    import shutil

    _, src, _ = trained
    run = tmp_path / "run"
    shutil.copytree(src, run)  # the module's run stays untouched
    argv = ["train", "--run-dir", str(run), "--config", str(run / "config.json"), "--no-progress"]
    assert main(argv) == 0
    assert capsys.readouterr().out.count("already trained, skipped") == 2  # cls and seg, said so
    saved = {p.name: p.read_bytes() for p in (run / "config.json", run / "model.safetensors", run / "model.json")}
    assert main([*argv, "cls.steps=5", "seg.lr=0.02"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hetseg: error: {run / 'config.json'}: this run dir holds one recipe and has trained stage 'cls' ")
    assert "differs in cls.steps, seg.lr" in err[0] and "fix: " in err[0]
    assert {p.name: p.read_bytes() for p in (run / "config.json", run / "model.safetensors", run / "model.json")} == saved
    # Killed between the model file and the markers: model.json alone records the stages, and still counts.
    for marker in [*run.glob("*/done.json"), *run.glob("*/checkpoints/last.ckpt")]:
        marker.unlink()
    assert main([*argv, "cls.steps=5"]) == 2
    assert "differs in cls.steps" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["deconvnet", "dis"])
def test_another_method_into_a_trained_run_dir_is_refused(trained, tmp_path, capsys, method):
    """Review s16 (finding 6): the recipe check looked at the requested method's stages only, so a DecoupledNet
    run (cls, seg) was invisible to DeconvNet (deconv) and its weights became DeconvNet's starting point
    (refused only as "weights do not fit" when their shapes differed). Now one line naming what the dir holds."""
    import shutil

    _, src, _ = trained
    run = tmp_path / "run"
    shutil.copytree(src, run)
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    assert main(["train", "--method", method, "--run-dir", str(run), "--no-progress",
                 f"data.root={trained[0].data.root}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hetseg: error: {run}: holds a decouplednet run") and "fix: " in err
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before


def test_trained_state_without_its_config_is_refused(trained, tmp_path, capsys):
    """A records-only runs dir whose tracked files (config.json, model.json, done markers) were removed
    with git keeps its ignored weights and checkpoints. Training into it used to resume those
    checkpoints and start from those weights under the new config (found when the DIS bench was re-run
    on a new budget); now it is one line, and nothing is written."""
    import shutil

    _, src, _ = trained
    run = tmp_path / "run"
    shutil.copytree(src, run)
    for f in [run / "config.json", run / "model.json", *run.glob("*/done.json")]:
        f.unlink()
    left = sorted(p for p in run.rglob("*") if p.is_file())
    weights = (run / "model.safetensors").read_bytes()
    tiny = [o for o in TINY if not o.startswith("cls.steps=")]
    argv = ["train", "--run-dir", str(run), "--no-progress", f"data.root={trained[0].data.root}", *tiny, "cls.steps=5"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hetseg: error: {run / 'config.json'}: missing, but ")
    assert "fix: " in err[0] and not (run / "config.json").exists()
    assert sorted(p for p in run.rglob("*") if p.is_file()) == left and (run / "model.safetensors").read_bytes() == weights
    (run / "model.safetensors").unlink()  # the checkpoints alone are trained state too
    assert main(argv) == 2 and "last.ckpt is there" in capsys.readouterr().err
    shutil.rmtree(run)  # the fix: an empty run dir trains
    assert main([*argv[:-1], "cls.steps=3", "--stage", "cls"]) == 0


def test_a_refused_train_leaves_no_run_dir_and_keeps_an_old_config(trained, scenes, tmp_path, capsys):
    """config.json is written only once the model is built and its starting weights are read: a run refused
    for its --init-from used to leave a run dir holding nothing but the config of a run that never started.
    (A split that is missing is found later, when its stage loads it; that leaves the config.json.)"""
    bad = tmp_path / "weights.safetensors"
    bad.write_bytes(b"not safetensors")
    run = tmp_path / "run"
    argv = ["train", "--run-dir", str(run), "--no-progress", f"data.root={scenes}"]
    assert main([*argv, "--init-from", str(bad)]) == 2
    assert not run.exists()
    capsys.readouterr()
    # an existing run's config.json is not rewritten by a refused run either (here: data.workers, a key the
    # run-dir guard lets through because it changes speed only)
    import shutil

    _, src, _ = trained
    shutil.copytree(src, run)
    before = (run / "config.json").read_bytes()
    assert main(["train", "--run-dir", str(run), "--config", str(run / "config.json"), "--no-progress",
                 "--init-from", str(bad), "data.workers=1"]) == 2
    assert "hetseg: error: " in capsys.readouterr().err and (run / "config.json").read_bytes() == before


@pytest.mark.parametrize("split", ["val", "train_weak"])
def test_an_empty_image_is_refused_before_the_first_step_and_leaves_no_run_dir(scenes, tmp_path, capsys, split):
    """A 0-byte val image was found only by the validation at the end of stage cls (a weak one when a batch
    first drew it): the refused train left a run dir with a checkpoint behind. Headers are read first now.
    (The weak image is one the strong split does not hold: strong images' headers were read already.)"""
    import shutil

    root = tmp_path / "scenes"
    shutil.copytree(scenes, root)
    strong = (root / "splits" / "strong_5.txt").read_text()
    which = [Path(line.split()[0]).name for line in (root / "splits" / f"{split}.txt").read_text().splitlines()
             if line.split()[0] not in strong][-1]
    (root / "JPEGImages" / which).write_bytes(b"")
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--no-progress", f"data.root={root}", *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hetseg: error: {root / 'JPEGImages' / which}: cannot read image header")
    assert not run.exists()


def test_crafted_pickle_checkpoint_is_refused_and_never_executed(trained, tmp_path, capsys):
    cfg, run, _ = trained
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": Payload(), "global_step": 1}))
    run2 = tmp_path / "run2"
    argv = ["train", "--run-dir", str(run2), "--stage", "cls", "--resume", str(evil), "--no-progress",
            f"data.root={cfg.data.root}", "cls.steps=2", "cls.batch_size=4"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hetseg: error: {evil}: ") and "fix:" in err[0]
    assert not marker.exists()
    # the same file planted as a run's auto-resume checkpoint, in a run dir whose config.json matches (without
    # one, the checkpoint is refused before it is read: test_trained_state_without_its_config_is_refused)
    (run2 / "cls" / "checkpoints").mkdir(parents=True, exist_ok=True)
    Config(run_dir=str(run2)).override([a for a in argv if "=" in a]).save(run2 / "config.json")
    (run2 / "cls" / "checkpoints" / "last.ckpt").write_bytes(evil.read_bytes())
    planted = run2 / "cls" / "checkpoints" / "last.ckpt"
    assert main([a for a in argv if a not in ("--resume", str(evil))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hetseg: error: {planted}: ") and "fix:" in err[0], err
    assert not marker.exists()


def test_a_checkpoint_of_another_stage_is_refused(trained, tmp_path, capsys):
    """--resume with the seg stage's checkpoint on a run whose next stage is cls used to end in a
    traceback from the optimizer ("parameter group doesn't match"). Refused by the stage recorded in
    the checkpoint, and (older checkpoints) by its RUN/<stage>/checkpoints/ folder."""
    import shutil

    import torch

    cfg, run, _ = trained
    seg_ckpt = run / "seg" / "checkpoints" / "last.ckpt"
    assert torch.load(seg_ckpt, map_location="cpu", weights_only=True)["hetseg_stage"] == "seg"
    anonymous = tmp_path / "renamed.ckpt"  # the recorded stage alone must do
    shutil.copyfile(seg_ckpt, anonymous)
    for ckpt in (seg_ckpt, anonymous):
        argv = ["train", "--run-dir", str(tmp_path / "fresh"), "--config", str(run / "config.json"), "--no-progress",
                "--resume", str(ckpt)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{ckpt}: a checkpoint of stage 'seg', not of stage 'cls'" in err, err
    assert not (tmp_path / "fresh" / "cls" / "checkpoints").exists()


def test_a_checkpoint_that_does_not_fit_the_model_is_refused_and_leaves_no_run_dir(trained, tmp_path, capsys):
    """The cls checkpoint of an 11-class run resumed with data.num_classes=12 was a Lightning size-mismatch
    traceback that left the new run dir behind; weights given to --resume were told to be deleted."""
    cfg, run, _ = trained
    ckpt, fresh = run / "cls" / "checkpoints" / "last.ckpt", tmp_path / "fresh"
    names = "[" + ", ".join(f"c{i}" for i in range(12)) + "]"
    assert main(["train", "--run-dir", str(fresh), "--stage", "cls", "--no-progress", "--resume", str(ckpt),
                 f"data.root={cfg.data.root}", "data.num_classes=12", f"data.class_names={names}", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"hetseg: error: {ckpt}: does not fit this run's model (" in err, err
    assert not fresh.exists()
    weights = run / "model.safetensors"
    assert main(["train", "--run-dir", str(fresh), "--stage", "cls", "--no-progress", "--resume", str(weights),
                 f"data.root={cfg.data.root}", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a Lightning checkpoint" in err and "go to --init-from" in err, err
    assert "delete it" not in err and weights.is_file()


def test_a_checkpoint_for_a_run_with_nothing_left_to_train_is_refused(trained, capsys):
    """--resume on a run whose stages are all done used to skip them and drop the checkpoint without a word."""
    cfg, run, _ = trained
    before, mtime = (run / "model.safetensors").read_bytes(), (run / "config.json").stat().st_mtime_ns
    ckpt = run / "seg" / "checkpoints" / "last.ckpt"
    assert main(["train", "--run-dir", str(run), "--config", str(run / "config.json"), "--no-progress",
                 "--stage", "seg", "--resume", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--resume {ckpt}: stage seg of {run} is already trained" in err, err
    assert (run / "model.safetensors").read_bytes() == before and (run / "seg" / "done.json").is_file()
    assert (run / "config.json").stat().st_mtime_ns == mtime  # refused before config.json is written again


def test_killed_between_model_file_and_marker_finishes_the_marker(trained):
    from hetseg.methods import train

    cfg, run, _ = trained
    done = json.loads((run / "seg" / "done.json").read_text())
    before = (run / "model.safetensors").read_bytes()
    (run / "seg" / "done.json").unlink()
    out = train(cfg, progress=False)
    assert out["seg"].pop("skipped") is True  # not retrained: the model file is the truth
    assert out["seg"] == done and (run / "model.safetensors").read_bytes() == before
    assert json.loads((run / "seg" / "done.json").read_text()) == done


@pytest.mark.parametrize("marker", ["[1]", "{}", '{"stage": "seg", "steps": "3", "wall_s": 1.0}',
                                    '{"stage": "cls", "steps": 3, "wall_s": 1.0}', "[" * 100_000])
def test_an_edited_stage_marker_is_one_line_and_changes_nothing(trained, tmp_path, capsys, marker):
    """A done.json that is not the summary hetseg writes (a list, no steps, another stage's, nested past Python's
    recursion limit) gave a TypeError / KeyError / RecursionError traceback, after config.json had been rewritten
    (a copied run's run_dir)."""
    import shutil

    _, run, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "seg" / "done.json").write_text(marker)
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    assert main(["train", "--run-dir", str(copy), "--no-progress", "--config", str(copy / "config.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hetseg: error: {copy / 'seg' / 'done.json'}: unreadable stage marker")
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before


def test_stage_marked_done_without_its_model_is_refused(trained, tmp_path, capsys):
    import shutil

    _, run, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "model.safetensors").unlink()
    argv = ["train", "--run-dir", str(copy), "--no-progress", "--config", str(copy / "config.json")]  # same recipe
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "marked done" in err[0] and "fix:" in err[0]
    (copy / "model.safetensors").write_bytes(b"\0" * 10)  # truncated weights
    assert main(argv) == 2
    assert "unreadable safetensors" in capsys.readouterr().err


def test_predict_into_a_symlink_loop_is_one_line(trained, tmp_path, capsys):
    """Path.resolve() raised RuntimeError on the loop: a 33-line traceback."""
    _, run, _ = trained
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(img)
    (tmp_path / "loopA").symlink_to(tmp_path / "loopB")
    (tmp_path / "loopB").symlink_to(tmp_path / "loopA")
    assert main(["predict", "--checkpoint", str(run), "--input", str(img), "--output", str(tmp_path / "loopA")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hetseg: error: {tmp_path / 'loopA'}: ") and "fix:" in err
    # as an input, the loop is named as one (it was "no such file or directory")
    assert main(["predict", "--checkpoint", str(run), "--input", str(tmp_path / "loopA"), "--output",
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a symlink that leads nowhere (or in a loop)" in err


def test_predict_never_overwrites_inputs_or_collides(trained, tmp_path, capsys):
    _, run, _ = trained
    inp = tmp_path / "photos"
    inp.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.png"):
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), np.uint8)).save(inp / name)
    before = {p.name: p.read_bytes() for p in inp.iterdir()}
    assert main(["predict", "--checkpoint", str(run), "--input", str(inp), "--output", str(inp)]) == 2
    assert "holds the input" in capsys.readouterr().err
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), np.uint8)).save(inp / "a.png")
    before["a.png"] = (inp / "a.png").read_bytes()
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(run), "--input", str(inp), "--output", str(out)]) == 2
    assert "same a.png" in capsys.readouterr().err and not out.exists()
    assert {p.name: p.read_bytes() for p in inp.iterdir()} == before
    assert main(["predict", "--checkpoint", str(run), "--input", str(inp / "b.png"), "--output", str(out),
                 "--threshold", "nan"]) == 2
    assert "--threshold nan: must be a number in [0, 1]" in capsys.readouterr().err and not out.exists()
    # A folder of masks is not overwritten by predictions of the same names; hetseg's own outputs are
    # (a rerun), and predicting more images into the folder adds their scores instead of dropping the old.
    masks = tmp_path / "SegmentationClass"
    masks.mkdir()
    (masks / "b.png").write_bytes(b"a mask")
    assert main(["predict", "--checkpoint", str(run), "--input", str(inp / "b.png"), "--output", str(masks)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hetseg: error: {masks / 'b.png'}: already in --output") and "fix:" in err
    assert (masks / "b.png").read_bytes() == b"a mask" and sorted(p.name for p in masks.iterdir()) == ["b.png"]
    for name in ("a.jpg", "b.png", "b.png"):
        assert main(["predict", "--checkpoint", str(run), "--input", str(inp / name), "--output", str(out)]) == 0
    scores = json.loads((out / "scores.json").read_text())["images"]
    assert sorted(Path(r["image"]).name for r in scores) == ["a.jpg", "b.png"]
    # a folder's entries that are not images are said, not dropped without a word
    import shutil

    mixed = tmp_path / "mixed"
    (mixed / "sub").mkdir(parents=True)
    shutil.copyfile(inp / "b.png", mixed / "b.png")
    (mixed / "notes.txt").write_text("not an image")
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(run), "--input", str(mixed), "--output", str(tmp_path / "all")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("hetseg: note: skipped 2 folder entries that are not ") and err.count("\n") == 1, err
    # --overlay's figures/ is guarded the same way: a user's figures/a.png, or a file named figures.
    figs = tmp_path / "figs"
    (figs / "figures").mkdir(parents=True)
    (figs / "figures" / "a.png").write_bytes(b"a user's figure")
    assert main(["predict", "--checkpoint", str(run), "--input", str(inp / "a.jpg"), "--output", str(figs),
                 "--overlay"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hetseg: error: {figs / 'figures' / 'a.png'}: already in --output") and err.count("\n") == 1
    assert (figs / "figures" / "a.png").read_bytes() == b"a user's figure" and not (figs / "a.png").exists()
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "figures").write_text("not a folder")
    assert main(["predict", "--checkpoint", str(run), "--input", str(inp / "a.jpg"), "--output",
                 str(tmp_path / "flat"), "--overlay"]) == 2
    assert capsys.readouterr().err.startswith(f"hetseg: error: {tmp_path / 'flat' / 'figures'}: a file where")
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["figures"]
    # an --output under a plain file names that file, not the scores.json that could not be written under it
    assert main(["predict", "--checkpoint", str(run), "--input", str(inp / "a.jpg"), "--output",
                 str(tmp_path / "flat" / "figures" / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hetseg: error: {tmp_path / 'flat' / 'figures'}: a file where --output ") and err.count("\n") == 1


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    from hetseg.errors import HetsegError
    from hetseg.io_atomic import write_atomic, write_json

    target = write_json(tmp_path / "done.json", {"ok": 1})

    def fail(tmp):
        Path(tmp).write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(HetsegError, match="write failed"):
        write_atomic(target, fail)
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["done.json"]  # no temporary left behind
    with pytest.raises(HetsegError, match="fix: a file or folder of that name is in the way"):
        write_json(tmp_path, {"a folder": "is not a file"})
    # the folders made for a failed write go again (a refused export left exp/new1/new2/ behind), not others
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "keep.txt").write_text("mine")
    with pytest.raises(HetsegError, match="write failed"):
        write_atomic(tmp_path / "exp" / "new1" / "new2" / "m.onnx", fail)
    with pytest.raises(ValueError, match="parity"):  # any failure, not only a file-system one
        write_atomic(tmp_path / "exp" / "new1" / "m.onnx", lambda tmp: (_ for _ in ()).throw(ValueError("parity")))
    assert [p.name for p in (tmp_path / "exp").iterdir()] == ["keep.txt"]


def test_atomic_writes_get_the_mode_open_would_give(tmp_path):
    """The temporary file is created 0600; the written file must not stay unreadable to the group and
    others (a run dir shared on a cluster), and a replaced file keeps its own mode."""
    from hetseg import io_atomic

    plain = tmp_path / "plain.json"
    plain.write_text("{}")  # what open() gives under this process's umask
    assert (io_atomic.write_text(tmp_path / "new.json", "{}").stat().st_mode & 0o777) == plain.stat().st_mode & 0o777
    assert plain.stat().st_mode & 0o044  # (a umask that hides files from everyone else would make this vacuous)
    kept = tmp_path / "kept.json"
    kept.write_text("{}")
    kept.chmod(0o640)
    assert (io_atomic.write_text(kept, "[]").stat().st_mode & 0o777) == 0o640


def test_eval_reads_a_foreign_split_against_its_own_root(trained, tmp_path):
    """A split file of another dataset root is scored on *that* root's images (not the run's)."""
    import shutil

    from hetseg.methods import evaluate_run

    cfg, run, _ = trained
    other = tmp_path / "other"
    shutil.copytree(cfg.data.root, other)
    from hetseg.palette import save_index_png

    for p in (other / "SegmentationClass").glob("*.png"):  # same names, other ground truth
        save_index_png(p, np.zeros((96, 96), np.uint8))
    own, _ = evaluate_run(run, "val")
    foreign, report = evaluate_run(run, str(other / "splits" / "val.txt"))
    assert report["split_root"] == str(other) and report["results"] == str(run / "eval_other_val.json")
    assert json.loads((run / "eval_val.json").read_text())["split_root"] == str(cfg.data.root)  # the run's own kept
    assert not np.array_equal(own.confusion, foreign.confusion)
    assert foreign.confusion[1:].sum() == 0  # all-background truth: the other root's masks were read
    # --split val --root OTHER: OTHER's val split (the role's path under it); it used to score the run's own val
    named, rep = evaluate_run(run, "val", root=other)
    assert rep["split_root"] == str(other) and np.array_equal(named.confusion, foreign.confusion)
    with pytest.raises(Exception, match="no weak split at"):
        evaluate_run(run, "weak", root=tmp_path)
    with pytest.raises(Exception, match="a folder, not a split file"):  # was "no such split"
        evaluate_run(run, str(other / "splits"))
    # --split relative to --root; a mask of another size than its image is one error line naming both
    from hetseg.errors import DataError

    first_mask = other / (other / "splits" / "val.txt").read_text().split()[1]
    save_index_png(first_mask, np.zeros((40, 50), np.uint8))
    with pytest.raises(DataError, match="40x50") as e:
        evaluate_run(run, "splits/val.txt", root=other)
    assert first_mask.name in str(e.value) and "\n" not in str(e.value)
    (other / (other / "splits" / "val.txt").read_text().split()[0]).unlink()  # an image val lists
    with pytest.raises(Exception, match="does not exist"):
        evaluate_run(run, str(other / "splits" / "val.txt"))
    # Another file named val.txt on the run's own root (2 of its images) would take the tag "val": it
    # must not replace the run's eval_val.json, which benches reuse as the cell's score.
    mine = Path(cfg.data.root) / "splits" / "val.txt"
    two = tmp_path / "two" / "val.txt"
    two.parent.mkdir()
    two.write_text("\n".join(mine.read_text().splitlines()[:2]) + "\n")
    before = (run / "eval_val.json").read_bytes()
    from hetseg.errors import HetsegError

    with pytest.raises(HetsegError, match="its images differ") as e:
        evaluate_run(run, str(two), root=cfg.data.root)  # read against the run's own root
    assert "\n" not in str(e.value) and (run / "eval_val.json").read_bytes() == before
    evaluate_run(run, "val")  # the same split again replaces its own results


def _run_with_setting(run: Path, dest: Path, key: str, value: object) -> Path:
    """A copy of ``run`` as trained (no eval files) whose model.json config has ``key`` (section.field) set:
    how a run trained elsewhere, or with another setting, reaches eval."""
    import shutil

    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("eval_*", "predictions_*"))
    info = json.loads((dest / "model.json").read_text())
    section, field = key.split(".")
    info["config"][section][field] = value
    (dest / "model.json").write_text(json.dumps(info))
    return dest


def test_a_foreign_split_needs_no_data_labels_file_of_the_run(trained, tmp_path):
    """A run moved to another machine (the shipped voc-lite0 records its trainer's data.labels path)
    still scores another data set's split: only the run's own splits read data.labels."""
    import shutil

    from hetseg.errors import HetsegError
    from hetseg.methods import evaluate_run

    cfg, run, _ = trained
    moved = _run_with_setting(run, tmp_path / "moved", "data.labels", str(tmp_path / "gone" / "labels.json"))
    other = tmp_path / "other"
    shutil.copytree(cfg.data.root, other)
    _, report = evaluate_run(moved, str(other / "splits" / "val.txt"))
    assert report["split_root"] == str(other)
    with pytest.raises(HetsegError, match="gone") as e:  # the run's own split does read it
        evaluate_run(moved, "val")
    assert "\n" not in str(e.value)


def test_eval_without_split_scores_the_runs_eval_split(trained, tmp_path, capsys):
    """eval.split was accepted, checked and saved but never read; it is now eval's default --split."""
    from hetseg.cli import main

    cfg, run, _ = trained
    moved = _run_with_setting(run, tmp_path / "moved", "eval.split", "strong")
    assert main(["eval", "--checkpoint", str(moved)]) == 0
    strong = Path(cfg.data.root, cfg.data.strong_split)
    assert f"on {strong.stem} ({len(strong.read_text().splitlines())} images)" in capsys.readouterr().out
    assert (moved / "eval_strong.json").is_file() and not (moved / "eval_val.json").exists()


def test_eval_of_a_runs_weights_file_writes_into_the_run(trained, tmp_path):
    """--checkpoint RUN/model.safetensors is the run (engine/checkpoint.run_dir): eval's reports go into
    RUN, as for the folder (it once took the file's path for the folder its reports go in)."""
    from hetseg.methods import evaluate_run

    _, run, _ = trained
    moved = _run_with_setting(run, tmp_path / "moved", "eval.split", "val")
    _, report = evaluate_run(moved / "model.safetensors", "val")
    assert report["results"] == str(moved / "eval_val.json") and (moved / "eval_val.json").is_file()


def test_eval_of_a_run_whose_relative_data_root_is_elsewhere_says_so(trained, tmp_path, capsys, monkeypatch):
    """A run stores data.root as typed; from another folder eval's fix said to build fashion-scenes
    there (the training fix), which is wrong for a VOC run and not something eval can set."""
    from hetseg.cli import main

    _, run, _ = trained
    moved = _run_with_setting(run, tmp_path / "moved", "data.root", "data/somewhere")
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--checkpoint", str(moved)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data.root data/somewhere is not there (relative to the folder" in err
    assert "fix: run eval from that folder, or give --split" in err and not (moved / "eval_val.json").exists()
    # an absolute root that is gone: no folder to run from, only the --split half of the fix (a helper's probe)
    gone = _run_with_setting(run, tmp_path / "gone", "data.root", str(tmp_path / "no_such_root"))
    assert main(["eval", "--checkpoint", str(gone)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"data.root {tmp_path / 'no_such_root'} is not there; fix: give --split the " \
        "split file of the data set (and --root DIR)" in err, err


def test_a_model_json_threshold_that_is_not_a_probability_is_one_error_line(trained, tmp_path, capsys):
    """Also the record of what trained ('stages', 'splits'): "stages": "x" predicted on, read as stage 'x'."""
    import shutil

    _, run, _ = trained
    bad = tmp_path / "run"
    shutil.copytree(run, bad)
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(img)
    for key, value in (("threshold", "x"), ("threshold", None), ("threshold", 1.5), ("threshold", True),
                       ("stages", "x"), ("splits", [1]), ("class_names", ["a"] * 11), ("class_names", list(range(11)))):
        info = json.loads((run / "model.json").read_text())
        info[key] = value
        (bad / "model.json").write_text(json.dumps(info))
        for argv in (["predict", "--checkpoint", str(bad), "--input", str(img), "--output", str(tmp_path / "o")],
                     ["eval", "--checkpoint", str(bad)]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and err.startswith(f"hetseg: error: {bad / 'model.json'}: '{key}'"), err
    assert not (tmp_path / "o").exists()
    # a diverged run's NaN weights predicted all background and wrote bare NaN into scores.json
    from safetensors.torch import load_file, save_file

    (bad / "model.json").write_text((run / "model.json").read_text())
    state = load_file(str(run / "model.safetensors"))
    first = sorted(state)[0]
    state[first] = torch.full_like(state[first], float("nan"))
    save_file(state, str(bad / "model.safetensors"))
    assert main(["predict", "--checkpoint", str(bad), "--input", str(img), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights hold NaN or inf" in err and not (tmp_path / "o").exists(), err


def test_predict_does_not_mix_two_models_in_one_folder(trained, tmp_path, capsys):
    """Review s16 (finding 5): predicting with another run into a folder of predictions added to it without a
    word, so `hetseg score` then scored two models' masks as one. scores.json now records its run."""
    import shutil

    _, run, _ = trained
    other = tmp_path / "other"
    shutil.copytree(run, other)  # the same weights at another path: another run as far as predict knows
    photo = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 60, 3), np.uint8)).save(photo)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(run), "--input", str(photo), "--output", str(out)]) == 0
    assert json.loads((out / "scores.json").read_text())["source"] == str(run.resolve())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["predict", "--checkpoint", str(other), "--input", str(photo), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hetseg: error: {out}: holds predictions of {run.resolve()}")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["predict", "--checkpoint", str(run), "--input", str(photo), "--output", str(out)]) == 0  # a rerun


def test_predicting_a_huge_photo_stays_under_the_memory_bound(trained, tmp_path):
    """8000 x 8000: the old full-resolution float maps needed ~3.6 GB; the bound is 1.2 GB above start. A
    60000 x 1 strip stays under it too."""
    _, run, _ = trained
    big = tmp_path / "big.png"
    Image.fromarray(np.full((8000, 8000, 3), 127, np.uint8)).save(big, compress_level=1)
    code = (
        "import resource, sys, torch; torch.set_num_threads(1)\n"
        "from hetseg.engine.checkpoint import load_model\nfrom hetseg.engine.evaluate import predict_images\n"
        "from hetseg.data.io import read_image\n"
        f"net = load_model({str(run)!r})[0]; img = read_image({str(big)!r})\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "p = predict_images(net, [img])[0]\n"
        "assert p.label_map.shape == (8000, 8000)\n"
        "import numpy as np\n"  # a 60000 x 1 strip: prepare's side x side canvas asked for 10 GiB
        "assert predict_images(net, [np.full((1, 60000, 3), 127, np.uint8)])[0].label_map.shape == (1, 60000)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout.strip().splitlines()[-1]) < 1200  # MiB above the image itself


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_bench_workers_die_with_a_killed_bench(tmp_path):
    """A bench killed mid-run (timeout, kill -9) must not leave its cell processes training as orphans."""
    import os
    import signal
    import time

    code = (
        "import os, sys, time\n"
        "from hetseg.bench.workers import cell_pool\n"
        "pool = cell_pool(1)\n"
        "print(pool.submit(os.getpid).result(), flush=True)\n"
        "pool.submit(time.sleep, 120)\n"
        "time.sleep(120)\n"
    )
    bench = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    worker = int(bench.stdout.readline())

    def alive(pid: int) -> bool:  # a zombie left for init to reap counts as dead
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    assert alive(worker)
    os.kill(bench.pid, signal.SIGKILL)
    bench.wait()
    deadline = time.monotonic() + 30
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    gone = not alive(worker)
    if not gone:
        os.kill(worker, signal.SIGKILL)
    assert gone, "the worker outlived the bench process"


def test_replaced_folder_keeps_the_old_folder_when_the_writer_fails(tmp_path):
    """An evaluation killed half-way leaves the previous predictions as they were (io_atomic.replaced_folder)."""
    from hetseg.io_atomic import replaced_folder

    dest = tmp_path / "predictions_val"
    dest.mkdir()
    (dest / "a.png").write_bytes(b"a")
    with pytest.raises(RuntimeError), replaced_folder(dest) as tmp:
        (tmp / "b.png").write_bytes(b"b")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions_val"]
    assert sorted(p.name for p in dest.iterdir()) == ["a.png"]
    with replaced_folder(dest) as tmp:
        (tmp / "b.png").write_bytes(b"b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions_val"]
    assert sorted(p.name for p in dest.iterdir()) == ["b.png"]


def test_replaced_folder_puts_the_old_folder_back_when_the_swap_fails(tmp_path, monkeypatch):
    """The second rename (fresh folder -> destination) failing must not leave the old folder hidden."""
    import os

    from hetseg.errors import HetsegError
    from hetseg.io_atomic import replaced_folder

    dest = tmp_path / "predictions_val"
    dest.mkdir()
    (dest / "a.png").write_bytes(b"a")
    real_rename = os.rename

    def rename(src, dst):
        if str(src).endswith(".tmp"):
            raise OSError(39, "Directory not empty", str(dst))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(HetsegError, match="predictions_val: cannot replace it"), replaced_folder(dest) as tmp:
        (tmp / "b.png").write_bytes(b"b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions_val"]
    assert sorted(p.name for p in dest.iterdir()) == ["a.png"]


def test_a_stopped_predict_can_be_rerun_into_its_folder(trained, tmp_path, capsys, monkeypatch):
    """A corrupt input is refused before any PNG is written, and a run stopped half-way (here a full
    disk) claimed its PNGs in scores.json first: the rerun replaces them (it used to refuse them as
    "not a prediction of hetseg's"), while a PNG no run wrote is still refused."""
    import hetseg.engine.predict as predict
    from hetseg.errors import HetsegError

    _, run, _ = trained
    inp, out = tmp_path / "mix", tmp_path / "mix_out"
    inp.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), np.uint8)).save(inp / name)
    (inp / "zzz.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    argv = ["predict", "--checkpoint", str(run), "--input", str(inp), "--output", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("hetseg: error: ") and "zzz.jpg" in err and not out.exists()
    with pytest.raises(HetsegError, match="zzz.jpg"):  # batches of one: a, b and c would come first
        predict.run_predict(str(run), [str(inp)], str(out), batch_size=1)
    assert not out.exists()
    (inp / "zzz.jpg").unlink()
    real, calls = predict.save_index_png, []

    def disk_full_at_the_second(tmp, label_map):
        calls.append(tmp)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(tmp, label_map)

    monkeypatch.setattr(predict, "save_index_png", disk_full_at_the_second)
    assert main(argv) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png"]  # stopped half-way
    monkeypatch.setattr(predict, "save_index_png", real)
    assert main(argv) == 0
    data = json.loads((out / "scores.json").read_text())
    assert sorted(Path(r["image"]).name for r in data["images"]) == ["a.jpg", "b.jpg", "c.jpg"]
    assert "unfinished" not in data and sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png", "c.png"]
    (out / "d.png").write_bytes(b"a mask")
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), np.uint8)).save(inp / "d.jpg")
    assert main(argv) == 2
    assert f"{out / 'd.png'}: already in --output" in capsys.readouterr().err
    assert (out / "d.png").read_bytes() == b"a mask"


def test_predict_decodes_each_input_once_within_its_memory_bound(trained, tmp_path, monkeypatch):
    """Every input is decoded before anything is written (a corrupt one is refused first); the decoded
    images are kept up to DECODED_KEPT_BYTES, so a few photos are decoded once (they were decoded twice),
    and past the bound they are decoded again per batch, which keeps memory bounded."""
    import hetseg.engine.predict as predict

    _, run, _ = trained
    inp = tmp_path / "few"
    inp.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), np.uint8)).save(inp / name)
    real, decoded = predict.read_image, []
    monkeypatch.setattr(predict, "read_image", lambda p: decoded.append(Path(p).name) or real(p))
    first = predict.run_predict(str(run), [str(inp)], str(tmp_path / "once"), batch_size=2)
    assert sorted(decoded) == ["a.jpg", "b.jpg", "c.jpg"]
    monkeypatch.setattr(predict, "DECODED_KEPT_BYTES", 40 * 60 * 3)  # room for one image
    decoded.clear()
    again = predict.run_predict(str(run), [str(inp)], str(tmp_path / "bounded"), batch_size=2)
    assert sorted(decoded) == ["a.jpg", "b.jpg", "b.jpg", "c.jpg", "c.jpg"]
    assert [r["class_scores"] for r in again] == [r["class_scores"] for r in first]
    for name in ("a", "b", "c"):  # the same label maps either way
        assert np.array_equal(np.asarray(Image.open(tmp_path / "once" / f"{name}.png")),
                              np.asarray(Image.open(tmp_path / "bounded" / f"{name}.png")))


def test_a_num_classes_the_class_list_does_not_have_is_refused(trained, scenes, tmp_path, capsys):
    """data.num_classes=30 on an 11-class data set trained, then crashed eval and predict (a class index
    with no name): train refuses it in one line before writing anything, and predict of a run trained
    so refuses it in one line before writing anything."""
    import shutil

    run = tmp_path / "nc"
    assert main(["train", "--run-dir", str(run), "--no-progress", f"data.root={scenes}", "data.num_classes=30",
                 "cls.steps=1", "seg.steps=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"hetseg: error: {scenes / 'classes.txt'}: names 11 classes")
    assert "fix: set data.num_classes=11" in err and not run.exists()
    _, src, _ = trained
    shutil.copytree(src, run)
    info = json.loads((run / "model.json").read_text())
    info["class_names"] = info["class_names"][:5]  # what such a run recorded: fewer names than classes
    (run / "model.json").write_text(json.dumps(info))
    photo = tmp_path / "a.jpg"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(photo)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(run), "--input", str(photo), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "names 5 classes but the model predicts 11" in err and not out.exists()
    preds = run / "predictions_val"
    preds.mkdir(exist_ok=True)
    (preds / "kept.png").write_bytes(b"an earlier evaluation")
    assert main(["eval", "--checkpoint", str(run)]) == 2  # it used to replace predictions_val/, then crash
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "names 5 classes but the model predicts 11" in err
    assert (preds / "kept.png").read_bytes() == b"an earlier evaluation"


def test_a_stage_that_never_trained_is_noted_by_eval_and_predict(scenes, tmp_path, capsys):
    """A DecoupledNet run trained with ``--stage cls`` only segments with its initial decoder: eval and predict
    say so in one note after their work (a refused command prints only its error line). A run whose seg trained from that run's weights
    (``--init-from``, as Table 1's cells do) records where its classifier came from and has nothing to say;
    a model.json from before hetseg recorded ``init_from`` cannot tell, so says nothing either."""
    base = ["--no-progress", f"data.root={scenes}", "cls.steps=2", "cls.batch_size=4", "seg.steps=2",
            "seg.batch_size=4", "crops.crops_per_subset=2", "crops.proposals=none"]
    cls_run, seg_run = tmp_path / "cls", tmp_path / "seg"
    assert main(["train", "--run-dir", str(cls_run), "--stage", "cls", *base]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(cls_run)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hetseg: note: {cls_run}: stage 'seg' never trained ")
    assert f"fix: hetseg train --config {cls_run / 'config.json'} --run-dir {cls_run}" in err[0]
    # the note follows the work: a refused eval of the same run is its one error line, not note + error
    assert main(["eval", "--checkpoint", str(cls_run), "--split", "splits/nope.txt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hetseg: error: "), err
    image = next((scenes / "JPEGImages").iterdir())
    assert main(["predict", "--checkpoint", str(cls_run / "model.safetensors"), "--input", str(image),
                 "--output", str(tmp_path / "pred")]) == 0
    assert capsys.readouterr().err.count("hetseg: note: ") == 1
    # the same run's model.json as hetseg wrote it before recording init_from: unknown, so no note
    written = (cls_run / "model.json").read_text()
    info = json.loads(written)
    assert info.pop("init_from") is None
    (cls_run / "model.json").write_text(json.dumps(info))
    assert main(["eval", "--checkpoint", str(cls_run)]) == 0
    assert "hetseg: note" not in capsys.readouterr().err
    (cls_run / "model.json").write_text(written)

    assert main(["train", "--run-dir", str(seg_run), "--stage", "seg", "--init-from", str(cls_run), *base]) == 0
    cls_sha = hashlib.sha256((cls_run / "model.safetensors").read_bytes()).hexdigest()  # the weights it started from
    assert json.loads((seg_run / "model.json").read_text())["init_from"] == {"path": str(cls_run), "stages": ["cls"],
                                                                            "sha256": cls_sha}
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(seg_run)]) == 0
    assert "hetseg: note" not in capsys.readouterr().err
    # trained to the end in one run dir: nothing to say; the record says it started from nothing
    assert main(["train", "--run-dir", str(cls_run), "--config", str(cls_run / "config.json"), "--no-progress"]) == 0
    assert json.loads((cls_run / "model.json").read_text())["init_from"] is None
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(cls_run)]) == 0
    assert "hetseg: note" not in capsys.readouterr().err
    # cls_run's weights changed on that training; seg_run still names the ones it started from
    assert hashlib.sha256((cls_run / "model.safetensors").read_bytes()).hexdigest() != cls_sha
    assert json.loads((seg_run / "model.json").read_text())["init_from"]["sha256"] == cls_sha
    # a bare weights file: its own sha256, stages unknown
    bare_file = tmp_path / "cls_weights.safetensors"
    bare_file.write_bytes((cls_run / "model.safetensors").read_bytes())
    assert main(["train", "--run-dir", str(tmp_path / "seg_bare"), "--stage", "seg", "--init-from", str(bare_file), *base]) == 0
    assert json.loads((tmp_path / "seg_bare" / "model.json").read_text())["init_from"] == {
        "path": str(bare_file), "stages": None, "sha256": hashlib.sha256(bare_file.read_bytes()).hexdigest()}


def test_the_untrained_stage_note_is_never_false_and_its_fix_never_stale(scenes, tmp_path, capsys):
    """Edge cases of the note above (a second read found each): a first stage killed after starting from
    --init-from and resumed without it records "unknown", not "started from nothing" (it said the classifier
    had never trained); a stage missing *before* a trained one is fixed in a new run dir (training it in
    place would leave the later stage trained on its initial weights); an unreadable model.json of the
    --init-from run leaves its stages unknown instead of refusing the weights; a hand-edited init_from is
    no traceback."""
    import os

    base = ["--no-progress", f"data.root={scenes}", "cls.steps=2", "cls.batch_size=4", "seg.steps=3",
            "seg.batch_size=4", "seg.checkpoint_every=1", "crops.crops_per_subset=2", "crops.proposals=none"]
    cls_run, seg_run, bare = tmp_path / "cls", tmp_path / "seg", tmp_path / "bare"
    assert main(["train", "--run-dir", str(cls_run), "--stage", "cls", *base]) == 0
    env = {**os.environ, "HETSEG_FAULT": "step:seg:2", "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-m", "hetseg", "train", "--run-dir", str(seg_run), "--stage", "seg",
                             "--init-from", str(cls_run), *base], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode != 0 and not (seg_run / "model.json").exists()
    assert main(["train", "--run-dir", str(seg_run), "--stage", "seg", *base]) == 0  # resumed, no --init-from
    assert "init_from" not in json.loads((seg_run / "model.json").read_text())
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(seg_run)]) == 0
    assert "hetseg: note" not in capsys.readouterr().err

    assert main(["train", "--run-dir", str(bare), "--stage", "seg", *base]) == 0  # seg on a random classifier
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(bare)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stage 'cls' never trained" in err[0] and "into a new run dir" in err[0]

    (cls_run / "model.json").write_text("{not json")
    assert main(["train", "--run-dir", str(tmp_path / "s2"), "--stage", "seg", "--init-from", str(cls_run), *base]) == 0
    assert json.loads((tmp_path / "s2" / "model.json").read_text())["init_from"] == {
        "path": str(cls_run), "stages": None, "sha256": hashlib.sha256((cls_run / "model.safetensors").read_bytes()).hexdigest()}
    info = json.loads((bare / "model.json").read_text())
    info["init_from"] = "runs/cls"  # edited by hand
    (bare / "model.json").write_text(json.dumps(info))
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(bare)]) == 0
    assert "hetseg: note" not in capsys.readouterr().err


def test_init_from_weights_that_would_be_ignored_is_refused(trained, tmp_path, capsys):
    """--init-from on a run whose stages are all trained skipped them and dropped the weights without a word
    (--resume was already refused there); an empty --init-from was read as none."""
    cfg, run, _ = trained
    before = (run / "model.safetensors").read_bytes()
    argv = ["train", "--run-dir", str(run), "--config", str(run / "config.json"), "--no-progress"]
    assert main([*argv, "--init-from", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--init-from {run}: stage cls, seg of {run} is already trained" in err, err
    assert (run / "model.safetensors").read_bytes() == before
    fresh = tmp_path / "fresh"
    assert main(["train", "--run-dir", str(fresh), "--no-progress", f"data.root={cfg.data.root}", *TINY,
                 "--init-from", ""]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--init-from: empty value" in err and not fresh.exists(), err
    from hetseg.methods import train  # the library refuses it too (the CLI's parser refuses it first)

    with pytest.raises(Exception, match="--init-from : is empty"):
        train(Config(run_dir=str(fresh)).override([f"data.root={cfg.data.root}", *TINY]), init_from="")
    assert not fresh.exists()

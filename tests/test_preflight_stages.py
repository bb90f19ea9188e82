"""Every stage's data is checked before the first stage trains (``Method.stage_samples``, a user-journey
review's findings): a later stage's batch larger than its data, or a transfer split with none of its
classes, used to surface only after the classifier had trained -- and the run's saved config then refused
the corrected setting, so the folder could never finish. Also: every split setting reads the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_scenes

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return make_scenes(tmp_path_factory, "preflight_scenes", seed=7, num_train=60, num_val=10)


def _cfg(root: Path, run: Path, method: str, *extra: str):
    from hetseg.config import Config

    return Config(run_dir=str(run)).override([f"model.name={method}", f"data.root={root}", "crops.crops_per_subset=2",
                                              "crops.proposals=none", *extra])


@pytest.mark.parametrize("method, stage", [("decouplednet", "cls"), ("decouplednet", "seg"), ("deconvnet", "deconv"),
                                           ("transfernet", "cls"), ("transfernet", "att"), ("transfernet", "joint"),
                                           ("baselinenet", "baseline"), ("decouplednet_transfer", "seg"),
                                           ("dis", "labelmap"), ("dis", "joint")])
def test_stage_samples_is_the_length_of_the_set_the_stage_trains_on(scenes, tmp_path, method, stage):
    """The count made from the split files alone equals len(train_ds) that run_stage is handed."""
    import hetseg.engine.train as engine_train
    from hetseg.methods import get_method

    cfg = _cfg(scenes, tmp_path / "run", method)
    m = get_method(method)
    seen = {}

    def fake_run_stage(name, module, cfg, sc, train_ds, *a, **k):  # stop at the hand-over: no training
        seen[name] = len(train_ds)
        raise KeyboardInterrupt

    net = m.build(cfg)
    import hetseg.methods.decouplednet as dn
    import hetseg.methods.deconvnet as dc
    import hetseg.methods.dis as dis
    import hetseg.methods.transfernet as tn

    with pytest.MonkeyPatch.context() as mp:
        for mod in (dn, dc, dis, tn, engine_train):
            mp.setattr(mod, "run_stage", fake_run_stage)
        with pytest.raises(KeyboardInterrupt):
            m.run_stage(stage, net, cfg, None, (), False)
    assert seen[stage] == m.stage_samples(cfg, stage) > 0
    if method == "dis":  # its count is len(dataset): check it against the split files themselves
        strong, weak = ([line.split()[0] for line in (scenes / "splits" / f).read_text().splitlines() if line.strip()]
                        for f in ("strong_5.txt", "train_weak.txt"))
        assert seen[stage] == max(len(strong), len(set(weak) - set(strong))) and len(weak) > len(strong)


def test_a_later_stages_batch_is_refused_before_the_first_stage_trains(scenes, tmp_path, capsys):
    from hetseg.cli import main

    run = tmp_path / "run"
    argv = ["train", "--method", "decouplednet", "--run-dir", str(run), "--no-progress", f"data.root={scenes}",
            "cls.steps=2", "cls.batch_size=4", "seg.steps=2", "crops.crops_per_subset=2", "crops.proposals=none"]
    assert main([*argv, "seg.batch_size=100000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hetseg: error: stage 'seg': ") and "fewer than its batch_size" in err
    assert not run.exists()  # nothing trained, nothing saved: the corrected command may use this folder
    assert main([*argv, "seg.batch_size=4"]) == 0 and (run / "seg" / "done.json").is_file()


def test_swapped_transfer_splits_are_refused_before_training_naming_the_file(scenes, tmp_path, capsys):
    from hetseg.cli import main

    run = tmp_path / "tn"
    assert main(["train", "--method", "transfernet", "--run-dir", str(run), "--no-progress", f"data.root={scenes}",
                 "cls.steps=2", "cls.batch_size=4", "transfer.source_split=splits/transfer_target_train.txt",
                 "transfer.target_split=splits/transfer_source_train.txt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hetseg: error: ") and "; fix: " in err
    assert "transfer_target_train.txt" in err and "swapped" in err  # the file, and the likely mistake
    assert not run.exists()


def test_an_absolute_transfer_split_outside_the_root_reads_against_data_root(scenes, tmp_path):
    """data.weak_split=/elsewhere/x.txt was read against data.root, transfer.source_split=/elsewhere/x.txt
    against /elsewhere (its images "not found"): one rule for every split setting now."""
    from hetseg.methods.transfernet.data import domain_rows

    elsewhere = tmp_path / "elsewhere" / "splits"
    elsewhere.mkdir(parents=True)
    # half of the default split's lines: the rows read must be these, not the default file's
    lines = (scenes / "splits" / "transfer_source_train.txt").read_text().splitlines()
    (elsewhere / "src.txt").write_text("\n".join(lines[:len(lines) // 2]) + "\n")
    cfg = _cfg(scenes, tmp_path / "run", "transfernet", f"transfer.source_split={elsewhere / 'src.txt'}")
    full = [r.image for r in domain_rows(_cfg(scenes, tmp_path / "run", "transfernet"), "source", 96).split.records]
    got = [r.image for r in domain_rows(cfg, "source", 96).split.records]
    assert len(full) == len(lines) >= 2 and got == full[:len(lines) // 2]  # its images, found under data.root


def test_predict_takes_a_multi_hot_and_refuses_a_wrong_one():
    """A multi-hot (N, K) used to be read as index lists: torch.zeros(2, K) forced class 0 on every image."""
    import torch

    from hetseg.models import create_model

    net = create_model("decouplednet", num_classes=10, scale="cpu")
    x = torch.randn(2, 3, 96, 96)
    hot = torch.zeros(2, 10)
    hot[0, 3] = hot[1, 7] = 1
    assert net.predict(x, labels=hot).identified == net.predict(x, labels=[[3], [7]]).identified == [[3], [7]]
    assert net.predict(x, labels=torch.zeros(2, 10, dtype=torch.bool)).identified == [[], []]
    with pytest.raises(ValueError, match="multi-hot"):
        net.predict(x, labels=torch.zeros(2, 9))
    with pytest.raises(ValueError, match="multi-hot"):
        net.predict(x, labels=torch.full((2, 10), 0.5))


def test_a_resume_of_another_stage_is_refused_with_no_note_before_it(scenes, tmp_path, capsys):
    """A refused command prints only its error line: the "stage cls has no trained weights" note used to
    come first, the checkpoint's refusal after it."""
    from hetseg.cli import main

    ckpt = tmp_path / "dc" / "deconv" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    import torch

    torch.save({"state_dict": {}, "global_step": 1, "hetseg_stage": "deconv"}, ckpt)
    run = tmp_path / "dn"
    assert main(["train", "--method", "decouplednet", "--run-dir", str(run), "--no-progress", "--stage", "seg",
                 "--resume", str(ckpt), f"data.root={scenes}", "seg.steps=2", "seg.batch_size=2",
                 "crops.crops_per_subset=2", "crops.proposals=none"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hetseg: error: {ckpt}: a checkpoint of stage 'deconv'"), err
    assert not run.exists()


def test_a_stage_stopped_by_an_error_clears_its_progress_bar():
    """The error line used to be printed glued onto the bar's line (on_train_end never ran)."""
    import io

    from tqdm import tqdm

    from hetseg.engine.console import StageProgress

    bar = StageProgress("cls", 10)
    out = io.StringIO()
    bar._bar = tqdm(total=10, file=out, leave=False)
    bar._bar.update(3)
    bar.on_exception(None, None, RuntimeError("broken image"))
    assert bar._bar is None and out.getvalue().endswith("\r")  # tqdm's leave=False close: the line cleared


def test_a_run_dir_holding_other_files_is_refused(scenes, tmp_path, capsys):
    """--run-dir pointed at a dataset root used to receive config.json and the model files among the user's own."""
    from hetseg.cli import main

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert main(["train", "--method", "deconvnet", "--run-dir", str(mine), "--no-progress", f"data.root={scenes}",
                 "deconv.steps=1", "deconv.batch_size=2", "crops.crops_per_subset=2", "crops.proposals=none"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hetseg: error: --run-dir {mine}: a folder holding other files")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

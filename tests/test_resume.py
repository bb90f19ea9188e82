"""Exact resume: a tiny run killed with SIGKILL at several points and resumed by the same command
ends with weights bit-identical to the uninterrupted run (docs/GUARANTEES.md).

Kill points (``HETSEG_FAULT``, engine/resume.py): mid-stage one step after a checkpoint, right
after a checkpoint in the second epoch, between the stages, mid-way through the second stage,
and during the final save (model file written, done marker not); and a SIGTERM or Ctrl-C between two
saves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_scenes
from safetensors.torch import load_file

ARGS = ["cls.steps=10", "cls.batch_size=8", "cls.checkpoint_every=2", "seg.steps=6", "seg.batch_size=4",
        "seg.checkpoint_every=2", "crops.crops_per_subset=2", "crops.proposals=none"]
KILL_POINTS = ["step:cls:3", "step:cls:8", "done:cls", "step:seg:5", "saved:seg"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return make_scenes(tmp_path_factory, "resume_scenes", seed=7, num_train=60, num_val=4)


def _train(run: Path, root: Path, fault: str | None = None, threads: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("HETSEG_FAULT", None)
    if fault:
        env["HETSEG_FAULT"] = fault
    cmd = [sys.executable, "-m", "hetseg", "train", "--run-dir", str(run), "--no-progress", f"data.root={root}", *ARGS]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, preexec_fn=_ctrl_c_heard)


def _ctrl_c_heard() -> None:
    """A shell's background job (``make test &``) starts with SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler: the Ctrl-C fault points would be ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def reference(scenes, tmp_path_factory) -> dict:
    run = tmp_path_factory.mktemp("ref") / "run"
    out = _train(run, scenes)
    assert out.returncode == 0, out.stderr[-2000:]
    return load_file(str(run / "model.safetensors"))


@pytest.mark.parametrize("fault", KILL_POINTS)
def test_killed_and_resumed_run_is_bit_identical(scenes, reference, tmp_path, fault):
    run = tmp_path / "run"
    killed = _train(run, scenes, fault)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    resumed = _train(run, scenes)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # Lightning warns that a mid-epoch resume is unreliable; hetseg restores the position itself,
    # which the bit-identical weights below prove, so the warning would only mislead.
    assert "dataloader is not resumable" not in resumed.stderr
    final = load_file(str(run / "model.safetensors"))
    assert final.keys() == reference.keys()
    diff = [k for k in final if not torch.equal(final[k], reference[k])]
    assert not diff, f"{len(diff)} tensors differ after a kill at {fault}, e.g. {diff[:3]}"
    # The stage killed mid-way reports the training time of both sessions, not of the last one only.
    if fault.startswith("step:"):
        done = json.loads((run / fault.split(":")[1] / "done.json").read_text())
        assert done["resumed_from"] and done["wall_s_before_resume"] > 0
        assert done["wall_s"] >= round(done["wall_s_before_resume"], 1)
        # ... and names each session: where it started, the precision `auto` resolved to and the device,
        # since a stage resumed on another machine may go on in another precision.
        from hetseg.engine.train import device_label, resolve_precision

        first, second = done["sessions"]
        assert first["from_step"] == 0 and 0 < second["from_step"] < done["steps"]
        assert first["precision"] == second["precision"] == resolve_precision("auto")
        assert first["device"] == second["device"] == device_label()


@pytest.mark.parametrize("signal_name, at, how, resumed_at", [
    ("sigterm", 5, "cls/checkpoints/last.ckpt: stage 'cls' stopped by SIGTERM at step 5/10; fix: rerun the same command "
                   "to resume", [0, 5]),
    ("sigint", 5, "cls/checkpoints/last.ckpt: stage 'cls' stopped at step 5/10 (last.ckpt holds step 4); fix: rerun the "
                  "same command to resume", [0, 4]),
    ("sigint", 1, "cls: stage 'cls' stopped at step 1/10, before any checkpoint of it was saved; fix: rerun the same "
                  "command", [0])])
def test_a_sigterm_or_ctrl_c_is_one_line_and_the_resume_is_bit_identical(scenes, reference, tmp_path, signal_name,
                                                                          at, how, resumed_at):
    """A scheduler's SIGTERM ended the stage with Lightning's SIGTERMException, a SystemExit of status 0: the job read
    as finished, without a word or a done marker, and the steps since the last save were lost; it now saves the step
    it ends at. Ctrl-C ended it with a silent status 1 (a KeyboardInterrupt mid-step: no save; the line names the
    step last.ckpt holds, or that there is none). Step 5 falls between the 2-step saves, step 1 before the first."""
    run = tmp_path / "run"
    stopped = _train(run, scenes, f"{signal_name}@step:cls:{at}")
    assert stopped.returncode == 2 and stopped.stderr == f"hetseg: error: {run}/{how}\n", (stopped.returncode,
                                                                                         stopped.stderr[-2000:])
    assert not (run / "cls" / "done.json").exists()
    resumed = _train(run, scenes)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [s["from_step"] for s in json.loads((run / "cls" / "done.json").read_text())["sessions"]] == resumed_at
    final = load_file(str(run / "model.safetensors"))
    assert not [k for k in final if not torch.equal(final[k], reference[k])]


def test_a_stop_after_resume_from_a_file_says_to_drop_resume(scenes, tmp_path):
    """With --resume FILE the same command starts from FILE again: the steps saved in last.ckpt since were lost."""
    run, env = tmp_path / "run", {**os.environ, "OMP_NUM_THREADS": "1", "HETSEG_FAULT": "sigint@step:cls:3"}
    cmd = [sys.executable, "-m", "hetseg", "train", "--run-dir", str(run), "--stage", "cls", "--no-progress",
           f"data.root={scenes}", *ARGS]
    assert subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=_ctrl_c_heard).returncode == 2
    kept = tmp_path / "step2.ckpt"
    kept.write_bytes((run / "cls" / "checkpoints" / "last.ckpt").read_bytes())
    env["HETSEG_FAULT"] = "sigint@step:cls:5"
    out = subprocess.run([*cmd, "--resume", str(kept)], env=env, capture_output=True, text=True, timeout=300,
                         preexec_fn=_ctrl_c_heard)
    assert out.returncode == 2 and out.stderr == (
        f"hetseg: error: {run / 'cls' / 'checkpoints' / 'last.ckpt'}: stage 'cls' stopped at step 5/10 (last.ckpt holds "
        "step 4); fix: rerun the same command without --resume\n"), out.stderr[-2000:]


def test_same_command_twice_with_two_threads_is_bit_identical(scenes, tmp_path):
    """The reproducible-demo guarantee (issue 12): the same command, machine and thread count give
    the same weights -- here with 2 threads, as `make demo` runs on a 2-core machine, from the
    shipped backbone as the demo starts."""
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        out = subprocess.run([sys.executable, "-m", "hetseg", "train", "--run-dir", str(run), "--no-progress",
                              f"data.root={scenes}", "model.backbone=shipped", *ARGS],
                             env={**os.environ, "OMP_NUM_THREADS": "2"}, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
    a, b = (load_file(str(r / "model.safetensors")) for r in runs)
    assert a.keys() == b.keys() and not [k for k in a if not torch.equal(a[k], b[k])]


def test_a_sampler_hetseg_cannot_position_warns_on_a_mid_epoch_resume():
    """Lightning's own warning is silenced (hetseg positions its EpochSampler itself); under DDP the
    sampler is Lightning's and cannot be positioned, so hetseg says so -- only mid-epoch."""
    import warnings

    from torch.utils.data import DataLoader

    from hetseg.engine.resume import resume_position

    dl = DataLoader(list(range(14)), batch_size=2)  # 7 batches, a plain (non-hetseg) sampler
    with pytest.warns(UserWarning, match="cannot be positioned inside the epoch"):
        resume_position(dl, global_step=3, accumulate=1, epoch=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resume_position(dl, global_step=7, accumulate=1, epoch=1)  # an epoch boundary: nothing lost


def test_resuming_a_checkpoint_past_the_stages_budget_is_refused(scenes, tmp_path, capsys):
    """Lightning stopped at once and the new run recorded the checkpoint's steps under a config that says fewer."""
    from hetseg.cli import main

    common = ["--stage", "cls", "--no-progress", f"data.root={scenes}", "cls.batch_size=8"]
    assert main(["train", "--run-dir", str(tmp_path / "a"), *common, "cls.steps=3"]) == 0
    ckpt = tmp_path / "a" / "cls" / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    assert main(["train", "--run-dir", str(tmp_path / "b"), *common, "cls.steps=2", "--resume", str(ckpt)]) == 2
    assert capsys.readouterr().err == (f"hetseg: error: {ckpt}: at step 3, past this stage's 2 steps; fix: set the "
                                       "stage's steps to 3 or more, or drop --resume\n")
    assert not (tmp_path / "b").exists()  # a checkpoint within the budget resumes: the kill-point tests above

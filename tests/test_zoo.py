"""Shipped models (hetseg.zoo): ship -> list -> load -> predict, refusals in one line, and the
real-photo model that ships (voc-lite0). The mechanics use a tiny random-weight model shipped into
a temporary zoo.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hetseg import zoo
from hetseg.cli import main
from hetseg.config import Config
from hetseg.engine.checkpoint import load_model, save_model
from hetseg.errors import HetsegError
from hetseg.models import create_model

VOC = Path(__file__).parent / "fixtures" / "voc2012" / "VOCdevkit" / "VOC2012"
TINY = dict(num_classes=20, encoder="efficientnet_lite0_tiny", head_width=16, bridge_dim=24, decoder_width=16,
            input_size=128)


def tiny_run(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    net = create_model("decouplednet_enc", **TINY)
    net.eval()
    names = ["background", *(f"c{i}" for i in range(20))]
    save_model(tmp_path / "run", net, Config(), names, {"stages": {}})
    return tmp_path / "run"


def test_ship_halves_weights_and_predicts_like_the_run(tmp_path):
    run = tiny_run(tmp_path)
    out = zoo.ship(run, "tiny", {"summary": "a test model", "command": "none"}, dest=tmp_path / "zoo")
    on_disk = load_file(str(out / "model.safetensors"))
    assert {v.dtype for v in on_disk.values() if v.is_floating_point()} == {torch.float16}
    assert json.loads((out / "model.json").read_text())["shipped"]["summary"] == "a test model"
    # the library call too: ship's own name and dtype win over what ``shipped`` says (read_about refuses them)
    other = zoo.ship(run, "tiny2", {"name": "x", "dtype": "float32"}, dest=tmp_path / "zoo")
    assert {k: json.loads((other / "model.json").read_text())["shipped"][k] for k in ("name", "dtype")} == \
        {"name": "tiny2", "dtype": "float16"}
    a, _, _ = load_model(run)
    b, _, _ = load_model(out)
    assert all(p.dtype == torch.float32 for p in b.parameters())  # cast back on load
    x = torch.randn(2, 3, 128, 128)
    pa, pb = a.predict(x, labels=[[1], [2, 3]]), b.predict(x, labels=[[1], [2, 3]])
    assert torch.allclose(pa.probs, pb.probs, atol=2e-2)
    assert not torch.allclose(pa.probs, torch.zeros_like(pa.probs))


def test_unknown_model_name_is_one_line(tmp_path, capsys):
    with pytest.raises(HetsegError, match="no shipped model"):
        zoo.resolve("no-such-model")
    with pytest.raises(HetsegError):
        zoo.resolve("../zoo")
    assert main(["predict", "--model", "no-such-model", "--input", str(VOC / "JPEGImages"),
                 "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hetseg: error: --model no-such-model") and "fix:" in err
    assert not (tmp_path / "o").exists()


def test_models_lists_what_ships(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    assert main(["models"]) == 0
    assert capsys.readouterr().out.strip() == "no shipped models"
    zoo.ship(tiny_run(tmp_path), "tiny", {"summary": "a test model"}, dest=tmp_path / "zoo")
    assert main(["models"]) == 0
    assert capsys.readouterr().out.strip() == "tiny: a test model"
    # shipped without --about: listed with what it is, not with an empty description (a user-journey review)
    zoo.ship(tiny_run(tmp_path / "b"), "bare", {}, dest=tmp_path / "zoo")
    assert main(["models"]) == 0
    bare = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("bare:"))
    assert "decouplednet_enc from run run (no --about" in bare
    out = tmp_path / "pred"
    assert main(["predict", "--model", "tiny", "--input", str(VOC / "JPEGImages" / "2007_000039.jpg"),
                 "--output", str(out)]) == 0
    assert Image.open(out / "2007_000039.png").size == Image.open(VOC / "JPEGImages" / "2007_000039.jpg").size


@pytest.mark.parametrize("about,says", [
    ("[1, 2]", "expected a JSON object"),
    ('{"name": "other", "summary": "s"}', "sets name, which ship records itself"),  # was written over --name
    ('{"dtype": "float32"}', "sets dtype"),  # the weights are float16 whatever it said
    ('{"summary": ["a", "list"]}', "'summary' is not a string"),
    ('{"summary": "s", "scores": {"miou": NaN}}', "NaN is not JSON"),  # was written on into model.json
    (None, "not a regular file"),  # a pipe: read_text() blocked for ever
])
def test_ship_refuses_a_bad_about_file_in_one_line(tmp_path, monkeypatch, capsys, about, says):
    import os

    from conftest import fails_instead_of_hanging

    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")  # were the check to break, nothing lands in the package
    run = tiny_run(tmp_path)
    path = tmp_path / "about.json"
    if about is None:
        os.mkfifo(path)
    else:
        path.write_text(about)
    with fails_instead_of_hanging():
        assert main(["ship", "--run", str(run), "--name", "x", "--about", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "fix:" in err
    assert "x" not in zoo.names() and not (tmp_path / "zoo" / "x").exists()


def test_models_names_a_hand_edited_shipped_block_in_one_line(tmp_path, monkeypatch, capsys):
    """A model.json whose "shipped" is not an object was an AttributeError traceback from `hetseg models`."""
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    out = zoo.ship(tiny_run(tmp_path), "tiny", {"summary": "a test model"}, dest=tmp_path / "zoo")
    info = json.loads((out / "model.json").read_text())
    info["shipped"] = ["hand", "edited"]
    (out / "model.json").write_text(json.dumps(info))
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out / 'model.json'}: 'shipped' is" in err and "fix:" in err


def test_ship_never_overwrites_without_replace(tmp_path):
    run = tiny_run(tmp_path)
    out = zoo.ship(run, "m", {"summary": "first"}, dest=tmp_path / "zoo")
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(HetsegError, match="already shipped.*--replace"):
        zoo.ship(run, "m", {"summary": "second"}, dest=tmp_path / "zoo")
    assert (out / "model.safetensors").read_bytes() == before  # untouched
    assert json.loads((out / "model.json").read_text())["shipped"]["summary"] == "first"
    zoo.ship(run, "m", {"summary": "second"}, dest=tmp_path / "zoo", replace=True)
    assert json.loads((out / "model.json").read_text())["shipped"]["summary"] == "second"


@pytest.mark.parametrize("damage", ["truncated", "missing", "folder"])
def test_ship_refuses_a_damaged_run_in_one_line(tmp_path, monkeypatch, capsys, damage):
    """ship reads the run as predict does: a run predict would refuse is never shipped (it once read
    the weights with a bare safetensors call and printed a traceback)."""
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    run = tiny_run(tmp_path)
    weights = run / "model.safetensors"
    data = weights.read_bytes()
    weights.unlink()
    if damage == "truncated":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "folder":
        weights.mkdir()
    assert main(["ship", "--run", str(run), "--name", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hetseg: error: ") and "fix:" in err
    assert not (tmp_path / "zoo" / "x").exists()


@pytest.mark.parametrize("name", ["backbone-cpu", "a b", "caf\u00e9", "__pycache__", "_x"])
def test_ship_refuses_names_that_are_not_plain_or_not_free(tmp_path, monkeypatch, capsys, name):
    """The shipped backbone's folder is not a model slot; names are what the message promises."""
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    (tmp_path / "zoo" / "backbone-cpu").mkdir(parents=True)
    (tmp_path / "zoo" / "backbone-cpu" / "backbone.safetensors").write_bytes(b"keep")
    assert main(["ship", "--run", str(tiny_run(tmp_path)), "--name", name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hetseg: error: --name ") and name in err and "fix:" in err
    assert sorted(p.name for p in (tmp_path / "zoo").iterdir()) == ["backbone-cpu"]
    assert sorted(p.name for p in (tmp_path / "zoo" / "backbone-cpu").iterdir()) == ["backbone.safetensors"]


def test_the_shipped_real_photo_model_segments_a_photo(tmp_path):
    """voc-lite0 (README, "Real photos"): fixture 2007_000033 is one of its *weak* training images
    (its image labels trained the classifier; its mask was never used). A random or untrained
    model fails this; the model's score on its held-out evaluation photos is in model.json."""
    assert "voc-lite0" in zoo.names()
    about = zoo.describe("voc-lite0")
    for key in ("summary", "command", "splits", "scores", "training_images"):
        assert key in about, key
    assert 0.0 < about["scores"]["eval_miou"] < about["scores"]["eval_miou_gt_labels"] <= 1.0
    photo = VOC / "JPEGImages" / "2007_000033.jpg"
    assert main(["predict", "--model", "voc-lite0", "--input", str(photo), "--output", str(tmp_path / "o"),
                 "--overlay"]) == 0
    pred = Image.open(tmp_path / "o" / "2007_000033.png")
    assert pred.mode == "P" and pred.size == Image.open(photo).size  # original size, palette PNG
    assert (tmp_path / "o" / "figures" / "2007_000033.png").is_file()
    p, gt = np.array(pred), np.array(Image.open(VOC / "SegmentationClass" / "2007_000033.png"))
    valid = gt != 255
    iou = ((p == 1) & (gt == 1)).sum() / (((p == 1) | (gt == 1)) & valid).sum()  # 1 = aeroplane
    assert iou > 0.3, iou
    assert json.loads((tmp_path / "o" / "scores.json").read_text())["images"][0]["identified"] == ["aeroplane"]


def test_checkpoint_names_a_run_not_loose_weights(tmp_path, capsys):
    """--checkpoint RUN/model.safetensors is the run; any other file was once swapped for its folder's
    model.safetensors without a word, so a copy of other weights scored the run's."""
    run = tiny_run(tmp_path)
    (run / "other.safetensors").write_bytes((run / "model.safetensors").read_bytes())
    photo = str(VOC / "JPEGImages" / "2007_000039.jpg")
    argv = ["predict", "--input", photo, "--output", str(tmp_path / "o")]
    assert main([*argv, "--checkpoint", str(run / "other.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hetseg: error: {run / 'other.safetensors'}: not a run's")
    assert "fix:" in err and not (tmp_path / "o").exists()
    assert main([*argv, "--checkpoint", str(run / "model.safetensors")]) == 0
    assert (tmp_path / "o" / "2007_000039.png").is_file()

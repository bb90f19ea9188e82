"""The shipped CPU-scale backbone (``hetseg bench backbone``, ``model.backbone=shipped``).

A test-sized run of the real command writes float16 weights + a record whose checksum matches;
``model.backbone=shipped`` loads exactly those weights into a fresh model; paper scale is refused
in one line.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import FMNIST_DIR
from hetseg import zoo
from hetseg.config import Config
from hetseg.engine.context import init_weights
from hetseg.errors import HetsegError
from hetseg.methods import get_method

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from hetseg.bench.backbone import run_backbone

    if not (FMNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"Fashion-MNIST not found at {FMNIST_DIR}; run 'make fashion-mnist'")
    base = tmp_path_factory.mktemp("backbone")
    assert run_backbone(str(base / "runs"), str(base / "out"), base / "zoo", budget="tiny",
                        fashion_mnist_dir=str(FMNIST_DIR)) == 0
    return base


def test_tiny_run_ships_float16_weights_with_a_matching_record(tiny):
    weights = tiny / "zoo" / "backbone.safetensors"
    state = load_file(str(weights))
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    assert not any(k.startswith("score") for k in state)  # the item score layer is never shipped
    rec = json.loads((tiny / "zoo" / "backbone.json").read_text())
    assert rec["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert rec["command"] == f"hetseg bench backbone --budget tiny --runs {tiny / 'runs'}" and rec["steps"] == 4
    assert rec["data"]["held_out_items"] == 16 and "never t10k" in rec["data"]["items"]
    # the held-out checksum names the last 16 Fashion-MNIST train items, pixels and labels
    from hetseg.data.scenes import load_fashion_mnist

    x, y, _, _ = load_fashion_mnist(str(FMNIST_DIR))
    want = hashlib.sha256(x[-16:].astype("uint8").tobytes() + y[-16:].astype("int64").tobytes()).hexdigest()
    assert rec["data"]["held_out_sha256"] == want
    assert rec["curve"]["train_loss"] and rec["curve"]["held_out_acc"]
    for name in ("backbone.json", "backbone.md", "backbone.png"):
        assert (tiny / "out" / name).is_file(), name
    md = (tiny / "out" / "backbone.md").read_text()
    assert f"`{want[:12]}…`" in md
    assert "sha256" in md and str(tiny / "zoo" / "backbone.safetensors") in md  # the file it wrote, not the package's
    assert "the shipped files are untouched" in md and "src/hetseg/zoo" not in md


def test_model_backbone_shipped_loads_those_weights(tiny, monkeypatch):
    monkeypatch.setattr(zoo, "BACKBONE_DIR", tiny / "zoo")
    state = load_file(str(tiny / "zoo" / "backbone.safetensors"))
    cfg = Config(run_dir=str(tiny / "fresh")).override(["model.backbone=shipped"])
    net = get_method("decouplednet").build(cfg)
    assert init_weights(net, cfg, None) == "backbone shipped"
    for k, v in net.classifier.encoder.state_dict().items():
        assert torch.equal(v, state[f"encoder.{k}"].to(v.dtype)), k
    assert torch.equal(net.classifier.fc7.weight, state["fc7.weight"].float())


def test_shipped_backbone_at_paper_scale_is_one_line():
    with pytest.raises(HetsegError, match="only model.scale=cpu has a shipped backbone") as e:
        zoo.shipped_backbone("paper")
    assert "\n" not in str(e.value) and "fix:" in str(e.value)


def test_missing_shipped_backbone_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "BACKBONE_DIR", tmp_path)
    with pytest.raises(HetsegError, match="the shipped backbone is missing.*hetseg bench backbone") as e:
        zoo.shipped_backbone("cpu")
    assert "\n" not in str(e.value)


def test_curve_reads_the_log_kept_from_before_a_resume(tmp_path):
    """A resumed stage's earlier rows (metrics.part1.csv) count up to where the resumed log starts."""
    from hetseg.bench.curves import curve

    (tmp_path / "metrics.part1.csv").write_text("epoch,step,train/loss\n0,9,4.0\n0,19,3.0\n0,29,9.0\n")
    (tmp_path / "metrics.csv").write_text("epoch,step,train/loss,val/acc\n0,29,2.0,\n0,39,1.0,0.5\n")
    got = curve(tmp_path, every=20)
    # Steps 9 and 19 from the kept part; 29 (replayed after the resume) from the new log, not 9.0.
    assert got["train_loss"] == [[20, 3.5], [40, 1.5]]
    assert got["held_out_acc"] == [[40, 0.5]]


def test_curve_keeps_one_point_for_the_end_of_stage_evaluation(tmp_path):
    """The engine logs the last evaluation at the last step and again one step later; one point."""
    from hetseg.bench.curves import curve

    (tmp_path / "metrics.csv").write_text(
        "epoch,step,train/loss,val/acc\n0,9,2.0,\n0,9,,0.4\n0,19,1.0,\n0,19,,0.8\n1,20,,0.8\n")
    assert curve(tmp_path, every=10)["held_out_acc"] == [[10, 0.4], [20, 0.8]]


@pytest.fixture(scope="module")
def tiny_resnet(tmp_path_factory):
    from hetseg.bench.backbone import run_backbone

    base = tmp_path_factory.mktemp("backbone_resnet")
    assert run_backbone(str(base / "runs"), str(base / "out"), base / "zoo", budget="tiny",
                        fashion_mnist_dir=str(FMNIST_DIR), family="resnet") == 0
    return base


def test_resnet_family_ships_dis_encoder_only(tiny_resnet, monkeypatch):
    """DIS's backbone holds its ResNet encoder and nothing else (the item head stays in the run)."""
    state = load_file(str(tiny_resnet / "zoo" / "backbone.safetensors"))
    assert state and all(k.startswith("encoder.") for k in state)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    rec = json.loads((tiny_resnet / "zoo" / "backbone.json").read_text())
    assert rec["command"] == f"hetseg bench backbone --family resnet --budget tiny --runs {tiny_resnet / 'runs'}" and rec["model"] == "dis"
    assert (tiny_resnet / "out" / "backbone_resnet.md").is_file()
    assert (tiny_resnet / "runs" / "pre_head.safetensors").is_file()
    # model.backbone=shipped picks the family of the model: DIS gets these weights ...
    monkeypatch.setattr(zoo, "RESNET_BACKBONE_DIR", tiny_resnet / "zoo")
    cfg = Config(run_dir=str(tiny_resnet / "fresh")).override(["model.name=dis", "model.backbone=shipped"])
    net = get_method("dis").build(cfg)
    fresh_heads = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("encoder.")}
    assert init_weights(net, cfg, None) == "backbone shipped"
    for k, v in net.encoder.state_dict().items():
        assert torch.equal(v, state[f"encoder.{k}"].to(v.dtype)), k
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in fresh_heads.items())  # heads untouched


def test_a_backbone_of_the_other_family_is_one_line(tiny_resnet):
    """A ResNet backbone given to a VGG model (and back) is refused in one line, nothing copied."""
    for name, path in (("decouplednet", tiny_resnet / "zoo"), ("dis", zoo.BACKBONE_DIR)):
        cfg = Config(run_dir=str(tiny_resnet / f"x_{name}")).override([f"model.name={name}", f"model.backbone={path}"])
        net = get_method(name).build(cfg)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        with pytest.raises(HetsegError, match="backbone does not fit") as e:
            init_weights(net, cfg, None)
        assert "\n" not in str(e.value)
        assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def test_a_tiny_run_never_writes_the_committed_results(tmp_path, monkeypatch):
    """With the default --out (benchmarks/results) a tiny run from the repository root replaced backbone.{json,md,png}."""
    from hetseg.bench.backbone import run_backbone

    monkeypatch.chdir(tmp_path)
    assert run_backbone("runs/bb", "benchmarks/results", tmp_path / "zoo", budget="tiny",
                        fashion_mnist_dir=str(FMNIST_DIR)) == 0
    assert not (tmp_path / "benchmarks").exists() and (tmp_path / "runs" / "bb" / "results" / "backbone.md").is_file()

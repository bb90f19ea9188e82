"""DIS (docs/DIS.md): shapes at both scales, parameter count, torchvision ResNet-101 import, and the
iterative inference contract (loss goes down on a trained model, weights untouched, tags constrain,
batched == per image) plus predict's SegOutput contract."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

import hetseg.models.dis  # noqa: F401  (registers "dis")
from hetseg.models.base import create_model
from hetseg.models.dis import DIS, reconstruction_loss
from hetseg.models.resnet import ResNetEncoder, load_torchvision_resnet

pytestmark = pytest.mark.usefixtures("one_thread")

K = 3
SIZE = 64  # CPU-scale topology at 64 px: u1 is 8 x 8, enough for shapes and cheaper than 96
COLOURS = torch.tensor([[1.5, -1.0, -1.0], [-1.0, 1.5, -1.0], [-1.0, -1.0, 1.5]])


def synthetic_batch(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n images (n, 3, S, S) of 1-2 coloured squares (class = colour) on a noisy dark background ->
    images, mask (n, S, S) in mask indices, tags (n, K) float."""
    images = 0.3 * torch.randn(n, 3, SIZE, SIZE, generator=gen) - 0.5
    mask = torch.zeros(n, SIZE, SIZE, dtype=torch.long)
    tags = torch.zeros(n, K)
    for i in range(n):
        for _ in range(int(torch.randint(1, 3, (1,), generator=gen))):
            c = int(torch.randint(0, K, (1,), generator=gen))
            side = int(torch.randint(16, 33, (1,), generator=gen))
            y, x = (int(v) for v in torch.randint(0, SIZE - side + 1, (2,), generator=gen))
            images[i, :, y:y + side, x:x + side] = COLOURS[c][:, None, None] + 0.1 * torch.randn(
                3, side, side, generator=gen)
            mask[i, y:y + side, x:x + side] = c + 1
            tags[i, c] = 1.0
    return images, mask, tags


@pytest.fixture(scope="module")
def trained() -> DIS:
    """CPU-scale DIS trained jointly (labelmap CE + tag BCE + reconstruction) for 60 small steps."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = create_model("dis", num_classes=K, scale="cpu")
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(60):
        images, mask, tags = synthetic_batch(8, gen)
        out = net(images)
        small = mask[:, 4::8, 4::8]  # cell centres: the labelmap target at feature resolution
        loss = (F.cross_entropy(out.logits, small)
                + F.binary_cross_entropy_with_logits(out.tag_logits, tags)
                + 10 * reconstruction_loss(out.recon, images).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.zero_grad(set_to_none=True)
    return net.eval()


@pytest.fixture(scope="module")
def val_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return synthetic_batch(6, torch.Generator().manual_seed(123))


# ---- shapes, sizes, registry -----------------------------------------------------------------

def test_cpu_scale_shapes_and_registry():
    net = create_model("dis", num_classes=10, scale="cpu")
    assert isinstance(net, DIS) and net.model_name == "dis"
    json.dumps(net.model_kwargs)  # rebuildable from model.json
    out = net(torch.randn(2, 3, 96, 96))
    assert out.u1.shape == (2, 256, 12, 12)
    assert out.v1.shape == (2, 256)
    assert out.logits.shape == (2, 11, 12, 12)
    assert out.recon.shape == (2, 3, 12, 12)
    assert out.tag_logits.shape == (2, 10)
    assert (out.u1 >= 0).all() and (out.v1 >= 0).all()  # ReLU outputs: the range refine keeps


def test_paper_scale_shapes_and_parameter_count():
    # The meta device gives exact shapes and counts of the 45 M-parameter model at no cost.
    with torch.device("meta"):
        net = DIS(num_classes=20, scale="paper")
        out = net(torch.empty(1, 3, 360, 360))
    assert out.u1.shape == (1, 2048, 45, 45)
    assert out.v1.shape == (1, 2048)
    assert out.logits.shape == (1, 21, 45, 45)
    assert out.recon.shape == (1, 3, 45, 45)
    assert out.tag_logits.shape == (1, 20)
    n_encoder = sum(p.numel() for p in net.encoder.parameters())
    n_total = sum(p.numel() for p in net.parameters())
    assert n_encoder == 42_500_160  # torchvision resnet101 without fc
    assert abs(n_total / 45.5e6 - 1) < 0.03, n_total


# ---- torchvision ResNet-101 import ---------------------------------------------------------------

def test_torchvision_resnet101_file_loads(tmp_path):
    enc = ResNetEncoder("paper")
    own = enc.state_dict()
    # torchvision resnet101's state dict: these 624 entries plus fc.weight / fc.bias.
    assert len(own) == 624
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight",
                "layer1.0.downsample.1.bias", "layer3.22.conv3.weight",
                "layer4.2.bn3.num_batches_tracked", "layer4.0.conv2.weight"):
        assert key in own, key
    assert own["layer4.0.conv2.weight"].shape == (512, 512, 3, 3)
    state = {k: (torch.randn_like(v) if v.is_floating_point() else v + 7) for k, v in own.items()}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    path = tmp_path / "resnet101.pth"
    torch.save(state, path)
    del state, own
    keys = load_torchvision_resnet(enc, path)
    assert len(keys) == 624 and not any(k.startswith("fc.") for k in keys)
    again = torch.load(path, weights_only=True)
    for key in ("layer3.17.conv2.weight", "layer4.0.downsample.1.running_mean", "bn1.num_batches_tracked"):
        assert torch.equal(enc.state_dict()[key], again[key]), key


def test_wrong_resnet_file_is_refused(tmp_path):
    small = ResNetEncoder("cpu")
    path = tmp_path / "cpu.pth"
    torch.save(small.state_dict(), path)
    with pytest.raises(ValueError, match="conv1.weight"):  # a CPU-scale file into ResNet-101
        load_torchvision_resnet(ResNetEncoder("paper"), path)

    target = ResNetEncoder("cpu")
    before = copy.deepcopy(target.state_dict())
    state = small.state_dict()
    state["layer3.1.conv2.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"layer3\.1\.conv2\.weight"):
        load_torchvision_resnet(target, path)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # untouched

    del state["layer3.1.conv2.weight"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing key 'layer3\.1\.conv2\.weight'"):
        load_torchvision_resnet(target, path)

    state = small.state_dict()
    state["layer3.2.conv1.weight"] = torch.zeros(1)  # a deeper net's extra block
    torch.save(state, path)
    with pytest.raises(ValueError, match="unexpected key"):
        load_torchvision_resnet(target, path)


# ---- iterative inference -------------------------------------------------------------------------

def test_refine_lowers_reconstruction_loss_on_trained_model(trained, val_batch):
    images = val_batch[0]
    _, losses = trained.refine(images, steps=10)
    assert losses.shape == (11, images.shape[0])
    assert (losses[1:] <= losses[:-1]).all()  # accept/backtrack: never up
    assert (losses[10] < 0.99 * losses[0]).all(), losses[[0, 10]]


def test_refine_zero_steps_is_forward(trained, val_batch):
    images = val_batch[0]
    with torch.no_grad():
        out = trained(images)
    logits, losses = trained.refine(images, steps=0)
    torch.testing.assert_close(logits, out.logits)
    torch.testing.assert_close(losses[0], reconstruction_loss(out.recon, images))


def test_refine_fixes_weights_and_sets_no_grad(trained, val_batch):
    before = copy.deepcopy(trained.state_dict())
    with torch.no_grad():  # enable_grad inside: still refines under no_grad
        _, losses = trained.refine(val_batch[0], steps=3)
    assert (losses[3] < losses[0]).all()
    after = trained.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in trained.parameters())


def test_tags_constrain_labelmap(trained, val_batch):
    images, _, tags = val_batch
    free, _ = trained.refine(images, steps=3)
    # Exclude exactly the classes each image contains: the free argmax shows them, the
    # constrained one may use only background (and the absent classes).
    allowed = tags < 0.5
    logits, _ = trained.refine(images, steps=3, tags=allowed)
    free_lab, lab = free.argmax(1), logits.argmax(1)
    excluded_seen = 0
    for i in range(images.shape[0]):
        for c in torch.nonzero(~allowed[i]).flatten().tolist():
            excluded_seen += int((free_lab[i] == c + 1).any())
            assert not (lab[i] == c + 1).any()
        assert torch.isneginf(logits[i, 1:][~allowed[i]]).all()
    assert excluded_seen > 0  # the constraint changed something


def test_batched_refine_equals_per_image(trained, val_batch):
    net = copy.deepcopy(trained).double()
    images = val_batch[0][:4].double()
    tags = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.bool)
    for t in (None, tags):
        logits, losses = net.refine(images, steps=6, tags=t)
        for i in range(images.shape[0]):
            li, si = net.refine(images[i:i + 1], steps=6, tags=None if t is None else t[i:i + 1])
            torch.testing.assert_close(li, logits[i:i + 1], atol=1e-5, rtol=0)
            torch.testing.assert_close(si[:, 0], losses[:, i], atol=1e-5, rtol=0)


# ---- predict: the SegOutput contract -------------------------------------------------------------

def test_predict_contract(trained, val_batch):
    images, _, tags = val_batch
    n = images.shape[0]
    out = trained.predict(images, threshold=0.5, steps=4)
    assert out.probs.shape == (n, K + 1, SIZE, SIZE)
    torch.testing.assert_close(out.probs.sum(1), torch.ones(n, SIZE, SIZE))
    assert out.class_scores.shape == (n, K)
    assert ((out.class_scores >= 0) & (out.class_scores <= 1)).all()
    assert out.identified == [torch.nonzero(r > 0.5).flatten().tolist() for r in out.class_scores]
    for i, ids in enumerate(out.identified):
        others = [c + 1 for c in range(K) if c not in ids]
        assert (out.probs[i, others] == 0).all()
    assert out.extras["recon"].shape == (n, 3, SIZE // 8, SIZE // 8)
    assert out.extras["recon_loss"].shape == (5, n)
    assert out.label_map.shape == (n, SIZE, SIZE)
    # The trained tag head finds the squares' colours on most images.
    assert (out.class_scores > 0.5).eq(tags > 0.5).float().mean() > 0.7

    labels = [[0], [], [1, 2], [2], [0, 1, 2], [1]]
    forced = trained.predict(images, labels=labels, threshold=0.5, steps=2)
    assert forced.identified == labels
    torch.testing.assert_close(forced.class_scores, out.class_scores)  # scores are still the model's
    assert (forced.probs[1, 0] == 1).all()  # nothing identified: all background
    assert (forced.probs[0, 2:] == 0).all() and (forced.probs[3, 1:3] == 0).all()

    none = trained.predict(images, threshold=1.0)
    assert none.identified == [[]] * n and (none.label_map == 0).all()


def test_refining_predict_runs_under_inference_mode(trained, val_batch):
    """torch.inference_mode() is the usual way to serve a model; DIS's refinement needs gradients on its
    features and failed there ("element 0 of tensors does not require grad"), with the run default t_ts = 30."""
    images = val_batch[0][:2]
    want = trained.predict(images, threshold=0.5, steps=3)
    with torch.inference_mode():
        got = trained.predict(images, threshold=0.5, steps=3)
        inside = trained.predict(images.clone(), threshold=0.5, steps=3)  # an inference tensor as input
    torch.testing.assert_close(got.probs, want.probs)
    torch.testing.assert_close(inside.probs, want.probs)


def test_model_resnet_weights_start_a_dis_run_and_a_wrong_key_or_file_is_one_line(tmp_path):
    """``model.resnet_weights`` is how a DIS run starts from torchvision ImageNet ResNet weights (paper
    scale; here a CPU-scale encoder file of the same format). DIS given only ``model.vgg_weights``, a VGG
    model given only ``model.resnet_weights``, a missing file and a file that does not fit are each
    refused in one line (the first used to end in a TypeError traceback, and the paper config trained
    ResNet-101 from random weights)."""
    from hetseg.config import Config
    from hetseg.engine.context import init_weights
    from hetseg.errors import HetsegError
    from hetseg.methods import get_method

    source = ResNetEncoder("cpu")
    with torch.no_grad():
        for v in source.parameters():
            v.add_(1.0)  # differs from any seeded start
    path = tmp_path / "resnet.pth"
    torch.save(source.state_dict(), path)
    cfg = Config(run_dir=str(tmp_path / "run")).override(["model.name=dis", f"model.resnet_weights={path}",
                                                          "model.vgg_weights=also-given-for-the-vgg-family.pth"])
    net = get_method("dis").build(cfg)
    assert init_weights(net, cfg, None) == f"resnet_weights {path}"
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in net.encoder.state_dict().items())

    cases = [(["model.name=dis", "model.vgg_weights=vgg.pth"], "model.vgg_weights=vgg.pth: method 'dis' has a ResNet"),
             (["model.name=decouplednet", f"model.resnet_weights={path}"], "has a VGG-16 encoder"),
             (["model.name=dis", f"model.resnet_weights={tmp_path / 'none.pth'}"], "no such file"),
             (["model.name=dis", f"model.resnet_weights={tmp_path / 'bad.pth'}"], "cannot load it into model 'dis'"),
             (["model.name=decouplednet", "model.encoder=efficientnet_lite0_tiny", f"model.resnet_weights={path}"],
              "model.encoder=efficientnet_lite0_tiny starts from its own ImageNet weights.*fix: drop model.resnet_weights")]
    (tmp_path / "bad.pth").write_bytes(b"not a torch file")
    for overrides, message in cases:
        cfg = Config(run_dir=str(tmp_path / "run")).override(overrides)
        net = get_method(cfg.model.name).build(cfg)
        with pytest.raises(HetsegError, match=message) as e:
            init_weights(net, cfg, None)
        assert "\n" not in str(e.value) and "; fix: " in str(e.value)
        assert "weights_only" not in str(e.value)  # torch's own advice (weights_only=False) is not passed on

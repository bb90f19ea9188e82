"""One battery for every registered model (in the spirit of segmentation_models_pytorch's
BaseModelTester): a model gets these tests by being registered in hetseg.models.

Per model: the predict contract at CPU scale (shapes, scores, identified labels, labels= override),
construction at paper scale (on the meta device: no memory, no time), backward reaching every
trainable parameter of a training loss, and save -> load (safetensors + model.json) giving equal
outputs. A registered model without an entry in LOSSES fails the battery, on purpose.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hetseg.config import Config
from hetseg.engine.checkpoint import load_model, save_model
from hetseg.models import MODELS, create_model
from hetseg.models.base import MasksOnlySegmenter

pytestmark = pytest.mark.usefixtures("one_thread")

K = 4
CPU_KW = {"decouplednet_enc": {"encoder": "efficientnet_lite0_tiny", "input_size": 96},
          "maskonly_enc": {"encoder": "efficientnet_lite0_tiny", "input_size": 96}}
PAPER_KW = {"decouplednet_enc": {}, "maskonly_enc": {}}  # their default encoder is the paper-size one


def _multiclass_target(x):
    return torch.randint(0, K + 1, (x.shape[0], *x.shape[-2:]))


def _decoupled_loss(net, x):
    net.classifier.eval()  # frozen in stage seg (the closed-form saliency needs fixed BN statistics)
    w = torch.rand(x.shape[0], 2, K)
    return net.segment(x, w).float().square().mean()


def _dis_loss(net, x):
    out = net(x)
    return out.logits.float().square().mean() + out.recon.square().mean() + out.tag_logits.square().mean()


LOSSES = {
    "decouplednet": _decoupled_loss,
    "decouplednet_enc": _decoupled_loss,
    "deconvnet": lambda net, x: F.cross_entropy(net(x), _multiclass_target(x)),
    "maskonly_enc": lambda net, x: F.cross_entropy(net(x), _multiclass_target(x)),
    "transfernet": lambda net, x: net.segment(x, torch.randint(0, K, (x.shape[0], 2))).square().mean()
    + net(x, torch.randint(0, K, (x.shape[0],))).cls_logits.square().mean(),
    "baselinenet": lambda net, x: net.segment(x, torch.randint(0, K, (x.shape[0], 2))).square().mean(),
    "dis": _dis_loss,
}
# Parts a model's own training never updates through this loss (trained by another stage/loss).
NOT_REACHED = {"decouplednet": ("classifier.",), "decouplednet_enc": ("classifier.",),
               "transfernet": ("classifier.", "encoder."), "baselinenet": ("classifier.",)}


def build(name: str, paper: bool = False):
    kw = (PAPER_KW if paper else CPU_KW).get(name, {"scale": "paper" if paper else "cpu"})
    torch.manual_seed(0)
    return create_model(name, num_classes=K, **kw)


@pytest.fixture(params=sorted(MODELS))
def name(request):
    return request.param


def _x(net, n=2):
    torch.manual_seed(1)
    return torch.randn(n, 3, net.input_size, net.input_size)


def test_predict_contract(name):
    net = build(name).eval()
    x = _x(net)
    out = net.predict(x)
    assert out.probs.shape == (2, K + 1, net.input_size, net.input_size)
    assert torch.isfinite(out.probs).all() and (out.probs >= 0).all()
    assert out.label_map.shape == (2, net.input_size, net.input_size)
    assert len(out.identified) == 2 and all(all(0 <= c < K for c in ls) for ls in out.identified)
    # only a masks-only model has no image-level scores: a label-reading one returning None would skip the checks below
    assert (out.class_scores is None) == isinstance(net, MasksOnlySegmenter)
    if out.class_scores is not None:
        assert out.class_scores.shape == (2, K) and ((out.class_scores >= 0) & (out.class_scores <= 1)).all()
        forced = net.predict(x, labels=[[1], [0, 3]])
        assert forced.identified == [[1], [0, 3]]
        # classes outside the given labels never win a pixel: they get no probability at all, the given one does
        assert set(forced.label_map[0].unique().tolist()) <= {0, 2}
        outside = [c for c in range(K + 1) if c not in (0, 2)]
        assert float(forced.probs[0, outside].abs().max()) == 0.0 and float(forced.probs[0, 2].max()) > 0
        none = net.predict(x, labels=[[], []])
        assert (none.label_map == 0).all()


def test_predict_under_bf16_autocast_returns_float32_scores_computed_in_float32(name):
    """Validation inside a bf16-mixed stage calls predict under autocast. Every model returns float32
    tensors there (DIS and the DecoupledNets returned bf16 scores, TransferNet bf16 extras), and the
    scores are a float32 sigmoid: a bf16 one rounds every score within 0.002 of 0.5 to 0.5 itself, so
    a score just over the threshold was not identified."""
    net = build(name).eval()
    x = _x(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net.predict(x)
    tensors = [out.probs, out.class_scores, *(out.extras or {}).values()]
    floats = [t for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point()]
    assert floats and all(t.dtype == torch.float32 for t in floats)
    ref = net.predict(x)
    # Computed in float32, not cast up from bf16: not all representable in bf16 (unless even the
    # float32 scores are, e.g. the tiny EfficientNet's near-zero logits give exactly 0.5).
    if out.class_scores is not None and not torch.equal(ref.class_scores, ref.class_scores.bfloat16().float()):
        assert not torch.equal(out.class_scores, out.class_scores.bfloat16().float())
    assert out.probs.shape == ref.probs.shape
    if out.class_scores is not None:  # not the maps: a score near the threshold may pick another class set
        torch.testing.assert_close(out.class_scores, ref.class_scores, atol=0.02, rtol=0)


def test_predict_is_eval_mode_and_refuses_what_is_not_an_image_batch(name):
    """As segmentation_models_pytorch's predict: train mode is switched off first (every call used to move the
    BatchNorm running statistics), and a grey, unbatched or integer input is one ValueError (the EfficientNet
    models broadcast a grey image to three channels without a word)."""
    net = build(name).train()
    bn = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    before = [m.running_mean.clone() for m in bn]
    x = _x(net)
    net.predict(x)
    assert not net.training and all(torch.equal(a, m.running_mean) for a, m in zip(before, bn))
    torch.testing.assert_close(net.predict(x).probs, build(name).eval().predict(x).probs)
    for bad in (x[:, :1], x[0], (x * 255).to(torch.uint8)):
        with pytest.raises(ValueError, match=r"images: expected a normalised float tensor \(N, 3, H, W\)"):
            net.predict(bad)
    for bad in (x.clone().index_fill_(0, torch.tensor([1]), float("nan")), x * float("inf")):  # were all background
        with pytest.raises(ValueError, match="images: the tensor holds NaN or inf"):
            net.predict(bad)
    # another float type is computed in the model's own (float64 failed in a conv with a dtype mismatch)
    torch.testing.assert_close(net.predict(x.double()).probs, net.predict(x).probs)
    if net.predict(x).class_scores is not None:  # models with image-level scores read a threshold
        for thr in (float("nan"), 2.0, "0.5"):
            with pytest.raises(ValueError, match="threshold: expected a number in"):
                net.predict(x, threshold=thr)
    kw = (CPU_KW.get(name, {"scale": "cpu"}))
    grey = create_model(name, num_classes=K, in_channels=1, **kw)
    assert grey.predict(x[:, :1]).probs.shape == (2, K + 1, *x.shape[-2:])  # a 1-channel model takes 1 channel


def test_predict_on_an_input_too_small_for_the_network_is_one_valueerror(name):
    """Review s16 (finding 12): DeconvNet raised torch's "Calculated padded input size per channel" where the
    others name the smallest input; every model now says what is too small (a ValueError, not a conv's error).
    Which models refuse and which resize is stated per model, so neither can change silently (review s18)."""
    net = build(name)
    # the VGG models (fc6 as a 7x7 conv, 2x2 at the CPU scale) need 64 px; the any-encoder models and DIS
    # (global pooling, resized output) segment any size at the input's size
    needs_64 = name in ("decouplednet", "deconvnet", "transfernet", "baselinenet")
    assert needs_64 or name in ("decouplednet_enc", "maskonly_enc", "dis"), f"say how {name} treats a small input"
    for side in (8, 50):  # under the first pooling's output / under fc6's kernel at the CPU scale's 2 x 2
        if needs_64:
            with pytest.raises(ValueError, match=rf"input \({side}, {side}\) too small .*need at least 64 px per side"):
                net.predict(torch.randn(1, 3, side, side))
        else:
            assert net.predict(torch.randn(1, 3, side, side)).probs.shape[-2:] == (side, side)


def test_create_model_refuses_a_class_count_that_is_not_one(name):
    """num_classes=0 built a model for some, "10" was stored as a string, -1 ended in torch's "negative dimension"."""
    for bad in (0, -1, "10", 2.0, True, 255, 300):  # 300 came back as class 44 in the uint8 label map
        with pytest.raises(ValueError, match=r"num_classes=.*: expected an integer in \[1, 254\]"):
            create_model(name, num_classes=bad)


def test_paper_scale_builds(name):
    with torch.device("meta"):
        paper = build(name, paper=True)
    cpu = build(name)
    assert sum(p.numel() for p in paper.parameters()) > sum(p.numel() for p in cpu.parameters())
    assert paper.input_size >= cpu.input_size


def test_backward_reaches_every_trainable_parameter(name):
    assert name in LOSSES, f"registered model {name!r} has no training loss in the battery"
    net = build(name).train()
    LOSSES[name](net, _x(net)).backward()
    skip = NOT_REACHED.get(name, ())
    missing = [n for n, p in net.named_parameters()
               if p.requires_grad and not n.startswith(skip) and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient reaches {missing[:5]}"


def test_save_load_round_trip(name, tmp_path):
    net = build(name).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the seeded init: the file must carry the weights
    save_model(tmp_path, net, Config(), ["background"] + [f"c{i}" for i in range(K)], {"threshold": 0.5})
    back, cfg, info = load_model(tmp_path)
    assert info["model"] == name and type(back) is type(net)
    x = _x(net)
    a, b = net.predict(x), back.predict(x)
    torch.testing.assert_close(a.probs, b.probs)
    assert a.identified == b.identified
    # what eval and predict record: the run's threshold, or none for a model that reads none
    from hetseg.engine.evaluate import label_threshold
    from hetseg.models.base import MasksOnlySegmenter

    reads_none = isinstance(back, MasksOnlySegmenter)
    assert label_threshold(back, info, cfg, None) == (None if reads_none else 0.5)
    assert label_threshold(back, info, cfg, 0.3) == (None if reads_none else 0.3)


def test_export_forward_is_predict_as_one_static_graph(name):
    """export_forward (what `hetseg export` traces) gives predict's probs with every class identified
    (threshold 0), with none (1.0; the transfer family falls back to its best class) and in between,
    at batch 3 and 1, the threshold as `hetseg export` passes it (a 0-d tensor) or as a float; a model
    without it says so instead of exporting something else."""
    net = build(name).eval()
    if not net.export_outputs:
        with pytest.raises(NotImplementedError):
            net.export_forward(_x(net))
        return
    for n, thr in ((3, 0.0), (3, 0.5), (3, 1.0), (1, 0.5)):
        x = _x(net, n=n)
        with torch.no_grad():
            outs = net.export_forward(x, torch.tensor(thr) if n > 1 else thr)
        ref = net.predict(x, threshold=thr)
        assert len(outs) == len(net.export_outputs)
        torch.testing.assert_close(outs[0], ref.probs, atol=1e-5, rtol=0)
        if "class_scores" not in net.export_outputs:
            continue
        torch.testing.assert_close(outs[1], ref.class_scores)
        if thr == 0.0:
            assert all(ls == list(range(K)) for ls in ref.identified)
        if thr == 1.0:
            assert all(len(ls) == int(net.label_fallback) for ls in ref.identified)


def test_export_forward_keeps_the_transfer_label_rule():
    """DecoupledNet-transfer's identification (allowed classes only; none over the threshold -> the
    allowed argmax) written with masks in identify_labels gives predict's maps in the static graph too."""
    torch.manual_seed(0)
    net = create_model("decouplednet", num_classes=K, scale="cpu", label_classes=[1, 2], label_fallback=True).eval()
    x = _x(net, n=3)
    for thr in (0.0, 1.0):  # 1.0: nothing passes, every image falls back to its best allowed class
        ref = net.predict(x, threshold=thr)
        assert all(ls and set(ls) <= {1, 2} for ls in ref.identified)
        with torch.no_grad():
            probs, _ = net.export_forward(x, torch.tensor(thr))
        torch.testing.assert_close(probs, ref.probs, atol=1e-5, rtol=0)


def test_load_weights_not_strict_still_needs_a_common_name(tmp_path):
    """strict=False with a file of another model family (a backbone file on a DecoupledNet) loaded nothing."""
    from safetensors.torch import save_file

    from hetseg.engine.checkpoint import load_weights
    from hetseg.errors import HetsegError

    net = build("decouplednet")
    save_file({"head.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(HetsegError, match="weights do not fit this model"):
        load_weights(net, tmp_path / "other.safetensors", strict=False)
    torch.manual_seed(7)  # another model's weights, so that loading them changes this one
    other = create_model("decouplednet", num_classes=K, scale="cpu")
    part = {k: v.contiguous() for k, v in other.state_dict().items() if k.startswith("classifier.")}
    save_file(part, str(tmp_path / "part.safetensors"))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    load_weights(net, tmp_path / "part.safetensors", strict=False)  # a real part still loads: it, and only it
    after = net.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and changed <= set(part) and all(torch.equal(after[k], part[k]) for k in part)

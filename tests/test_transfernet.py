"""TransferNet (issue 5): attention, densified attention, shapes at both scales, inference rules,
alternating-domain data, frozen encoder, and a tiny end-to-end recipe + bench on generated scenes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hetseg.models import BaselineNet, TransferNet, create_model
from hetseg.models.transfer_inference import decision_scores, foreground_probability
from hetseg.models.transfernet import AttentionModel, attend, densify, densify_gram

from conftest import make_scenes


pytestmark = pytest.mark.usefixtures("one_thread")


K = 10  # fashion-scenes object classes, both domains


# ---------------------------------------------------------------- attention ----------------------
@pytest.mark.parametrize("variant", ["code", "paper"])
def test_attention_sums_to_one_over_locations(variant):
    torch.manual_seed(0)
    att = AttentionModel(8, 5, 7, K, 16, variant)
    assert (att.combined is None) == (variant == "paper")
    # the paper's alpha = softmax(W_att(W_feat vec A (.) W_label y) + b): no bias inside the product
    assert (att.feat_embed.bias is None and att.label_embed.bias is None) == (variant == "paper")
    feats = torch.rand(6, 8, 5, 7) * 3
    labels = torch.eye(K)[torch.tensor([0, 1, 2, 3, 9, 9])]
    alpha = att(feats, labels)
    assert alpha.shape == (6, 5, 7) and bool((alpha >= 0).all())
    torch.testing.assert_close(alpha.flatten(1).sum(1), torch.ones(6))
    # the attention depends on the label queried (multiplicative interaction), not only on A
    assert not torch.allclose(alpha[0], att(feats[:1], labels[1:2])[0])
    with pytest.raises(ValueError, match="fixed input size"):
        att(torch.rand(1, 8, 6, 6), labels[:1])


def test_densified_attention_equals_gram_form():
    """d = sum_c z_c A_c with z = sum_i alpha_i A_i equals G alpha, G the Gram matrix (paper App. A)."""
    torch.manual_seed(0)
    feats = torch.rand(3, 16, 6, 6, dtype=torch.float64)
    alpha = torch.softmax(torch.randn(3, 36, dtype=torch.float64), -1).view(3, 6, 6)
    d = densify(feats, attend(feats, alpha))
    assert d.shape == (3, 1, 6, 6)
    torch.testing.assert_close(d, densify_gram(feats, alpha))
    x = feats[0].flatten(1)  # (C, HW): explicit Gram matrix, one image
    torch.testing.assert_close(d[0].flatten(), (x.T @ x) @ alpha[0].flatten())
    # a one-hot attention on location i gives row i of the Gram matrix (the paper's Fig. 6)
    onehot = torch.zeros(1, 6, 6, dtype=torch.float64)
    onehot[0, 2, 3] = 1.0
    torch.testing.assert_close(densify(feats[:1], attend(feats[:1], onehot)).flatten(), (x.T @ x)[2 * 6 + 3])


# ---------------------------------------------------------------- shapes -------------------------
def _check_cpu_shapes(model: nn.Module, size: int = 96) -> None:
    x = torch.randn(2, 3, size, size)
    side = size // 16
    if isinstance(model, TransferNet):
        out = model(x, torch.tensor([1, 7]))
        assert out.alpha.shape == (2, side, side) and out.z.shape == (2, model.scale.c5)
        assert out.dense.shape == (2, 1, side, side) and out.cls_logits.shape == (2, K)
        assert out.seg_logits.shape == (2, 2, size, size)
    else:
        assert model(x, torch.tensor([1, 7])).shape == (2, 2, size, size)
    assert model.segment(x, torch.tensor([[0, 1, 2], [3, 4, 5]])).shape == (2, 3, 2, size, size)
    fo = model.foreground(x, [[1, 4], []], return_maps=True)
    assert fo.fg.shape == (2, K, size, size) and fo.active.sum() == 2 and fo.maps is not None


@pytest.mark.parametrize("name", ["transfernet", "baselinenet"])
def test_shapes_cpu_scale(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=K, scale="cpu").eval()
    with torch.no_grad():
        _check_cpu_shapes(model)


def test_paper_variant_and_input_size():
    torch.manual_seed(0)
    with torch.no_grad():
        _check_cpu_shapes(TransferNet(K, "cpu", attention="paper", input_size=64).eval(), 64)
        _check_cpu_shapes(BaselineNet(K, "cpu", input_size=128).eval(), 128)
    with pytest.raises(ValueError, match="variant"):
        TransferNet(K, "cpu", attention="gated")


def test_shapes_paper_scale_forward_only():
    """320 px: conv5_3 20x20x512 -> 400-way attention -> 1x20x20 densified map -> 320x320 logits."""
    torch.manual_seed(0)
    net = TransferNet(20, "paper").eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 320, 320), torch.tensor([14]))
    assert out.alpha.shape == (1, 20, 20) and out.z.shape == (1, 512) and out.dense.shape == (1, 1, 20, 20)
    assert out.cls_logits.shape == (1, 20) and out.seg_logits.shape == (1, 2, 320, 320)


def test_parameter_counts_paper_scale():
    """Reference §5 with the original's 80 classes (built on the meta device)."""
    with torch.device("meta"):
        net = TransferNet(80, "paper")
        base = BaselineNet(80, "paper")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # TransferNet now also holds the separate classifier (its own count is tested in test_models)
    own = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("classifier."))
    assert count(net.attention.feat_embed) == 209_716_224
    assert count(net.attention) == 211_258_768
    assert count(net.cls_head) == 303_696
    assert count(net.decoder) == 7_675_202
    assert count(net.attention) + count(net.cls_head) + count(net.decoder) == 219_237_666
    assert own == 233_952_354
    assert count(base.decoder) == 7_675_202 and count(base.fc) == 16 * 400 + 400  # 4x4 score map -> 20x20


# ---------------------------------------------------------------- inference rules ----------------
def test_foreground_batched_equals_per_label_forward():
    torch.manual_seed(0)
    for model in (TransferNet(K, "cpu").eval(), BaselineNet(K, "cpu").eval()):
        x = torch.randn(3, 3, 96, 96)
        labels = [[2, 5], [], [9]]
        with torch.no_grad():
            fo = model.foreground(x, labels)
            for i, ls in enumerate(labels):
                for k in ls:
                    single = model(x[i:i + 1], torch.tensor([k]))
                    seg = single.seg_logits if isinstance(model, TransferNet) else single
                    torch.testing.assert_close(fo.fg[i, k], foreground_probability(seg)[0], atol=1e-5, rtol=1e-4)
        assert fo.active.tolist()[1] == [False] * K and float(fo.fg[1].abs().sum()) == 0.0
        with pytest.raises(ValueError, match="outside"):
            model.foreground(x, [[K], [], []])


def test_baselinenet_runs_its_classifier_once_per_inference():
    """BaselineNet's decoder reads the classifier that also picks the labels: predict and the export
    graph hand its output on instead of running it again (TransferNet's decoder reads its own encoder)."""
    torch.manual_seed(0)
    net, x, calls = BaselineNet(K, "cpu").eval(), torch.randn(2, 3, 96, 96), []
    net.classifier.register_forward_hook(lambda *_: calls.append(1))
    out = net.predict(x, threshold=0.0)  # every label identified: every decoder row runs
    assert len(calls) == 1 and all(len(ls) == K for ls in out.identified)
    with torch.no_grad():
        probs, _ = net.export_forward(x, 0.0)
    assert len(calls) == 2
    torch.testing.assert_close(probs, out.probs, atol=1e-5, rtol=1e-4)


def test_background_rule():
    # halving the background: p_fg = 1/3 becomes exactly 0.5
    logits = torch.log(torch.tensor([2 / 3, 1 / 3]))[None, :, None, None]
    torch.testing.assert_close(foreground_probability(logits)[0, 0, 0], torch.tensor(0.5))
    torch.testing.assert_close(foreground_probability(logits, 1.0)[0, 0, 0], torch.tensor(1 / 3))
    fg = torch.tensor([[0.4, 0.7, 0.9], [0.45, 0.2, 0.3]]).reshape(1, 2, 1, 3)  # (N, K=2, 1, W=3)
    # pixel 0: nobody > 0.5 -> bg; pixel 1: class 0; pixel 2: class 0 (class 1 not queried anyway)
    active = torch.tensor([[True, False]])
    labels = decision_scores(fg, active).argmax(1)
    assert labels.tolist() == [[[0, 1, 1]]]
    fg2 = torch.tensor([[0.4, 0.6, 0.9], [0.3, 0.8, 0.95]]).reshape(1, 2, 1, 3)
    assert decision_scores(fg2, torch.tensor([[True, True]])).argmax(1).tolist() == [[[0, 2, 2]]]


def test_identify_labels_threshold_restriction_and_fallback():
    from hetseg.models.base import identify_labels

    class Fixed(nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, x):
            return type("Out", (), {"logits_avg": self.logits})()

    p = torch.tensor([[0.9, 0.7, 0.1, 0.65], [0.99, 0.2, 0.3, 0.1], [0.1, 0.1, 0.1, 0.1]])
    active = identify_labels(p, threshold=0.6, allowed=[1, 2, 3], fallback=True)  # target classes = masks 2, 3, 4
    labels = [torch.nonzero(a).flatten().tolist() for a in active]
    # class index 0 (mask 1) is outside the target classes: never picked, even at 0.99
    assert labels == [[1, 3], [2], [1]]  # row 1: fallback argmax among allowed (0.3 at index 2)
    # the same rule inside the model: its own classifier's scores pick the labels
    net = TransferNet(4, "cpu", label_classes=[1, 2, 3], label_fallback=True).eval()
    net.classifier = Fixed(torch.logit(p))
    out = net.predict(torch.zeros(3, 3, 96, 96), threshold=0.6)
    assert out.identified == [[1, 3], [2], [1]]
    torch.testing.assert_close(out.class_scores, p)


# ---------------------------------------------------------------- data and stages ----------------
@pytest.fixture(scope="module")
def tiny_scenes(tmp_path_factory) -> Path:
    return make_scenes(tmp_path_factory, "tn_scenes", seed=5, num_train=100, num_val=20)


def _cfg(root: Path, run: Path, steps: int = 3):
    from hetseg.config import Config

    return Config(run_dir=str(run)).override([
        f"data.root={root}", "cls.steps=4", "cls.batch_size=8", f"seg.steps={steps}", "seg.batch_size=4",
        "crops.crops_per_subset=2", "crops.proposals=none",
        *[f"transfer.{s}.{k}" for s in ("att", "joint", "baseline") for k in (f"steps={steps}", "batch_size=4")],
    ])


def test_domain_pairs_whole_sub_batches(tiny_scenes):
    from torch.utils.data import DataLoader

    from hetseg.data.classes import FASHION_SOURCE, FASHION_TARGET
    from hetseg.methods.transfernet.data import DomainPairs, domain_rows

    cfg = _cfg(tiny_scenes, tiny_scenes / "unused")
    target, source = domain_rows(cfg, "target", 96), domain_rows(cfg, "source", 96)
    assert {c for _, c in target.rows} <= set(FASHION_TARGET) and {c for _, c in source.rows} <= set(FASHION_SOURCE)
    # one row per (image, label): multi-label images give several rows
    assert len(source) == sum(len(r.labels) for r in source.split.records)
    pairs = DomainPairs(target, source, seed=0)
    xt, yt, xs, ys, ms = next(iter(DataLoader(pairs, batch_size=6, shuffle=True)))
    assert xt.shape == xs.shape == (6, 3, 96, 96) and ms.shape == (6, 96, 96)
    assert set((yt + 1).tolist()) <= set(FASHION_TARGET) and set((ys + 1).tolist()) <= set(FASHION_SOURCE)
    assert set(torch.unique(ms).tolist()) <= {0, 1, 255} and bool((ms == 1).any())
    # A new epoch re-pairs the source rows, reproducibly: another order than epoch 0's, and the same order
    # for a fresh instance moved to that epoch (the pairing is a function of (seed, epoch), not of history).
    def source_order(p):
        return [p[i][3] for i in range(len(p))]

    epoch0 = source_order(pairs)
    pairs.set_epoch(1)
    again = DomainPairs(target, source, seed=0)
    again.set_epoch(1)
    assert source_order(pairs) == source_order(again) != epoch0
    a, b = pairs[0], again[0]
    assert torch.equal(a[2], b[2]) and a[3] == b[3] and torch.equal(a[4], b[4])


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # training_step called without a Trainer
def test_transfer_stages_keep_encoder_frozen(tiny_scenes):
    from torch.utils.data import DataLoader

    from hetseg.config import StageConfig
    from hetseg.methods.transfernet.data import DomainPairs, domain_rows
    from hetseg.methods.transfernet.stages import TransferStage

    torch.manual_seed(0)
    cfg = _cfg(tiny_scenes, tiny_scenes / "unused")
    pairs = DomainPairs(domain_rows(cfg, "target", 96), domain_rows(cfg, "source", 96))
    batch = next(iter(DataLoader(pairs, batch_size=4)))
    net = TransferNet(K, "cpu")
    for phase in ("att", "joint"):
        stage = TransferStage(net, StageConfig(steps=5, lr=1e-3, optimizer="adam", weight_decay=0.0), phase)
        stage.train()
        assert not net.encoder.training and not net.classifier.training and net.attention.training
        before = {n: p.detach().clone() for n, p in net.named_parameters()}
        enc_bn = [b.clone() for b in (*net.encoder.buffers(), *net.classifier.buffers())]
        opt = stage.configure_optimizers()["optimizer"]
        lrs = sorted({g["lr"] for g in opt.param_groups})
        assert lrs == [1e-3, 1e-2, 2e-2]  # cls_score weight x10, bias x20 (reference §3.3)
        loss = stage.training_step(batch, 0)
        loss.backward()
        opt.step()
        changed = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
        assert not any(n.startswith(("encoder.", "classifier.")) for n in changed)
        frozen_bn = (*net.encoder.buffers(), *net.classifier.buffers())
        assert all(torch.equal(a, b) for a, b in zip(enc_bn, frozen_bn))  # BN stats untouched
        assert any(n.startswith("attention.") for n in changed) and any(n.startswith("cls_head.") for n in changed)
        assert any(n.startswith("decoder.") for n in changed) == (phase == "joint")
        opt.zero_grad()


# ---------------------------------------------------------------- end to end ---------------------
TINY_TRANSFER = ["cls.steps=4", "cls.batch_size=8", "seg.steps=3", "seg.batch_size=4", "crops.crops_per_subset=2",
                 *[f"transfer.{s}.{k}" for s in ("att", "joint", "baseline") for k in ("steps=3", "batch_size=4")]]


def test_bench_jobs_trains_seeds_in_workers_and_reports_their_training(tiny_scenes, tmp_path, capfd):
    """--jobs 2: both seeds train in worker processes before this process evaluates; the report keeps
    what the workers measured (their walls), not this process's skip of the finished runs."""
    import re

    from hetseg.bench.transfer import run_transfer

    out, runs = tmp_path / "results", tmp_path / "runs"
    assert run_transfer("cpu", [0, 1], str(out), str(tiny_scenes), str(runs), overrides=TINY_TRANSFER, jobs=2) == 0
    log = capfd.readouterr().out
    trained, evaluated = log.split("[bench transfer] seed 0 ->", 1)  # workers' lines come before evaluation
    worker_walls = sorted(float(w) for w in re.findall(r"\[transfer\] transfernet: ([0-9.]+) s", trained))
    assert len(worker_walls) == 2 and "[bench transfer] seed 1 ->" in evaluated
    rep = json.loads((out / "transfer.json").read_text())
    assert rep["seeds"] == [0, 1] and rep["jobs"] == 2 and rep["command"].endswith("--jobs 2 " + " ".join(TINY_TRANSFER))
    assert all(len(m["miou"]) == 2 for m in rep["methods"].values())
    assert sorted(w["transfernet"] for w in rep["wall_s"]["per_seed"]) == worker_walls
    assert all((runs / f"cpu_s{s}" / "transfernet" / "model.safetensors").is_file() for s in (0, 1))


def test_feature_scale_is_one_over_the_mean_per_image_max_of_the_first_n_rows():
    """calibrate_feature_scale's formula on a stub encoder whose features are its input times the net's
    current scale: the scale is reset to 1 first, only the first n rows are read, batches are joined."""
    from types import SimpleNamespace

    from hetseg.methods.transfernet import calibrate_feature_scale

    class Stub(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("feature_scale", torch.tensor(0.5))  # a previous value, not 1
            self.seen = 0

        def encode(self, x):
            self.seen += len(x)
            return SimpleNamespace(features=x * self.feature_scale)

    def row(peak: float):
        img = torch.zeros(3, 4, 4)
        img[1, 2, 3] = peak
        return img, [1]

    net = Stub()
    # per-image maxima 2 and 6 in the first two rows; the third (100) is beyond n
    assert calibrate_feature_scale(net, [row(2.0), row(6.0), row(100.0)], n=2, batch=1) == pytest.approx(0.25)
    assert net.seen == 2 and float(net.feature_scale) == 1.0


def test_tiny_end_to_end_recipe_and_bench(tiny_scenes, tmp_path):
    from hetseg.bench.transfer import run_transfer
    from hetseg.methods.transfernet.evaluate import METHODS

    out, runs = tmp_path / "results", tmp_path / "runs"
    overrides = TINY_TRANSFER
    assert run_transfer("cpu", [0], str(out), str(tiny_scenes), str(runs), overrides=overrides) == 0
    report = json.loads((out / "transfer.json").read_text())
    assert set(report["methods"]) == set(METHODS)
    for m in METHODS:
        miou = report["methods"][m]["miou"]
        assert len(miou) == 1 and 0.0 <= miou[0] <= 1.0
    assert report["val"]["images"] == len((tiny_scenes / "splits" / "transfer_target_val.txt").read_text().split("\n")) - 1
    assert report["budgets"]["decoder_steps"] == {"transfernet": 3, "baselinenet": 3, "decouplednet_transfer": 3}
    md = (out / "transfer.md").read_text()
    assert "TransferNet-GT" in md and "claims" in md.lower() and "hetseg bench transfer" in md
    assert "| BaselineNet-GT |" in md and "| DecoupledNet-transfer-GT |" in md  # every method beside its -GT
    assert f"meta.json sha256 {report['dataset']['meta_sha256'][:12]}" in md  # the data set the numbers come from
    # and the machine, as Table 1 and DIS record it: this invocation's and the one each seed's record came from
    m = report["machine"]
    label = f"{m['cpu']} ({', '.join(m['cpu_flags']) or 'no AVX2'})"  # the model name alone may hide the vector units
    assert m["cpu"] and {"usable_cpus", "torch", "cpu_flags"} <= set(m) and report["record_machines"] == [label]
    assert f"on {m['usable_cpus']} CPUs ({m['cpu']}); records written on: {label}" in md
    rec = json.loads((runs / "cpu_s0" / "transfer_eval.json").read_text())
    assert rec["machine"]["cpu"] == m["cpu"]
    trained = sum(sum(w.values()) for w in report["wall_s"]["per_seed"]) / 60  # the runs' time, not the report's
    assert f"summed over the runs of every seed (as recorded when they ran): {trained:.1f} min" in md
    # Converged or not: every stage's loss per tenth of its steps (tiny: 3-4 points), in both files.
    losses = report["train_loss"]["0"]
    assert set(losses) == {"classifier/cls", "transfernet/att", "transfernet/joint", "baselinenet/baseline",
                           "decouplednet_transfer/seg"} and all(pts and pts[-1][1] > 0 for pts in losses.values())
    assert "## Training loss per stage" in md and "| 0 | transfernet/joint |" in md
    # Each training session by precision and device: five stages (the shared classifier once), one session each.
    from hetseg.bench.provenance import trained_as_phrase
    from hetseg.engine.train import device_label

    precision = json.loads((runs / "cpu_s0" / "transfernet" / "joint" / "done.json").read_text())["precision"]
    assert report["trained_as"] == {"0": {f"{precision} on {device_label()}": 5}}
    assert trained_as_phrase(report["trained_as"]) in md
    from hetseg.zoo import BACKBONE_DIR

    shipped = json.loads((BACKBONE_DIR / "backbone.json").read_text())["sha256"]
    assert report["backbone"]["sha256"] == shipped and f"(sha256 `{shipped[:12]}…`)" in md  # file + checksum
    assert (out / "transfer_attention.png").stat().st_size > 0
    run = runs / "cpu_s0"
    feature_scale = json.loads((run / "transfernet" / "model.json").read_text())["stages"]["joint"]["feature_scale"]
    # The CPU recipe calibrates s (transfer.feature_scale=0): 1 / mean per-image max of the frozen encoder's
    # conv5_3 over the source rows, recomputed here from the trained run (not the Caffe constant 0.004).
    from hetseg.engine.checkpoint import load_model
    from hetseg.methods.transfernet import calibrate_feature_scale
    from hetseg.methods.transfernet.data import domain_rows

    net, run_cfg, _ = load_model(run / "transfernet")
    assert run_cfg.transfer.feature_scale == 0 and feature_scale != pytest.approx(0.004)
    recomputed = calibrate_feature_scale(net, domain_rows(run_cfg, "source", net.input_size))
    assert feature_scale == pytest.approx(recomputed, rel=1e-4)
    # Re-running skips every finished stage and reproduces the scores exactly.
    assert run_transfer("cpu", [0], str(tmp_path / "again"), str(tiny_scenes), str(runs), overrides=overrides) == 0
    again = json.loads((tmp_path / "again" / "transfer.json").read_text())
    assert {m: again["methods"][m]["miou"] for m in METHODS} == {m: report["methods"][m]["miou"] for m in METHODS}
    assert (tmp_path / "again" / "transfer_attention.png").is_file()  # from records, drawn from seed 0's weights
    # An evaluated seed is reported from its records alone (transfer_eval.json): seeds trained in
    # different sessions need no weights, and another recipe's record is refused, not mixed in.
    for f in runs.rglob("*.safetensors"):
        f.unlink()
    assert run_transfer("cpu", [0], str(tmp_path / "records"), str(tiny_scenes), str(runs), overrides=overrides) == 0
    records = json.loads((tmp_path / "records" / "transfer.json").read_text())
    assert {m: records["methods"][m]["miou"] for m in METHODS} == {m: report["methods"][m]["miou"] for m in METHODS}
    assert records["identification"] == report["identification"] and records["train_loss"] == report["train_loss"]
    assert records["trained_as"] == report["trained_as"]  # from the records' stage summaries
    assert not (tmp_path / "records" / "transfer_attention.png").exists()  # needs weights: not redrawn
    from hetseg.errors import HetsegError

    with pytest.raises(HetsegError, match=r"another recipe \(differs in transfer\.att\.steps\)"):
        run_transfer("cpu", [0], str(tmp_path / "other"), str(tiny_scenes), str(runs),
                     overrides=[*overrides, "transfer.att.steps=4"])


def _crf_case(tiny_scenes):
    """A TransferNet with its own classifier and three target val images of the tiny scenes."""
    from hetseg.config import Config
    from hetseg.methods import load_split
    from hetseg.methods.transfernet.data import transfer_classes

    torch.manual_seed(0)
    cfg = Config().override([f"data.root={tiny_scenes}"])
    val = load_split(cfg, cfg.transfer.val_split)
    val.records = val.records[:3]
    return TransferNet(K, "cpu", label_classes=[c - 1 for c in transfer_classes(cfg)[1]]), val


def test_crf_is_skipped_cleanly_when_absent(tiny_scenes, monkeypatch):
    from hetseg.methods.transfernet import evaluate as T

    monkeypatch.setattr(T, "crf_available", lambda: False)
    net, val = _crf_case(tiny_scenes)
    s = T.evaluate_transfer({"transfernet": net}, val, 11, methods=["transfernet"], crf=True)
    assert list(s) == ["transfernet"]


@pytest.mark.skipif(not __import__("hetseg.methods.transfernet.evaluate", fromlist=["x"]).crf_available(),
                    reason="pydensecrf2 not installed (optional extra 'crf')")
def test_crf_evaluation_scores_the_crf_row_beside_none_other(tiny_scenes):
    """With the crf extra, crf=True scores "<method>+crf" (a visible skip without it; it used to be a branch
    inside the end-to-end test that silently did nothing where the extra is absent)."""
    from hetseg.methods.transfernet import evaluate as T

    net, val = _crf_case(tiny_scenes)
    s = T.evaluate_transfer({"transfernet": net}, val, 11, methods=["transfernet"], crf=True)
    assert list(s) == ["transfernet+crf"] and 0.0 <= s["transfernet+crf"].miou <= 1.0


@pytest.mark.skipif(not __import__("hetseg.methods.transfernet.evaluate", fromlist=["x"]).crf_available(),
                    reason="pydensecrf2 not installed (optional extra 'crf')")
def test_crf_scores_follow_the_image():
    from hetseg.methods.transfernet.evaluate import crf_scores

    img = np.zeros((24, 24, 3), np.uint8)
    img[6:18, 6:18] = 200  # a bright square
    fg = torch.full((2, 24, 24), 0.3)
    fg[0, 6:18, 6:18] = 0.8
    fg[0, 8:10, 8:10] = 0.45  # a weak hole inside the square: the CRF fills it
    s = crf_scores(img, fg, [0])
    assert s.shape == (3, 24, 24) and float(s[2].abs().sum()) == 0.0  # label 1 not queried
    inside = s[1, 6:18, 6:18] > 0
    assert bool(inside.all()) and float((s[1] > 0).float().sum()) == 144


# ---------------------------------------------------------------- CLI hooks ----------------------
def _parse(argv):
    """The parsed command line; an unwired command fails the test (no skip: both commands exist)."""
    from hetseg.cli import _build_parser

    return _build_parser().parse_args(argv)


def test_cli_bench_transfer_is_wired():
    args = _parse(["bench", "transfer", "--seeds", "0", "1"])
    assert args.name == "transfer" and args.seeds == [0, 1] and args.scale == "cpu"


@pytest.mark.usefixtures("fixtures")
def test_cli_data_coco_builds_the_coco60_split(tmp_path, capsys):
    from conftest import FIXTURES

    from hetseg.cli import main
    from hetseg.data.records import read_split

    ice = FIXTURES / "coco" / "icevision"
    argv = ["data", "coco", "--ann", str(ice / "annotations.json"), "--images", str(ice / "images"),
            "--out", str(tmp_path / "coco60"), "--name", "train"]
    _parse(argv)
    assert main(argv) == 0
    # every image with a VOC class dropped, the remaining COCO ids remapped into 21..80 (bear 23 -> 28)
    split = read_split(tmp_path / "coco60" / "splits" / "train.txt", num_classes=81)
    assert [(r.id, r.labels) for r in split.records] == [("000000194216", (28,))]
    assert "1 images" in capsys.readouterr().out


def test_cli_trains_a_transfernet_run_that_eval_and_predict_open(tiny_scenes, tmp_path, capsys):
    """... and eval on the default split (every class) says which split scores its target classes,
    unless the two splits are one file."""
    from hetseg.cli import main

    run = tmp_path / "tn"
    assert main(["train", "--method", "transfernet", "--run-dir", str(run), "--no-progress", f"data.root={tiny_scenes}",
                 "cls.steps=2", "cls.batch_size=4", "transfer.att.steps=2", "transfer.att.batch_size=2",
                 "transfer.joint.steps=2", "transfer.joint.batch_size=2"]) == 0
    info = json.loads((run / "model.json").read_text())
    assert info["model"] == "transfernet" and list(info["stages"]) == ["cls", "att", "joint"] and info["threshold"] == 0.6
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run)]) == 0 and (run / "eval_val.json").is_file()
    err = capsys.readouterr().err
    assert err.count("hetseg: note: a transfernet run segments its target classes only") == 1
    assert "--split splits/transfer_target_val.txt (transfer.val_split)" in err
    assert main(["eval", "--checkpoint", str(run), "--split", "splits/transfer_target_val.txt"]) == 0
    assert "note: a transfernet" not in capsys.readouterr().err
    # one split for both (VOC's val.txt holds every class): the default score is the target one, no note
    info["config"]["transfer"]["val_split"] = info["config"]["data"]["val_split"]
    (run / "model.json").write_text(json.dumps(info))
    assert main(["eval", "--checkpoint", str(run)]) == 0
    assert "note: a transfernet" not in capsys.readouterr().err
    img = next((tiny_scenes / "JPEGImages").iterdir())
    assert main(["predict", "--checkpoint", str(run), "--input", str(img), "--output", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / f"{img.stem}.png").is_file()


def test_baselinenet_names_its_fixed_input_size():
    """Another input size used to end in torch's "mat1 and mat2 shapes cannot be multiplied" from its fc."""
    net = create_model("baselinenet", num_classes=4, scale="cpu").eval()
    with pytest.raises(ValueError, match="BaselineNet's fully connected layer is built for 96 x 96 images"):
        net.predict(torch.randn(1, 3, 128, 128))


def test_the_shared_classifier_split_reads_masked_images_labels_from_their_masks(tiny_scenes, tmp_path):
    """An own data set whose labels.json lists only the unmasked images: the both-domains split was written
    labels-only, so its masked images had no labels and TransferNet refused to train."""
    import json
    import shutil

    from hetseg.methods import load_split
    from hetseg.methods.transfernet.data import both_domains_split

    root = tmp_path / "own"
    shutil.copytree(tiny_scenes, root)
    cfg = _cfg(root, tmp_path / "run")
    full = json.loads((root / "labels.json").read_text())
    masked = {r.id for rel in (cfg.transfer.source_split, cfg.transfer.target_split)
              for r in load_split(cfg, rel).records if r.mask is not None}
    assert masked and set(full) - masked
    (root / "labels.json").write_text(json.dumps({k: v for k, v in full.items() if k not in masked}))
    both = both_domains_split(cfg, (tmp_path / "both.txt").absolute()).weak()
    assert {r.id for r in both.records} >= masked
    assert all(list(r.labels) == sorted(full[r.id]) for r in both.records), "labels differ from the full labels.json"


def test_a_classifier_run_without_a_fitting_classifier_is_one_line(tiny_scenes, tmp_path, capsys):
    """transfer.classifier_run naming a DeconvNet run (no classifier) or a run of another class count
    (other sizes) was a traceback: an AttributeError, or load_state_dict's list of every mismatched key."""
    from hetseg.cli import main

    common = ["--no-progress", f"data.root={tiny_scenes}"]
    deconv, other = tmp_path / "deconv", tmp_path / "cls12"
    assert main(["train", "--method", "deconvnet", "--run-dir", str(deconv), *common, "deconv.steps=1",
                 "deconv.batch_size=2", "crops.crops_per_subset=1", "crops.proposals=none"]) == 0
    assert main(["train", "--method", "decouplednet", "--stage", "cls", "--run-dir", str(other), *common,
                 "data.num_classes=12", "data.class_names=[" + ",".join(f"c{i}" for i in range(12)) + "]",
                 "cls.steps=1", "cls.batch_size=2"]) == 0
    capsys.readouterr()
    for source, says in ((deconv, "a DeconvNet run has no image classifier"),
                         (other, "its classifier has other layers or sizes than this model's")):
        run = tmp_path / f"tn_{source.name}"
        assert main(["train", "--method", "transfernet", "--run-dir", str(run), *common,
                     f"transfer.classifier_run={source}", "transfer.att.steps=1", "transfer.att.batch_size=2",
                     "transfer.joint.steps=1", "transfer.joint.batch_size=2"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"hetseg: error: transfer.classifier_run={source}: {says}"), err
        assert err.count("\n") == 1 and "; fix: " in err and not run.exists(), err

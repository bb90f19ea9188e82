"""TransferNet training and inference, and the baselines of its Sec. 6.3 (reference §3.6-§3.10).

Recipe (one shared separate classifier, then three decoders trained on source masks):

1. ``classifier``: hetseg's DecoupledNet stage ``cls`` on the image labels of *both* domains (a
   weak split listing source-train + target-train images). It is (a) the frozen encoder of
   TransferNet (its conv layers; the paper's "fine-tuned for multi-label classification on
   VOC+COCO", §7.9), (b) the frozen classification network of BaselineNet and
   DecoupledNet-transfer, and (c) the "separate classifier" that picks labels at inference,
   restricted to the target classes (threshold 0.6, argmax fallback, §3.9 step 2).
2. ``transfernet``: stage ``att`` (attention + classification layers, cls loss on (image, label)
   rows of both domains), then stage ``joint`` (cls + lambda * seg, lambda = 2, seg loss on source
   rows only); Adam, fixed lr, no weight decay, encoder frozen (§3.1, §3.6, §3.7).
3. ``baselinenet``: FC + decoder on source rows (seg loss), classifier frozen.
4. ``decouplednet_transfer``: DecoupledNet stage ``seg`` (bridge + decoder) on combinatorial crops
   of the source images, classifier frozen; its own inference (g* background map).

Batches (§3.8, §7.12): the original's data layer alternates whole batches between the domains and
accumulates an even number of them (iter_size 8 or 16) per update, each batch's losses normalised
within itself. Here one step draws a whole target sub-batch and a whole source sub-batch of
``batch_size`` rows each and minimises the mean of the two sub-batch losses,
0.5 * cls_t + 0.5 * (cls_s + lambda * seg_s): the same update. Target rows never reach the decoder
(their masks are all void; the patched Caffe loss gives them 0 loss and 0 gradient).

Feature scale: the original multiplies conv5_3 by 0.004 to bring Caffe VGG-16 activations "roughly
into 0-1". ``transfer.feature_scale=0`` re-derives that constant for another encoder
(:func:`calibrate_feature_scale`); the CPU recipe does so, since 0.004 shrinks the BN encoder's
activations to ~0.015 and the attention then fails to learn the classification objective
(measured, docs/TRANSFERNET.md).

Equal effort: every decoder gets the same number of optimizer steps with the same number of
source-mask rows per step (``transfer.joint`` = ``transfer.baseline`` = ``seg`` budgets).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from hetseg.config import Config, StageConfig
from hetseg.data.crops import binary_target, warp
from hetseg.data.datasets import _Seeded
from hetseg.data.io import read_image, read_mask
from hetseg.data.records import Record, Split, write_split
from hetseg.data.transforms import prepare, restore, to_tensor
from hetseg.engine.checkpoint import load_model, load_weights, save_model
from hetseg.engine.pipeline import class_names, command_line, load_split, train
from hetseg.engine.stages import _Stage, seg_loss
from hetseg.engine.train import run_stage, stage_done
from hetseg.errors import HetsegError
from hetseg.metrics import ConfusionMatrix, Scores
from hetseg.models.baselinenet import BaselineNet
from hetseg.models.classifier import Classifier
from hetseg.models.transfernet import TransferNet, decision_scores
from hetseg.palette import save_index_png

METHODS = ("transfernet", "transfernet_gt", "baselinenet", "decouplednet_transfer")


# ------------------------------------------------------------------------------------------ data


def augment(image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator, scale: float = 330 / 320
            ) -> tuple[np.ndarray, np.ndarray]:
    """The original TransferNet loader (§3.8): warp to round(size * 330/320), random size crop, flip."""
    big = max(size, int(round(size * scale)))
    im, mk = warp(image, mask, big, flip=False)
    y, x = rng.integers(0, big - size + 1, size=2)
    im, mk = im[y:y + size, x:x + size], mk[y:y + size, x:x + size]
    if rng.random() < 0.5:
        im, mk = im[:, ::-1], mk[:, ::-1]
    return np.ascontiguousarray(im), np.ascontiguousarray(mk)


class LabelRows(_Seeded):
    """One row per (image, label) of a split with the label in ``classes`` (§7.3 inferred: one line
    per image and class, one-hot). Items: (image (3,S,S), object index) and, with ``masks``, the
    binary target (S,S) int64 of that label (other classes background, void 255)."""

    def __init__(self, split: Split, classes: Sequence[int], size: int, masks: bool, seed: int = 0) -> None:
        super().__init__(seed)
        allowed = set(classes)
        self.split, self.size, self.masks = split, size, masks
        self.rows = [(r, c) for r in split.records for c in r.labels if c in allowed]
        if masks and any(r.mask is None for r, _ in self.rows):
            raise HetsegError(f"split '{split.name}' has images without masks; the source split needs masks")
        if not self.rows:
            raise HetsegError(f"split '{split.name}' has no image with a label among {sorted(allowed)}")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        rec, c = self.rows[i]
        img = read_image(self.split.path(rec.image))
        mask = read_mask(self.split.path(rec.mask)) if self.masks else np.zeros(img.shape[:2], np.uint8)
        img, mask = augment(img, mask, self.size, self.rng(i))
        if not self.masks:
            return to_tensor(img), c - 1
        return to_tensor(img), c - 1, torch.from_numpy(binary_target(mask, (c,)).astype(np.int64))


class DomainPairs(Dataset):
    """Item i = (target row, source row): a batch of B items is a whole target sub-batch plus a
    whole source sub-batch. The source row is drawn through a per-epoch permutation."""

    def __init__(self, target: LabelRows, source: LabelRows, seed: int = 0) -> None:
        self.target, self.source, self.seed, self.epoch = target, source, seed, 0
        self._perm = np.random.default_rng([seed, 0]).permutation(len(source))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.target.set_epoch(epoch)
        self.source.set_epoch(epoch)
        self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.source))

    def __len__(self) -> int:
        return max(len(self.target), len(self.source))

    def __getitem__(self, i: int):
        return (*self.target[i % len(self.target)], *self.source[int(self._perm[i % len(self.source)])])


# ------------------------------------------------------------------------------------------ stages


def _optimizer(module: _Stage, sc: StageConfig, fast: Sequence[nn.Parameter] = (), fast_mult: tuple = (10, 20)):
    """Adam/SGD with Caffe's lr multipliers for ``fast`` params (weights x10, biases x20, §3.3);
    weight decay on weights only; "step" policy at ``lr_step`` (1.0 = the original's fixed lr)."""
    fast_ids = {id(p) for p in fast}
    params = [p for p in module.trainable()]
    groups = [
        {"params": [p for p in params if id(p) not in fast_ids and p.ndim > 1], "weight_decay": sc.weight_decay},
        {"params": [p for p in params if id(p) not in fast_ids and p.ndim <= 1], "weight_decay": 0.0},
        {"params": [p for p in params if id(p) in fast_ids and p.ndim > 1], "weight_decay": sc.weight_decay,
         "lr": sc.lr * fast_mult[0]},
        {"params": [p for p in params if id(p) in fast_ids and p.ndim <= 1], "weight_decay": 0.0,
         "lr": sc.lr * fast_mult[1]},
    ]
    groups = [g for g in groups if g["params"]]
    if sc.optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=sc.lr, betas=(0.9, 0.999), eps=1e-8)
    elif sc.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=sc.lr, momentum=sc.momentum)
    else:
        raise ValueError(f"unknown optimizer '{sc.optimizer}' (sgd | adam)")
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[max(1, int(sc.lr_step * sc.steps))], gamma=0.1)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class TransferStage(_Stage):
    """TransferNet stage ``att`` (cls loss) or ``joint`` (cls + seg_weight * seg); encoder frozen."""

    def __init__(self, net: TransferNet, sc: StageConfig, phase: str, seg_weight: float = 2.0) -> None:
        if phase not in ("att", "joint"):
            raise ValueError(f"phase must be 'att' or 'joint', got {phase!r}")
        super().__init__(net, sc)
        self.phase, self.seg_weight = phase, seg_weight
        net.requires_grad_(True)
        net.encoder.requires_grad_(False)
        net.decoder.requires_grad_(phase == "joint")

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.encoder.eval()
        return self

    def configure_optimizers(self):
        return _optimizer(self, self.sc, list(self.net.cls_score.parameters()))

    def training_step(self, batch, batch_idx):
        xt, yt, xs, ys, ms = batch
        b = xt.shape[0]
        enc = self.net.encode(torch.cat([xt, xs]))  # one frozen encoder pass for both sub-batches
        out = self.net.rows(enc, torch.cat([yt, ys]), decode=False)
        logits = out.cls_logits.float()
        cls_t, cls_s = F.cross_entropy(logits[:b], yt), F.cross_entropy(logits[b:], ys)
        loss_s = cls_s
        if self.phase == "joint":
            seg = self.net.decoder(out.dense[b:], [s[b:] for s in enc.switches], enc.sizes)
            seg_s = seg_loss(seg, ms)
            loss_s = loss_s + self.seg_weight * seg_s
            self.log("train/seg_loss", seg_s, prog_bar=True)
        loss = 0.5 * cls_t + 0.5 * loss_s
        self.log_dict({"train/loss": loss, "train/cls_loss": 0.5 * (cls_t + cls_s),
                       "train/cls_acc": (logits.argmax(1) == torch.cat([yt, ys])).float().mean()}, prog_bar=True)
        return loss


class BaselineStage(_Stage):
    """BaselineNet: FC + decoder on source rows (seg loss); classifier frozen, eval mode."""

    def __init__(self, net: BaselineNet, sc: StageConfig) -> None:
        super().__init__(net, sc)
        net.requires_grad_(True)
        net.classifier.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.classifier.eval()
        return self

    def configure_optimizers(self):
        return _optimizer(self, self.sc)

    def training_step(self, batch, batch_idx):
        x, y, m = batch
        loss = seg_loss(self.net(x, y), m)
        self.log("train/loss", loss, prog_bar=True)
        return loss


# ------------------------------------------------------------------------------------------ recipe


def _replace(cfg: Config, **kw) -> Config:
    return Config.from_dict({**cfg.to_dict(), **{k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
                                                  for k, v in kw.items()}})


def build_transfer_model(cfg: Config) -> nn.Module:
    """The network of a transfer run (model.name transfernet | baselinenet); no weights loaded."""
    k, t = cfg.data.num_classes - 1, cfg.transfer
    if cfg.model.name == "transfernet":
        return TransferNet(k, cfg.model.scale, attention=t.attention, feature_scale=t.feature_scale or 1.0,
                           embed_dim=t.embed_dim or None)
    if cfg.model.name == "baselinenet":
        return BaselineNet(k, cfg.model.scale)
    raise HetsegError(f"model '{cfg.model.name}' is not a transfer model; fix: transfernet | baselinenet")


def load_transfer_run(run: str | Path) -> tuple[nn.Module, Config]:
    """Rebuild a trained TransferNet/BaselineNet from its run directory."""
    info = json.loads((Path(run) / "model.json").read_text())
    cfg = Config.from_dict(info["config"])
    net = build_transfer_model(cfg)
    load_weights(net, run)
    return net.eval(), cfg


def both_domains_split(cfg: Config, path: str | Path) -> Split:
    """Write the classifier's weak split: source-train + target-train images, labels only."""
    records: list[Record] = []
    seen: set[str] = set()
    for rel in (cfg.transfer.source_split, cfg.transfer.target_split):
        for r in load_split(cfg, rel).records:
            if r.image not in seen:
                seen.add(r.image)
                records.append(Record(r.id, r.image, r.labels))
    write_split(path, records, weak=True)
    return load_split(cfg, str(Path(path).resolve()))


def train_classifier(cfg: Config, run_dir: str | Path, progress: bool = False) -> dict:
    """The shared separate classifier: DecoupledNet stage ``cls`` on both domains' labels."""
    run = Path(run_dir)
    split = both_domains_split(cfg, run / "splits" / "transfer_both_train.txt")
    ccfg = _replace(cfg, run_dir=str(run))
    ccfg.model.name = "decouplednet"
    ccfg.data.weak_split = str((run / "splits" / "transfer_both_train.txt").resolve())
    out = train(ccfg, ("cls",), progress=progress)
    out["cls"]["train_images"] = len(split)
    return out


def _save(run: Path, net: nn.Module, cfg: Config, summaries: dict, extra: dict) -> None:
    prev = json.loads((run / "model.json").read_text()) if (run / "model.json").is_file() else {}
    save_model(run, net, cfg, class_names(cfg), {"stages": {**prev.get("stages", {}), **summaries},
                                                 "command": command_line(), **extra})


@torch.no_grad()
def calibrate_feature_scale(net: TransferNet, rows: LabelRows, n: int = 256, batch: int = 64) -> float:
    """1 / (mean per-image max of conv5_3) over the first ``n`` rows: maps activations "roughly into
    0-1", the stated purpose of the original's 0.004 (§3.1), for an encoder other than Caffe VGG-16."""
    net.eval()
    net.feature_scale.fill_(1.0)
    maxima = []
    for start in range(0, min(n, len(rows)), batch):
        x = torch.stack([rows[i][0] for i in range(start, min(start + batch, n, len(rows)))])
        maxima.append(net.encode(x).features.flatten(1).amax(1))
    return float(1.0 / torch.cat(maxima).mean().clamp_min(1e-6))


def _rows(cfg: Config, which: str) -> LabelRows:
    t, size = cfg.transfer, _input_size(cfg)
    if which == "source":
        return LabelRows(load_split(cfg, t.source_split), t.source_classes, size, True, cfg.seed)
    return LabelRows(load_split(cfg, t.target_split), t.target_classes, size, False, cfg.seed)


def _input_size(cfg: Config) -> int:
    from hetseg.models.scales import get_scale

    return get_scale(cfg.model.scale).input_size


def _load_classifier_into(target: Classifier | nn.Module, cls_run: str | Path) -> None:
    dnet, _, _ = load_model(cls_run)
    target.load_state_dict(dnet.classifier.state_dict() if isinstance(target, Classifier)
                           else dnet.classifier.encoder.state_dict())


def train_transfernet(cfg: Config, cls_run: str | Path, run_dir: str | Path, progress: bool = False,
                      callbacks=()) -> dict:
    """Stages ``att`` and ``joint`` into ``run_dir``; encoder from the classifier run, frozen."""
    run = Path(run_dir)
    tcfg = _replace(cfg, run_dir=str(run))
    tcfg.model.name = "transfernet"
    run.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, verbose=False)
    net = build_transfer_model(tcfg)
    extra: dict = {"classifier_run": str(cls_run)}
    target, source = _rows(tcfg, "target"), _rows(tcfg, "source")
    if (run / "model.safetensors").is_file():
        load_weights(net, run)
    else:
        _load_classifier_into(net.encoder, cls_run)
        if tcfg.transfer.feature_scale <= 0:
            net.feature_scale.fill_(calibrate_feature_scale(net, source))
    tcfg.save(run / "config.json")
    extra["feature_scale"] = float(net.feature_scale)
    pairs = DomainPairs(target, source, cfg.seed)
    summaries = {}
    for phase, sc in (("att", tcfg.transfer.att), ("joint", tcfg.transfer.joint)):
        module = TransferStage(net, sc, phase, tcfg.transfer.seg_weight)
        summaries[phase] = run_stage(phase, net, tcfg, sc, pairs, callbacks=callbacks, progress=progress,
                                     module=module)
        summaries[phase]["rows_per_step"] = 2 * sc.batch_size * sc.accumulate
        summaries[phase]["source_rows_per_step"] = sc.batch_size * sc.accumulate
        summaries[phase]["feature_scale"] = float(net.feature_scale)
        _save(run, net, tcfg, summaries, {**extra, "rows": {"target": len(target), "source": len(source)}})
    return summaries


def train_baselinenet(cfg: Config, cls_run: str | Path, run_dir: str | Path, progress: bool = False,
                      callbacks=()) -> dict:
    """BaselineNet stage ``baseline`` into ``run_dir``; classifier from the classifier run, frozen."""
    run = Path(run_dir)
    bcfg = _replace(cfg, run_dir=str(run))
    bcfg.model.name = "baselinenet"
    run.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, verbose=False)
    net = build_transfer_model(bcfg)
    if (run / "model.safetensors").is_file():
        load_weights(net, run)
    else:
        _load_classifier_into(net.classifier, cls_run)
    bcfg.save(run / "config.json")
    source = _rows(bcfg, "source")
    sc = bcfg.transfer.baseline
    summary = run_stage("baseline", net, bcfg, sc, source, callbacks=callbacks, progress=progress,
                        module=BaselineStage(net, sc))
    summary["source_rows_per_step"] = sc.batch_size * sc.accumulate
    _save(run, net, bcfg, {"baseline": summary}, {"classifier_run": str(cls_run), "rows": {"source": len(source)}})
    return {"baseline": summary}


def train_decouplednet_transfer(cfg: Config, cls_run: str | Path, run_dir: str | Path, progress: bool = False,
                                callbacks=()) -> dict:
    """DecoupledNet stage ``seg`` on combinatorial crops of the source split (``cfg.seg``), with the
    shared classifier frozen; the run starts from the classifier run's weights."""
    run = Path(run_dir)
    dcfg = _replace(cfg, run_dir=str(run))
    dcfg.model.name = "decouplednet"
    dcfg.data.strong_split = cfg.transfer.source_split
    # A re-run must not re-initialise from the classifier run once this run has its own weights.
    init = None if (run / "model.safetensors").is_file() or stage_done(run, "seg") else str(cls_run)
    return train(dcfg, ("seg",), init_from=init, progress=progress, callbacks=callbacks)


# ------------------------------------------------------------------------------------------ inference


@torch.no_grad()
def identify_labels(classifier: Classifier, x: torch.Tensor, classes: Sequence[int], threshold: float
                    ) -> tuple[list[list[int]], torch.Tensor]:
    """Object indices per image: {k in classes : sigmoid(avg score_k) >= threshold}, else the argmax
    among ``classes`` (§3.9 step 2). ``classes`` are mask indices. Returns (labels, scores (N, K))."""
    scores = torch.sigmoid(classifier(x).logits_avg.float())
    allowed = torch.zeros(scores.shape[1], dtype=torch.bool, device=scores.device)
    allowed[[c - 1 for c in classes]] = True
    s = scores.masked_fill(~allowed, -1.0)
    out = []
    for row in s:
        ks = torch.nonzero(row >= threshold).flatten().tolist()
        out.append(ks or [int(row.argmax())])
    return out, scores


def crf_available() -> bool:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def crf_scores(image: np.ndarray, fg: torch.Tensor, active: Sequence[int], iterations: int = 10) -> torch.Tensor:
    """Per-class binary dense CRF (§3.9 step 6-8): image (H, W, 3) uint8, fg (K, H, W) at the image's
    size -> (K+1, H, W) scores fg_k * [CRF says fg], channel 0 = 0 (background where all are 0).
    Gaussian sxy 3, weight 3; bilateral sxy 20, srgb 3, weight 5; 10 mean-field iterations."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    k, h, w = fg.shape
    out = torch.zeros(k + 1, h, w)
    img = np.array(image[..., :3], dtype=np.uint8, order="C", copy=True)  # pydensecrf needs a writable buffer
    for c in active:
        p = fg[c].clamp(1e-6, 1 - 1e-6).numpy().astype(np.float32, copy=True)
        d = dcrf.DenseCRF2D(w, h, 2)
        d.setUnaryEnergy(unary_from_softmax(np.stack([1 - p, p])))
        d.addPairwiseGaussian(sxy=3, compat=3)
        d.addPairwiseBilateral(sxy=20, srgb=3, rgbim=img, compat=5)
        q = np.array(d.inference(iterations)).reshape(2, h, w)
        out[c + 1] = torch.from_numpy(p * (q[1] > q[0]))
    return out


@torch.no_grad()
def method_scores(method: str, nets: dict, x: torch.Tensor, labels: list[list[int]], bg_scale: float,
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, K+1, S, S) per-pixel scores whose argmax is the label map, and the fg maps (N, K, S, S)
    of the per-label methods (for the CRF), for object-index labels per image."""
    if method in ("transfernet", "transfernet_gt", "baselinenet"):
        net = nets["baselinenet" if method == "baselinenet" else "transfernet"]
        fo = net.foreground(x, labels, bg_scale)
        return decision_scores(fo.fg, fo.active), fo.fg * fo.active[:, :, None, None]
    if method == "decouplednet_transfer":
        return nets["decouplednet_transfer"].predict(x, labels=labels).probs, None
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


@torch.no_grad()
def evaluate_transfer(nets: dict, classifier: Classifier, split: Split, num_classes: int, size: int,
                      target_classes: Sequence[int], threshold: float = 0.6, bg_scale: float = 0.5,
                      methods: Sequence[str] = METHODS, crf: bool = False, batch_size: int = 16,
                      pred_root: str | Path | None = None) -> dict[str, Scores]:
    """Devkit scores of each method on the masked records of ``split`` at original resolution.

    All methods share one label identification per image (the classifier restricted to
    ``target_classes``); ``transfernet_gt`` uses the ground-truth labels. With ``crf`` (and
    pydensecrf2 installed) the per-label methods get the original's per-class binary CRF; the
    result keys gain a ``+crf`` suffix.
    """
    for n in [*nets.values(), classifier]:
        n.eval()
    use_crf = crf and crf_available()
    keys = [m + ("+crf" if use_crf and m != "decouplednet_transfer" else "") for m in methods]
    cms = {k: ConfusionMatrix(num_classes) for k in keys}
    recs = [r for r in split.records if r.mask is not None]
    for start in range(0, len(recs), batch_size):
        chunk = recs[start:start + batch_size]
        imgs = [read_image(split.path(r.image)) for r in chunk]
        prepped = [prepare(im, size) for im in imgs]
        x = torch.stack([t for t, _ in prepped])
        ident, _ = identify_labels(classifier, x, target_classes, threshold)
        gt_labels = [[c - 1 for c in r.labels] for r in chunk]
        gts = [read_mask(split.path(r.mask), num_classes) for r in chunk]
        for method, key in zip(methods, keys):
            labels = gt_labels if method == "transfernet_gt" else ident
            scores, fg = method_scores(method, nets, x, labels, bg_scale)
            for i, (_, geom) in enumerate(prepped):
                if key.endswith("+crf"):
                    s = crf_scores(imgs[i], restore(fg[i], geom), labels[i])
                else:
                    s = restore(scores[i].float(), geom)
                pred = s.argmax(0).to(torch.uint8).numpy()
                cms[key].update(pred, gts[i])
                if pred_root is not None:
                    save_index_png(Path(pred_root) / key / f"{chunk[i].id}.png", pred)
    return {k: cm.compute() for k, cm in cms.items()}


@torch.no_grad()
def label_identification(cls_run: str | Path, split: Split, cfg: Config, batch_size: int = 32) -> dict:
    """How well the separate classifier's label sets match the ground truth on ``split``:
    fraction of images with the exact set, micro precision / recall of the identified labels."""
    classifier = load_model(cls_run)[0].classifier.eval()
    size = _input_size(cfg)
    exact = tp = n_pred = n_gt = 0
    recs = split.records
    for start in range(0, len(recs), batch_size):
        chunk = recs[start:start + batch_size]
        x = torch.stack([prepare(read_image(split.path(r.image)), size)[0] for r in chunk])
        ident, _ = identify_labels(classifier, x, cfg.transfer.target_classes, cfg.transfer.threshold)
        for r, ks in zip(chunk, ident):
            pred, gt = {k + 1 for k in ks}, set(r.labels)
            exact += pred == gt
            tp, n_pred, n_gt = tp + len(pred & gt), n_pred + len(pred), n_gt + len(gt)
    return {"images": len(recs), "exact": exact / max(1, len(recs)), "precision": tp / max(1, n_pred),
            "recall": tp / max(1, n_gt), "labels_per_image": n_pred / max(1, len(recs)),
            "threshold": cfg.transfer.threshold}


# ------------------------------------------------------------------------------------------ figure


@torch.no_grad()
def attention_figure(tn: TransferNet, split: Split, path: str | Path, size: int, num_images: int = 4,
                     bg_scale: float = 0.5) -> list[str]:
    """Fig. 2/3 of the paper: per val image and ground-truth label, the input, the attention alpha,
    the densified attention d and the decoder's foreground probability. Returns the row captions."""
    from hetseg.viz import save_grid

    tn.eval()
    rows, captions = [], []
    for rec in [r for r in split.records if r.labels][:num_images]:
        img = read_image(split.path(rec.image))
        x, geom = prepare(img, size)
        labels = [c - 1 for c in rec.labels]
        fo = tn.foreground(x[None], [labels], bg_scale, return_maps=True)
        alpha, dense = fo.maps
        for k in labels:
            up = lambda m: F.interpolate(m[None, None].float(), size=(size, size), mode="nearest")[0]  # noqa: E731
            rows.append([img, restore(up(alpha[0, k]), geom)[0].numpy(),
                         restore(up(dense[0, k, 0]), geom)[0].numpy(), restore(fo.fg[0, k:k + 1], geom)[0].numpy()])
            captions.append(f"{rec.id} class {k + 1}")
    save_grid(path, rows, ["image", "attention α", "densified attention d", "P(fg)"])
    return captions


# ------------------------------------------------------------------------------------------ all


def run_recipe(cfg: Config, run_root: str | Path, progress: bool = False, methods: Sequence[str] = METHODS,
               figure: str | Path | None = None, log=print) -> dict:
    """Train the classifier and every method's decoder into ``run_root``/*, evaluate on
    ``cfg.transfer.val_split``; returns {"scores": {method: Scores}, "train": ..., "wall_s": ...}."""
    root = Path(run_root)
    walls: dict = {}
    summaries: dict = {}

    def timed(name, fn, *a):
        t0 = time.perf_counter()
        summaries[name] = fn(*a, progress=progress)
        walls[name] = round(time.perf_counter() - t0, 1)
        log(f"[transfer] {name}: {walls[name]} s")

    cls_run = root / "classifier"
    timed("classifier", train_classifier, cfg, cls_run)
    need = set(methods)
    if need & {"transfernet", "transfernet_gt"}:
        timed("transfernet", train_transfernet, cfg, cls_run, root / "transfernet")
    if "baselinenet" in need:
        timed("baselinenet", train_baselinenet, cfg, cls_run, root / "baselinenet")
    if "decouplednet_transfer" in need:
        timed("decouplednet_transfer", train_decouplednet_transfer, cfg, cls_run, root / "decouplednet_transfer")

    nets: dict = {}
    if need & {"transfernet", "transfernet_gt"}:
        nets["transfernet"] = load_transfer_run(root / "transfernet")[0]
    if "baselinenet" in need:
        nets["baselinenet"] = load_transfer_run(root / "baselinenet")[0]
    if "decouplednet_transfer" in need:
        nets["decouplednet_transfer"] = load_model(root / "decouplednet_transfer")[0]
    classifier = load_model(cls_run)[0].classifier
    val = load_split(cfg, cfg.transfer.val_split)
    size = _input_size(cfg)
    t0 = time.perf_counter()
    scores = evaluate_transfer(nets, classifier, val, cfg.data.num_classes, size, cfg.transfer.target_classes,
                               cfg.transfer.threshold, cfg.transfer.bg_scale, methods, cfg.transfer.crf)
    walls["evaluation"] = round(time.perf_counter() - t0, 1)
    if figure is not None and "transfernet" in nets:
        attention_figure(nets["transfernet"], val, figure, size, bg_scale=cfg.transfer.bg_scale)
    return {"scores": scores, "train": summaries, "wall_s": walls, "val": val}


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
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from hetseg.config import Config, StageConfig
from hetseg.data.records import Record, Split, write_split
from hetseg.engine.checkpoint import load_model, load_weights, save_model
from hetseg.engine.pipeline import class_names, command_line, load_split, train
from hetseg.engine.stages import _Stage, seg_loss
from hetseg.engine.train import run_stage, stage_done
from hetseg.engine.transfer_data import DomainPairs, LabelRows, _rows
from hetseg.errors import HetsegError
from hetseg.models.baselinenet import BaselineNet
from hetseg.models.classifier import Classifier
from hetseg.models.transfernet import TransferNet


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



def _load_classifier_into(target: Classifier | nn.Module, cls_run: str | Path) -> None:
    dnet, _, _ = load_model(cls_run)
    target.load_state_dict(dnet.classifier.state_dict() if isinstance(target, Classifier)
                           else dnet.classifier.encoder.state_dict())


def _start_run(cfg: Config, run_dir: str | Path, model_name: str, cls_run: str | Path, part: str
               ) -> tuple[Path, Config, nn.Module, bool]:
    """Seeded model for ``run_dir``: its own weights if it has some (resume), else a fresh model
    whose ``part`` (encoder or classifier) comes from the shared classifier run. Returns
    (run, config, net, fresh)."""
    run = Path(run_dir)
    rcfg = _replace(cfg, run_dir=str(run))
    rcfg.model.name = model_name
    run.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, verbose=False)
    net = build_transfer_model(rcfg)
    fresh = not (run / "model.safetensors").is_file()
    if fresh:
        _load_classifier_into(getattr(net, part), cls_run)
    else:
        load_weights(net, run)
    return run, rcfg, net, fresh


def train_transfernet(cfg: Config, cls_run: str | Path, run_dir: str | Path, progress: bool = False,
                      callbacks=()) -> dict:
    """Stages ``att`` and ``joint`` into ``run_dir``; encoder from the classifier run, frozen."""
    run, tcfg, net, fresh = _start_run(cfg, run_dir, "transfernet", cls_run, "encoder")
    extra: dict = {"classifier_run": str(cls_run)}
    target, source = _rows(tcfg, "target"), _rows(tcfg, "source")
    if fresh and tcfg.transfer.feature_scale <= 0:
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
    run, bcfg, net, _ = _start_run(cfg, run_dir, "baselinenet", cls_run, "classifier")
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

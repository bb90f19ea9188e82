"""One config object flows from the CLI to the engine and is saved with every run.

Typed dataclasses, loaded from YAML/JSON and overridden by dotted ``key=value`` arguments
(file < CLI, as in timm and nanoGPT). ``Config.save`` writes ``config.json`` into the run dir.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hetseg.data.classes import FASHION_SOURCE, FASHION_TARGET
from hetseg.errors import HetsegError


@dataclass
class DataConfig:
    root: str = "data/fashion-scenes"          # dataset root (VOC layout)
    weak_split: str = "splits/train_weak.txt"  # image-level labels (classifier, stage cls)
    strong_split: str = "splits/strong_5.txt"  # masks (stage seg, DeconvNet)
    val_split: str = "splits/val.txt"          # evaluation
    num_classes: int = 11                      # incl. background (VOC: 21)
    class_names: list[str] = field(default_factory=list)  # empty: read <root>/classes.txt
    workers: int = 0                           # DataLoader workers (0 = main process)
    fashion_mnist_dir: str = ""                # stage "pre" items; empty = the Debian package's dir
    pretrain_holdout: int = 2000               # stage "pre": last N train items held out for val/acc


@dataclass
class ModelConfig:
    name: str = "decouplednet"   # decouplednet | deconvnet
    scale: str = "cpu"           # cpu | paper
    weight_pool: str = "avg"     # avg | max: which pooled score weights f_cls (reference §7.2)
    vgg_weights: str = ""        # optional torchvision-format VGG-16 file (paper scale)
    backbone: str = ""           # optional backbone.safetensors (or its run dir) from stage "pre"


@dataclass
class StageConfig:
    """One training stage; budgets are in optimizer steps so every method can get the same."""

    steps: int = 1000
    batch_size: int = 32
    accumulate: int = 1          # effective batch = batch_size * accumulate * world size
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "sgd"       # sgd | adam
    lr_step: float = 0.7         # fraction of steps after which lr drops by 10x (step policy)
    precision: str = "bf16-mixed"  # Lightning precision; bf16 autocast ~1.8x faster on CPU, same loss
    channels_last: bool = True   # NHWC memory format: ~1.2x faster convolutions, identical maths
    checkpoint_every: int = 200  # steps between last.ckpt saves
    val_every: int = 0           # steps between validation runs (0 = only at the end)


@dataclass
class CropConfig:
    """Combinatorial cropping (DecoupledNet Sec. 5), see hetseg.data.crops."""

    crops_per_subset: int = 200  # N_p
    full_image_prob: float = 0.1  # share of samples that use the uncropped image (the N_s term)
    max_scale: float = 1.6        # largest box side relative to the image side
    proposals: str = "auto"       # auto | none | selective-search (needs opencv-contrib)


@dataclass
class EvalConfig:
    threshold: float = 0.5       # a label is identified when its avg-pooled score exceeds it
    split: str = "val"


def _adam(steps: int, lr: float) -> StageConfig:
    """TransferNet's solvers (reference §3.7): Adam, fixed lr (lr_step 1.0 = no drop), no weight decay."""
    return StageConfig(steps=steps, batch_size=16, lr=lr, optimizer="adam", weight_decay=0.0, lr_step=1.0)


@dataclass
class TransferConfig:
    """TransferNet and the baselines of its Sec. 6.3 (hetseg.engine.transfer, docs/TRANSFERNET.md).

    ``att``/``joint`` batch_size counts (image, label) rows *per domain*: a step sees one whole
    target sub-batch and one whole source sub-batch (2 x batch_size rows). ``baseline`` is
    BaselineNet's decoder stage (source rows only). Class lists are mask indices.
    """

    source_split: str = "splits/transfer_source_train.txt"  # masks of source classes
    target_split: str = "splits/transfer_target_train.txt"  # image labels of target classes only
    val_split: str = "splits/transfer_target_val.txt"       # evaluation: target classes, masks
    source_classes: list[int] = field(default_factory=lambda: list(FASHION_SOURCE))
    target_classes: list[int] = field(default_factory=lambda: list(FASHION_TARGET))
    attention: str = "code"        # code (extra FC+ReLU, released prototxt) | paper (the equation)
    feature_scale: float = 0.004   # A = s * conv5_3; 0 = calibrate on training images (max -> ~1)
    embed_dim: int = 0             # factors d; 0 = 2 * C5 (1024 paper, 256 CPU)
    seg_weight: float = 2.0        # lambda (reference §3.6)
    threshold: float = 0.6         # separate classifier: labels with sigmoid score >= threshold
    bg_scale: float = 0.5          # inference prior: P(bg) x 0.5, renormalised (reference §3.9)
    crf: bool = False              # per-class binary dense CRF at inference (needs pydensecrf2)
    att: StageConfig = field(default_factory=lambda: _adam(15000, 1e-3))
    joint: StageConfig = field(default_factory=lambda: _adam(15000, 5e-4))
    baseline: StageConfig = field(default_factory=lambda: _adam(15000, 5e-4))


@dataclass
class Config:
    run_dir: str = "runs/demo"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # From scratch at CPU scale, Adam learns the classifier far faster than SGD 0.01 (measured:
    # SGD stayed at the label-prior loss for 300 steps); the paper-scale config keeps SGD.
    # Stage "pre" (CPU scale, opt-in): the single-item pretraining that stands in for ImageNet.
    pre: StageConfig = field(default_factory=lambda: StageConfig(
        steps=1000, batch_size=32, optimizer="adam", lr=0.002, weight_decay=0.0, lr_step=0.75))
    cls: StageConfig = field(default_factory=lambda: StageConfig(
        steps=1200, batch_size=32, optimizer="adam", lr=0.002, weight_decay=0.0, lr_step=0.75))
    seg: StageConfig = field(default_factory=lambda: StageConfig(steps=800, batch_size=16, lr=0.01))
    # DeconvNet trains every layer from scratch: the classifiers' Adam recipe (SGD 0.01 stayed at
    # all-background), seg's batch, and cls + seg steps (the Table 1 equal-effort rule).
    deconv: StageConfig = field(default_factory=lambda: StageConfig(
        steps=2000, batch_size=16, optimizer="adam", lr=0.002, weight_decay=0.0, lr_step=0.75))
    crops: CropConfig = field(default_factory=CropConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)

    # ---- persistence -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        return _build(cls, d, "")

    @classmethod
    def load(cls, path: str | Path) -> Config:
        p = Path(path)
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise HetsegError(f"{p}: cannot read config ({e}); fix: give a YAML or JSON file") from None
        return cls.from_dict(d)

    def override(self, items: list[str]) -> Config:
        """Apply dotted ``key=value`` overrides, e.g. ``seg.steps=100 model.scale=paper``."""
        d = self.to_dict()
        for item in items:
            if "=" not in item:
                raise HetsegError(f"override '{item}' is not key=value; fix: write e.g. seg.steps=100")
            key, value = item.split("=", 1)
            node = d
            parts = key.split(".")
            for p in parts[:-1]:
                if p not in node or not isinstance(node[p], dict):
                    raise HetsegError(f"unknown config section '{p}' in '{item}'")
                node = node[p]
            if parts[-1] not in node:
                raise HetsegError(f"unknown config key '{key}'; fix: see config.json of a run for the keys")
            node[parts[-1]] = yaml.safe_load(value)
        return Config.from_dict(d)


def _build(cls: type, d: dict[str, Any], where: str) -> Any:
    """Recursively build nested dataclasses, refusing unknown keys (typos must not pass silently)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise HetsegError(f"unknown config key(s) {sorted(unknown)} in section '{where or 'top'}'")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            kwargs[f.name] = _build(t, v or {}, f.name)
        elif t is float and isinstance(v, int):
            kwargs[f.name] = float(v)
        else:
            kwargs[f.name] = v
    return cls(**kwargs)

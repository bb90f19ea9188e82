"""DecoupledNet (Hong, Noh, Han, NIPS 2015): stage ``cls`` (classifier on the weak set's image
labels), then stage ``seg`` (bridge + binary decoder on combinatorial crops of the strong set,
classifier frozen). DecoupledNet-Str is the same method with ``data.weak_split`` = the strong split.
Optional stage ``pre`` pretrains the CPU-scale classifier on single fashion items and writes
``RUN/backbone.safetensors`` (the ImageNet stand-in, docs/DECISIONS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import nn

from hetseg.config import Config
from hetseg.engine.context import load_split
from hetseg.engine.train import run_stage
from hetseg.errors import HetsegError
from hetseg.methods.base import Method, register_method
from hetseg.methods.decouplednet.stages import ClsStage, SegStage
from hetseg.methods.pretrain import ClassifierPretrainStage, run_pretrain, write_backbone

if TYPE_CHECKING:
    from hetseg.data.datasets import CropDataset


def crop_dataset(cfg: Config, split_key: str, target: str, size: int) -> tuple[CropDataset, dict, str]:
    """Combinatorial crops of a split's strong images (DecoupledNet Sec. 5) at the model's input
    side ``size``; ``target`` binary | multiclass. Returns the dataset, its record (split file, images,
    checksum, pairs) and the box source (``selective-search`` or ``random boxes only``)."""
    from hetseg.data.crops import proposals_available
    from hetseg.data.datasets import CropDataset

    strong = load_split(cfg, split_key)
    use_props = cfg.crops.proposals == "selective-search" or (cfg.crops.proposals == "auto" and proposals_available())
    ds = CropDataset(strong, cfg.data.num_classes, size, cfg.crops.crops_per_subset,
                     cfg.crops.full_image_prob, cfg.crops.max_scale, use_props, target, seed=cfg.seed)
    record = {"file": cfg.data.strong_split if split_key == "strong" else split_key, "images": len(strong.strong()),
              "checksum": strong.checksum(), "pairs": len(ds.pairs)}
    return ds, record, "selective-search" if use_props else "random boxes only"


def crop_samples(cfg: Config, split_key: str, target: str) -> int:
    """The length :func:`crop_dataset` will have, from the split file alone (no mask is decoded)."""
    from hetseg.data.datasets import crop_pairs

    return len(crop_pairs(load_split(cfg, split_key).records, target)) * cfg.crops.crops_per_subset


def train_cls(net: nn.Module, cfg: Config, weak_key: str, resume: str | None, callbacks: Sequence,
              progress: bool) -> tuple[dict, dict]:
    """Stage ``cls`` on the image labels of split ``weak_key``; validated on the val split's labels."""
    from hetseg.data.datasets import ImageLabelDataset

    c, size = cfg.data.num_classes, net.input_size
    weak = load_split(cfg, weak_key).weak()
    val = load_split(cfg, "val")
    train_ds = ImageLabelDataset(weak, c, size, train=True, seed=cfg.seed)
    val_ds = ImageLabelDataset(val.weak(), c, size, train=False, seed=cfg.seed)
    summary = run_stage("cls", ClsStage(net, cfg.cls, c - 1), cfg, cfg.cls, train_ds, val_ds, resume,
                        callbacks, progress)
    return summary, {"weak": {"file": cfg.data.weak_split if weak_key == "weak" else weak_key,
                              "images": len(weak), "checksum": weak.checksum()}}


class DecoupledNetMethod(Method):
    name = "decouplednet"
    model = "decouplednet"
    encoder_model = "decouplednet_enc"
    stages = ("cls", "seg")
    extra_stages = ("pre",)
    crop_stages = ("seg",)
    mask_stages = ("seg",)

    def model_kwargs(self, cfg: Config) -> dict:
        return {**super().model_kwargs(cfg), "weight_pool": cfg.model.weight_pool}

    def stage_samples(self, cfg: Config, stage: str) -> int | None:
        if stage == "cls":
            return len(load_split(cfg, "weak"))
        return crop_samples(cfg, "strong", "binary") if stage == "seg" else None  # pre: its own item set

    def run_stage(self, stage: str, net: nn.Module, cfg: Config, resume: str | None, callbacks: Sequence,
                  progress: bool) -> tuple[dict, dict]:
        if stage == "pre":
            if net.classifier.num_classes != 10:
                raise HetsegError("--stage pre: it pretrains a 10-class classifier on fashion items; fix: run it "
                                  "with model.name=decouplednet and data.num_classes=11")
            return run_pretrain(ClassifierPretrainStage(net, cfg.pre), net, cfg, resume, callbacks, progress)
        if stage == "cls":
            return train_cls(net, cfg, "weak", resume, callbacks, progress)
        train_ds, record, props = crop_dataset(cfg, "strong", "binary", net.input_size)
        sc = self.stage_config(cfg, stage)
        summary = run_stage(stage, SegStage(net, sc), cfg, sc, train_ds, None, resume, callbacks, progress)
        return {**summary, "proposals": props}, {"strong": record}

    def after_stage(self, stage: str, net: nn.Module, cfg: Config) -> None:
        if stage == "pre":
            write_backbone(net, cfg.run_dir)


METHOD = register_method(DecoupledNetMethod())

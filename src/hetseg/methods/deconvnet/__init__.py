"""DeconvNet (Noh, Hong, Han, ICCV 2015), the masks-only baseline of DecoupledNet's Table 1: one
stage ``deconv`` training every layer on the strong set with the (K+1)-way loss (docs/REFERENCE.md §2)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from hetseg.config import Config
from hetseg.engine.stage import Stage, masked_ce
from hetseg.engine.train import run_stage
from hetseg.methods.base import Method, register_method
from hetseg.methods.decouplednet import crop_dataset, crop_samples


class DeconvStage(Stage):
    """All layers trained (``train_parts`` None) on multi-class crop targets."""

    def training_step(self, batch, batch_idx):
        x, _, target = batch
        loss = masked_ce(self.net(x), target)
        self.log("train/loss", loss, prog_bar=True)
        return loss


class DeconvNetMethod(Method):
    """With ``model.encoder`` other than vgg16: the masks-only baseline on that encoder (maskonly_enc)."""

    name = "deconvnet"
    model = "deconvnet"
    encoder_model = "maskonly_enc"
    stages = ("deconv",)
    crop_stages = ("deconv",)
    mask_stages = ("deconv",)

    def data_splits(self, cfg: Config) -> list[str]:
        return ["data.strong_split", "data.val_split"]  # masks only: no weak set

    def stage_samples(self, cfg: Config, stage: str) -> int | None:
        return crop_samples(cfg, "strong", "multiclass")

    def run_stage(self, stage: str, net: nn.Module, cfg: Config, resume: str | None, callbacks: Sequence,
                  progress: bool) -> tuple[dict, dict]:
        train_ds, record, props = crop_dataset(cfg, "strong", "multiclass", net.input_size)
        sc = self.stage_config(cfg, stage)
        summary = run_stage(stage, DeconvStage(net, sc), cfg, sc, train_ds, None, resume, callbacks, progress)
        return {**summary, "proposals": props}, {"strong": record}


METHOD = register_method(DeconvNetMethod())

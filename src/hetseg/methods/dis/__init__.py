"""DIS (Luo, Wang, Lin, Wang, ICCV 2017) as specified here (docs/DIS.md): three stages on a mixed
dataset of masked images (``data.strong_split``) and tag-only images (``data.weak_split``):

1. ``labelmap``: ResNet encoder + subnet-1 (labelmap) + subnet-3 (tags);
2. ``recon``: subnet-2 (image reconstruction from the labelmap), the rest frozen;
3. ``joint``: everything, tag-only images supervised by their labelmaps inferred with
   ``dis.t_train`` steps of iterative inference under their tags.

Optional stage ``pre`` pretrains the ResNet encoder on single fashion items and writes
``RUN/backbone.safetensors`` (hetseg.methods.pretrain; the CPU-scale stand-in for ImageNet ResNet,
shipped by ``hetseg bench backbone --family resnet``, docs/DIS.md "Starting weights").

Inference runs ``dis.t_test`` steps by default (``hetseg eval`` / ``predict``: the model's
``infer_steps``); a bench varies it through ``predict_kwargs={"steps": t}``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from hetseg.config import Config
from hetseg.data.mixed import MixedDataset
from hetseg.engine.context import load_split
from hetseg.engine.train import run_stage
from hetseg.methods.base import Method, register_method
from hetseg.methods.dis.stages import JointStage, LabelmapStage, ReconStage
from hetseg.methods.pretrain import EncoderPretrainStage, run_pretrain, write_backbone


class DISMethod(Method):
    name = "dis"
    model = "dis"
    stages = ("labelmap", "recon", "joint")
    extra_stages = ("pre",)
    mask_stages = stages

    def stage_section(self, stage: str) -> str:
        return stage if stage == "pre" else f"dis.{stage}"

    def model_kwargs(self, cfg: Config) -> dict:
        return {**super().model_kwargs(cfg), "infer_lr": cfg.dis.infer_lr, "infer_steps": cfg.dis.t_test}

    def dataset(self, cfg: Config, size: int) -> tuple[MixedDataset, dict]:
        strong, weak = load_split(cfg, "strong"), load_split(cfg, "weak").weak()
        ds = MixedDataset(strong, weak, cfg.data.num_classes, size, cfg.seed)
        return ds, {"strong": {"file": cfg.data.strong_split, "images": len(ds.strong), "checksum": strong.checksum()},
                    "weak": {"file": cfg.data.weak_split, "images": len(ds.weak), "checksum": weak.checksum()}}

    def stage_samples(self, cfg: Config, stage: str) -> int | None:
        return None if stage == "pre" else len(self.dataset(cfg, 1)[0])  # the same mixed set for all three

    def run_stage(self, stage: str, net: nn.Module, cfg: Config, resume: str | None, callbacks: Sequence,
                  progress: bool) -> tuple[dict, dict]:
        if stage == "pre":
            module = EncoderPretrainStage(net, cfg.pre, net.scale.encoder.out_channels)
            return run_pretrain(module, net, cfg, resume, callbacks, progress)
        ds, splits = self.dataset(cfg, net.input_size)
        sc = self.stage_config(cfg, stage)
        module = {"labelmap": lambda: LabelmapStage(net, sc), "recon": lambda: ReconStage(net, sc),
                  "joint": lambda: JointStage(net, sc, cfg.dis.t_train, cfg.dis.recon_weight)}[stage]()
        summary = run_stage(stage, module, cfg, sc, ds, None, resume, callbacks, progress)
        summary["rows_per_step"] = 2 * sc.batch_size * sc.accumulate
        if stage == "joint":
            summary["t_train"] = cfg.dis.t_train
        return summary, splits

    def after_stage(self, stage: str, net: nn.Module, cfg: Config) -> None:
        if stage == "pre":
            write_backbone(net, cfg.run_dir)


METHOD = register_method(DISMethod())

"""The benches' paper-scale recipes (hetseg.bench.paper) are the paper configs' training sections.

``hetseg bench table1 | transfer | dis --scale paper`` used to train the CPU benches' recipes (Adam,
a few thousand steps, the shipped backbone) at paper topology. Each bench now builds its paper recipe
from hetseg.bench.paper, and these tests hold each one equal to the configs/*_paper.yaml a user would
train by hand, field by field, so neither can change alone. Reads only files inside the repository.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hetseg.bench import dis as dis_bench
from hetseg.bench.table1_recipe import base_config, cell_config, equal_effort
from hetseg.bench.transfer import transfer_config
from hetseg.config import Config
from hetseg.errors import HetsegError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VGG = ["model.vgg_weights=/weights/vgg16.pth"]
# Training fields; checkpoint_every is compared too (a 1.9-3.2 GB file every 200 steps was a finding).
FIELDS = [f.name for f in dataclasses.fields(Config().cls)]


def stages_equal(got, want, where: str) -> None:
    diff = {f: (getattr(got, f), getattr(want, f)) for f in FIELDS if getattr(got, f) != getattr(want, f)}
    assert not diff, f"{where}: bench vs config file {diff}"


def paper_config(name: str) -> Config:
    return Config.load(CONFIGS / f"{name}_paper.yaml")


def test_table1_paper_recipe_is_the_voc_configs():
    base = base_config("paper", 0, "/data/VOC2012", overrides=VGG, init="pretrained")
    dn, dc = paper_config("decouplednet_voc"), paper_config("deconvnet_voc")
    stages_equal(base.cls, dn.cls, "cls")
    stages_equal(base.seg, dn.seg, "seg")
    stages_equal(base.deconv, dc.deconv, "deconv")  # the equal-effort rule gives the DeconvNet config
    assert (base.crops.crops_per_subset, base.crops.max_scale) == (dn.crops.crops_per_subset, dn.crops.max_scale)
    assert base.model.weight_pool == dn.model.weight_pool and base.data.workers == dn.data.workers
    assert base.crops.proposals == "none"  # the bench's one rule for every method (EQUAL_EFFORT)
    assert base.model.vgg_weights == "/weights/vgg16.pth" and not base.model.backbone
    deconv = cell_config(base, "deconvnet", 5, "runs")
    assert deconv.model.name == "deconvnet" and deconv.deconv.steps == base.cls.steps + base.seg.steps == 11000
    assert int(deconv.deconv.lr_step * deconv.deconv.steps) == 8000  # lr x0.1 on step 8,000
    assert "configs/decouplednet_voc_paper.yaml" in equal_effort("pretrained", "paper")
    # from scratch: the same budgets, random weights said out loud
    scratch = base_config("paper", 0, "/data/VOC2012", init="scratch")
    stages_equal(scratch.seg, dn.seg, "seg (scratch)")
    assert scratch.model.imagenet is False


def test_table1_cpu_recipe_is_unchanged_by_the_paper_one():
    """The committed CPU tables' recipe: Adam 2e-3 classifiers, DeconvNet on the classifiers' solver."""
    cpu = base_config("cpu", 0, "d", init="pretrained")
    assert (cpu.cls.steps, cpu.cls.lr, cpu.seg.steps, cpu.cls.optimizer) == (3000, 2e-3, 2400, "adam")
    assert (cpu.deconv.optimizer, cpu.deconv.lr, cpu.deconv.steps) == ("adam", 2e-3, 5400)


def test_table1_paper_pretrained_needs_imagenet_weights():
    with pytest.raises(HetsegError, match=r"--init pretrained: .*fix: add model.vgg_weights=FILE.*--init scratch"):
        base_config("paper", 0, "d", init="pretrained")
    with pytest.raises(HetsegError, match="unknown scale"):
        base_config("gpu", 0, "d", init="pretrained")


def test_transfer_paper_recipe_is_the_coco_configs():
    cfg = transfer_config("paper", 0, "/data/VOC2012", VGG)
    tn, bn, dnt = paper_config("transfernet_coco"), paper_config("baselinenet_coco"), \
        paper_config("decouplednet_transfer_coco")
    stages_equal(cfg.cls, tn.cls, "cls")
    stages_equal(cfg.transfer.att, tn.transfer.att, "transfer.att")
    stages_equal(cfg.transfer.joint, tn.transfer.joint, "transfer.joint")
    stages_equal(cfg.transfer.baseline, bn.transfer.baseline, "transfer.baseline")
    stages_equal(cfg.seg, dnt.seg, "seg (DecoupledNet-transfer)")
    # equal effort: 32 source-mask rows per update for every decoder; DecoupledNet-transfer's BatchNorm
    # sees micro-batches of 16 crops, not stage 2's 2 (a memory choice of TransferNet's joint stage)
    j = cfg.transfer.joint
    assert (cfg.seg.batch_size, cfg.seg.accumulate) == (16, 2) and j.batch_size * j.accumulate == 32
    assert cfg.seg.steps == cfg.transfer.baseline.steps == j.steps
    assert cfg.transfer.feature_scale == tn.transfer.feature_scale == 0
    assert cfg.model.scale == "paper" and cfg.data.workers == 8


def test_dis_paper_recipe_is_the_voc_config():
    base = dis_bench.base_config("paper", 0, "/data/VOC2012", 5, "runs",
                                 overrides=["model.resnet_weights=/weights/resnet101.pth"])
    want = paper_config("dis_voc")
    for name in ("labelmap", "recon", "joint"):
        stages_equal(getattr(base.dis, name), getattr(want.dis, name), f"dis.{name}")
    assert (base.dis.t_train, base.dis.t_test) == (want.dis.t_train, want.dis.t_test) == (30, 30)
    assert not base.model.backbone  # ImageNet ResNet-101, not the shipped CPU one
    cpu = dis_bench.base_config("cpu", 0, "d", 5, "runs")
    assert (cpu.dis.labelmap.steps, cpu.dis.labelmap.optimizer, cpu.dis.t_train) == (7200, "adam", 5)


def test_transfer_paper_without_imagenet_weights_is_refused_in_its_config():
    """Refused where the recipe is built, so ``bench transfer --scale paper`` leaves no folder behind
    (it used to make the seed's run folder and split file first, then stop in the first stage)."""
    with pytest.raises(HetsegError, match=r"^model.vgg_weights: not given.*fix: model.vgg_weights=FILE"):
        transfer_config("paper", 0, "/data/VOC2012")
    assert transfer_config("paper", 0, "/data/VOC2012", ["model.imagenet=false"]).model.imagenet is False
    cpu = transfer_config("cpu", 0, "d")
    assert cpu.model.backbone == "shipped" and (cpu.seg.batch_size, cpu.seg.accumulate) == (16, 1)  # committed runs

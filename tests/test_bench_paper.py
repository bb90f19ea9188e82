"""The benches at paper scale: their recipes (hetseg.bench.paper) are the paper configs' training settings,
and what would stop them hours in is refused before they make a folder.

``hetseg bench table1 | transfer | dis --scale paper`` used to train the CPU benches' recipes (Adam,
a few thousand steps, the shipped backbone) at paper topology. Each bench now builds its paper recipe
from hetseg.bench.paper; these tests hold every setting of it equal to the configs/*_paper.yaml a user
would train by hand, except the keys listed as the bench's own, so neither can change alone. Reads only
files inside the repository and what the tests write under tmp_path.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import pytest

from hetseg.bench import dis as dis_bench
from hetseg.bench.table1_recipe import base_config, cell_config, equal_effort
from hetseg.bench.transfer import transfer_config
from hetseg.config import Config, _leaves
from hetseg.errors import HetsegError

from conftest import make_scenes

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return make_scenes(tmp_path_factory, "paper_bench_scenes", seed=2, num_train=40, num_val=6)
# What a bench sets itself, or takes from the command line, rather than from the config file: the data
# (root, splits, classes), where runs go, the method a cell trains and its starting file; Table 1's
# proposals are off for every method (table1_recipe.EQUAL_EFFORT).
OWN = ("run_dir", "seed", "data.root", "data.weak_split", "data.strong_split", "data.val_split", "data.num_classes",
       "data.class_names", "data.labels", "model.name", "model.vgg_weights", "model.resnet_weights",
       "transfer.source_split", "transfer.target_split", "transfer.val_split", "transfer.source_classes",
       "transfer.target_classes")


def differing(got: Config, want: Config, sections: tuple[str, ...], own: tuple[str, ...] = OWN) -> dict:
    """Settings under ``sections`` (dotted prefixes), less ``own`` (prefixes), that differ between a bench's config and a file's."""
    a, b = _leaves(got.to_dict()), _leaves(want.to_dict())
    return {k: (a[k], b.get(k)) for k in a if k.startswith(sections) and not k.startswith(own) and a[k] != b.get(k)}


def paper_config(name: str) -> Config:
    return Config.load(CONFIGS / f"{name}_paper.yaml")


def test_table1_paper_recipe_is_the_voc_configs():
    base = base_config("paper", 0, "/data/VOC2012", overrides=["model.vgg_weights=/w/vgg16.pth"], init="pretrained")
    dn, dc = paper_config("decouplednet_voc"), paper_config("deconvnet_voc")
    common = ("crops.", "model.", "eval.", "data.workers")
    assert differing(base, dn, ("cls.", "seg.", *common)) == {"crops.proposals": ("none", "auto")}
    deconv = cell_config(base, "deconvnet", 5, "runs")
    assert differing(deconv, dc, ("deconv.", *common)) == {"crops.proposals": ("none", "auto")}  # by equal effort
    assert deconv.deconv.steps == base.cls.steps + base.seg.steps == 11000
    assert int(deconv.deconv.lr_step * deconv.deconv.steps) == 8000  # lr x0.1 on step 8,000
    assert base.model.vgg_weights == "/w/vgg16.pth" and not base.model.backbone
    assert "configs/decouplednet_voc_paper.yaml" in equal_effort("pretrained", "paper")
    # from scratch: the same budgets, random weights said out loud
    scratch = base_config("paper", 0, "/data/VOC2012", init="scratch")
    assert differing(scratch, dn, ("cls.", "seg.")) == {} and scratch.model.imagenet is False


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
    cfg = transfer_config("paper", 0, "/data/VOC2012", ["model.vgg_weights=/w/vgg16.pth"])
    tn = paper_config("transfernet_coco")
    # TransferNet's file names no baseline section: BaselineNet's budget is its own file's, below
    assert differing(cfg, tn, ("cls.", "transfer.", "crops.", "model.", "eval.", "data.workers"),
                     OWN + ("transfer.baseline.",)) == {}
    assert differing(cfg, paper_config("baselinenet_coco"), ("transfer.baseline.",)) == {}
    assert differing(cfg, paper_config("decouplednet_transfer_coco"), ("seg.",)) == {}
    # equal effort: 32 source-mask rows per update for every decoder; DecoupledNet-transfer's BatchNorm
    # sees micro-batches of 16 crops, not stage 2's 2 (a memory choice of TransferNet's joint stage)
    j = cfg.transfer.joint
    assert (cfg.seg.batch_size, cfg.seg.accumulate) == (16, 2) and j.batch_size * j.accumulate == 32
    assert cfg.seg.steps == cfg.transfer.baseline.steps == j.steps


def test_transfer_equal_effort_takes_stage_2s_micro_batch_where_its_own_does_not_divide():
    cfg = transfer_config("cpu", 0, "d", ["transfer.joint.batch_size=12"])  # 12 rows: 16 does not divide them
    assert (cfg.seg.batch_size, cfg.seg.accumulate) == (12, 1)
    cpu = transfer_config("cpu", 0, "d")
    assert cpu.model.backbone == "shipped" and (cpu.seg.batch_size, cpu.seg.accumulate) == (16, 1)  # committed runs


def test_dis_paper_recipe_is_the_voc_config():
    base = dis_bench.base_config("paper", 0, "/data/VOC2012", 5, "runs", overrides=["model.resnet_weights=/w/r101.pth"])
    assert differing(base, paper_config("dis_voc"), ("dis.", "model.", "eval.", "crops.", "data.workers")) == {}
    assert (base.dis.t_train, base.dis.t_test) == (30, 30) and not base.model.backbone
    cpu = dis_bench.base_config("cpu", 0, "d", 5, "runs")
    assert (cpu.dis.labelmap.steps, cpu.dis.labelmap.optimizer, cpu.dis.t_train) == (7200, "adam", 5)
    assert cpu.model.backbone == "shipped"
    # at paper scale the bench no longer names the shipped CPU backbone itself: no file asks for ImageNet
    assert not dis_bench.base_config("paper", 0, "/data/VOC2012", 5, "runs").model.backbone


def _no_folders(tmp_path: Path) -> None:
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_benches_refuse_a_missing_imagenet_file_before_any_folder(scenes, tmp_path):
    """Paper scale with no ImageNet file, or a mistyped one: one line, and no run or results folder (the
    transfer bench made the seed's folder and split file, then stopped in its first stage)."""
    from hetseg.bench.dis import run_dis
    from hetseg.bench.table1 import run_table1
    from hetseg.bench.transfer import run_transfer

    args = dict(out=str(tmp_path / "out"), data=str(scenes), runs=str(tmp_path / "runs"))
    with pytest.raises(HetsegError, match=r"^model.vgg_weights: not given.*fix: model.vgg_weights=FILE"):
        run_transfer("paper", [0], **args)
    with pytest.raises(HetsegError, match=r"^model.vgg_weights=/nope/vgg.pth: no such file; fix"):
        run_transfer("paper", [0], overrides=["model.vgg_weights=/nope/vgg.pth"], **args)
    with pytest.raises(HetsegError, match=r"^model.resnet_weights: not given.*model.imagenet=false"):
        run_dis("paper", [0], **args)
    with pytest.raises(HetsegError, match=r"^model.vgg_weights=/nope/vgg.pth: no such file"):
        run_table1("paper", [0], overrides=["model.vgg_weights=/nope/vgg.pth"], **args)
    _no_folders(tmp_path)


def test_benches_refuse_a_split_or_class_list_they_would_read_hours_in(scenes, tmp_path):
    """A val split read after every cell, a k's strong split read when its cell starts, TransferNet's
    classes read when stage 2 builds: each refused in one line before anything is made."""
    from hetseg.bench.dis import run_dis
    from hetseg.bench.table1 import run_table1
    from hetseg.bench.transfer import run_transfer

    args = dict(out=str(tmp_path / "out"), data=str(scenes), runs=str(tmp_path / "runs"))
    with pytest.raises(HetsegError, match=r"^--ks 7: no split file .*strong_7.txt; fix: hetseg data splits .*"
                                          r"--per-class 7 --out .*or leave 7 out of --ks") as e:
        run_table1("cpu", [0], ks=(5, 7), **args)
    assert "\n" not in str(e.value)
    with pytest.raises(HetsegError, match=r"^data.val_split: no split file .*nope.txt"):
        run_table1("cpu", [0], ks=(5,), overrides=["data.val_split=splits/nope.txt"], **args)
    with pytest.raises(HetsegError, match=r"^data.val_split: no split file .*nope.txt"):
        run_dis("cpu", [0], overrides=["data.val_split=splits/nope.txt"], **args)
    with pytest.raises(HetsegError, match=r"^transfer.val_split: no split file"):
        run_transfer("cpu", [0], overrides=["transfer.val_split=splits/nope.txt"], **args)
    with pytest.raises(HetsegError, match=r"^transfer.source_classes: 99 is not an object class"):
        run_transfer("cpu", [0], overrides=["transfer.source_classes=[99]", "transfer.target_classes=[1]"], **args)
    _no_folders(tmp_path)


def test_transfer_class_lists_are_checked_where_they_are_read(scenes):
    from hetseg.methods.transfernet.data import transfer_classes

    cfg = Config().override([f"data.root={scenes}"])
    src, tgt = transfer_classes(cfg)  # the data set's own lists (meta.json) pass
    assert src and tgt and not set(src) & set(tgt)
    for bad, msg in ((["transfer.source_classes=[1,2]", "transfer.target_classes=[2]"], "class 2 is also a source"),
                     (["transfer.target_classes=[0]"], "0 is not an object class"),
                     (["transfer.source_classes=[3,3]", "transfer.target_classes=[4]"], "listed twice")):
        with pytest.raises(HetsegError, match=msg):
            transfer_classes(cfg.override(bad))


def test_paper_scale_results_name_the_imagenet_file(tmp_path):
    """A paper-scale report said "random weights" beside an ImageNet start: it names the file and sha256."""
    from hetseg.bench.provenance import start_weights
    from hetseg.bench.table1_report import _backbone_line

    w = tmp_path / "vgg16.pth"
    w.write_bytes(b"not really weights")
    rec = start_weights(Config().override(["model.scale=paper", f"model.vgg_weights={w}"]))
    assert rec["imagenet"] and rec["sha256"] == hashlib.sha256(w.read_bytes()).hexdigest()
    assert f"ImageNet weights `{w}` (sha256 `{rec['sha256'][:12]}…`)" in _backbone_line(rec)
    assert start_weights(Config()) is None and _backbone_line(None) == ": every network from random weights."


def test_bench_defaults_at_paper_scale_keep_one_gpu_and_the_committed_results():
    """--jobs 1 (one cell on the GPU, not N single-thread CPU processes) and results beside, not over,
    the committed CPU ones; CPU scale keeps 2 and benchmarks/results."""
    from hetseg.cli import bench_defaults
    from hetseg.cli_parser import build_parser

    def parsed(*argv: str) -> argparse.Namespace:
        args = build_parser().parse_args(["bench", *argv])
        bench_defaults(args)
        return args

    a = parsed("table1", "--scale", "paper")
    assert (a.jobs, a.out) == (1, "benchmarks/results/paper")
    a = parsed("dis")
    assert (a.jobs, a.out) == (2, "benchmarks/results")
    a = parsed("transfer", "--scale", "paper", "--jobs", "3", "--out", "o")
    assert (a.jobs, a.out) == (3, "o")


def test_the_full_alias_reads_each_weak_split_once(scenes, monkeypatch):
    """Which -Str cells are DecoupledNet's ('full': strong images = weak set) is decided by reading each
    split once for every seed and k, not once per comparison (VOC: 10,582 masks decoded per read)."""
    import hetseg.methods
    from hetseg.bench.table1 import same_classifier_data
    from hetseg.bench.table1_recipe import classifier_config

    reads = []
    real = hetseg.methods.load_split
    monkeypatch.setattr(hetseg.methods, "load_split", lambda cfg, which: reads.append(cfg.data.weak_split)
                        or real(cfg, which))
    memo: dict = {}
    same = {}
    for seed in (0, 1):
        base = base_config("cpu", seed, str(scenes))
        for k in (5, "full"):
            same[(seed, k)] = same_classifier_data(cell_config(base, "decouplednet-str", k, "r"),
                                                   classifier_config(base, "r"), memo)
    assert same == {(0, 5): False, (0, "full"): True, (1, 5): False, (1, "full"): True}
    assert sorted(reads) == sorted({"splits/strong_5.txt", "splits/train_full.txt", "splits/train_weak.txt"})

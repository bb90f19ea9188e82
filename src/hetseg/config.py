"""One config object flows from the CLI to the engine and is saved with every run.

Typed dataclasses, loaded from YAML/JSON and overridden by dotted ``key=value`` arguments
(file < CLI, as in timm and nanoGPT). ``Config.save`` writes ``config.json`` into the run dir.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hetseg.config_check import YamlLoader, merge, parse_override
from hetseg.errors import HetsegError, path_problem
from hetseg.io_atomic import parse_json


@dataclass
class DataConfig:
    root: str = "data/fashion-scenes"          # dataset root (VOC layout)
    weak_split: str = "splits/train_weak.txt"  # image-level labels (classifier, stage cls)
    strong_split: str = "splits/strong_5.txt"  # masks (stage seg, DeconvNet)
    val_split: str = "splits/val.txt"          # evaluation
    num_classes: int = 11                      # incl. background (VOC: 21)
    class_names: list[str] = field(default_factory=list)  # empty: read <root>/classes.txt
    labels: str = ""                           # image labels: labels.json or irn/psa cls_labels.npy; empty: <root>/labels.json
    workers: int = 0                           # DataLoader workers (0 = main process)
    fashion_mnist_dir: str = ""                # stage "pre" items; empty = $HETSEG_FASHION_MNIST, else Debian's dir
    pretrain_holdout: int = 2000               # stage "pre": last N train items held out for val/acc


@dataclass
class ModelConfig:
    name: str = "decouplednet"   # the method (hetseg.methods): decouplednet | deconvnet | transfernet | ...
    scale: str = "cpu"           # cpu | paper
    weight_pool: str = "avg"     # avg | max: which pooled score weights f_cls (docs/REFERENCE.md §7.2)
    vgg_weights: str = ""        # optional torchvision-format VGG-16 file (paper scale)
    resnet_weights: str = ""     # optional torchvision-format ResNet-101 file (DIS, paper scale)
    backbone: str = ""           # optional backbone.safetensors (or its run dir) from stage "pre"
    encoder: str = "vgg16"       # vgg16: the method's paper encoder (VGG-16; DIS: ResNet) | a models/encoders.py name
    imagenet: bool = True        # non-VGG encoders: start from their ImageNet weights (hetseg[imagenet]); paper-scale
                                 # VGG-16 / ResNet: false starts from random weights on purpose (else model.vgg_weights
                                 # / model.resnet_weights is required: engine/context.init_weights)
    input_size: int = 0          # non-VGG encoders: the square input side (0: 320)
    width: int = 0               # non-VGG encoders: head / bridge / neck width (0: the model's 256)
    bridge_kernel: int = 0       # non-VGG encoders: fc6-seg / fc6-deconv kernel (0: the model's 3)
    decoder_stride: int = 0      # non-VGG encoders: stride of the last decoder stage, 2 | 4 | 8 | 16 (0: the model's 2)


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
    # Lightning precision, or "auto": bf16-mixed where the device computes bf16 natively (a CUDA GPU
    # with bf16, a CPU with AVX512-BF16/AMX: ~1.8x faster there, same loss curves), else 32-true
    # (an AVX2-only CPU emulates bf16 ~7x slower than float32; docs/DECISIONS.md, "Precision").
    precision: str = "auto"
    channels_last: bool = True   # NHWC memory format: ~1.2x faster convolutions, identical maths
    checkpoint_every: int = 200  # steps between last.ckpt saves
    val_every: int = 0           # steps between validation runs (0 = only at the end)
    # lr multiplier of the parameters a model reports as pretrained (``pretrained_modules``: an
    # ImageNet encoder); 0 freezes them (eval-mode BN, no gradient through them).
    pretrained_lr_mult: float = 1.0
    # The multi-label classifier's BCE (stage cls only; Method.unread names it elsewhere): "mean" over images
    # and classes (torch's default), or "caffe", summed over classes and averaged over images as Caffe's
    # SigmoidCrossEntropyLoss, which the original classifiers presumably trained with (docs/DECISIONS.md):
    # K times the gradient of "mean". Adam (the CPU recipes) is nearly blind to the factor; SGD at a Caffe
    # learning rate is not (the paper configs).
    label_loss: str = "mean"


@dataclass
class CropConfig:
    """Combinatorial cropping (DecoupledNet Sec. 5), see hetseg.data.crops."""

    crops_per_subset: int = 200  # N_p
    full_image_prob: float = 0.1  # share of samples that use the uncropped image (our N_s term; docs/DECISIONS.md)
    max_scale: float = 1.6        # largest box side relative to the image side
    proposals: str = "auto"       # auto | none | selective-search (needs opencv-contrib)


@dataclass
class EvalConfig:
    threshold: float = 0.5       # a label is identified when its avg-pooled score exceeds it
    split: str = "val"           # what `hetseg eval` scores when --split is not given


def _adam(steps: int, lr: float) -> StageConfig:
    """TransferNet's solvers (docs/REFERENCE.md §3.7): Adam, fixed lr (lr_step 1.0 = no drop), no weight decay."""
    return StageConfig(steps=steps, batch_size=16, lr=lr, optimizer="adam", weight_decay=0.0, lr_step=1.0)


@dataclass
class TransferConfig:
    """TransferNet and the baselines of its Sec. 6.3 (hetseg.methods.transfernet, docs/TRANSFERNET.md).

    ``att``/``joint`` batch_size counts (image, label) rows *per domain*: a step sees one whole
    target sub-batch and one whole source sub-batch (2 x batch_size rows). ``baseline`` is
    BaselineNet's decoder stage (source rows only). Class lists are mask indices.
    """

    source_split: str = "splits/transfer_source_train.txt"  # masks of source classes
    target_split: str = "splits/transfer_target_train.txt"  # image labels of target classes only
    val_split: str = "splits/transfer_target_val.txt"       # evaluation: target classes, masks
    source_classes: list[int] = field(default_factory=list)  # empty: the dataset's (meta.json), e.g. fashion-scenes'
    target_classes: list[int] = field(default_factory=list)
    attention: str = "code"        # code (extra FC+ReLU, released prototxt) | paper (the equation)
    feature_scale: float = 0.004   # A = s * conv5_3; 0 = calibrate on training images (max -> ~1)
    embed_dim: int = 0             # factors d; 0 = 2 * C5 (1024 paper, 256 CPU)
    seg_weight: float = 2.0        # lambda (docs/REFERENCE.md §3.6)
    threshold: float = 0.6         # separate classifier: labels with sigmoid score > threshold
    bg_scale: float = 0.5          # inference prior: P(bg) x 0.5, renormalised (docs/REFERENCE.md §3.9)
    crf: bool = False              # per-class binary dense CRF at inference (needs pydensecrf2)
    classifier_run: str = ""       # a finished decouplednet run whose classifier replaces stage cls
    att: StageConfig = field(default_factory=lambda: _adam(15000, 1e-3))
    joint: StageConfig = field(default_factory=lambda: _adam(15000, 5e-4))
    baseline: StageConfig = field(default_factory=lambda: _adam(15000, 5e-4))


def _dis_stage(steps: int, lr: float) -> StageConfig:
    """DIS stages (the paper gives no solver, docs/DIS.md): Adam as the CPU classifier recipe;
    batch_size counts (masked row, tag-only row) pairs, so a step sees 2 x batch_size images."""
    return StageConfig(steps=steps, batch_size=16, optimizer="adam", lr=lr, weight_decay=0.0, lr_step=0.75)


@dataclass
class DISConfig:
    """DIS (hetseg.methods.dis, docs/DIS.md). Budget (docs/DIS.md "Budgets"): labelmap 7,200 + recon
    400 + joint 1,200 steps (the first bench's doubled, then the labelmap's tripled: its training loss
    was still falling); at CPU scale the encoder starts from the shipped ResNet backbone
    (``model.backbone=shipped``)."""

    t_train: int = 5             # t_tr: inference steps that make a tag-only image's labelmap (stage joint)
    t_test: int = 30             # t_ts: predict/eval default (the paper's best t_ts is 30)
    infer_lr: float = 0.05       # initial iterative-inference step, relative to the features' RMS
    recon_weight: float = 1.0    # weight of the reconstruction loss in stage joint
    labelmap: StageConfig = field(default_factory=lambda: _dis_stage(7200, 0.002))
    recon: StageConfig = field(default_factory=lambda: _dis_stage(400, 0.002))
    joint: StageConfig = field(default_factory=lambda: _dis_stage(1200, 0.0005))


@dataclass
class Config:
    run_dir: str = "runs/demo"
    seed: int = 0
    # torch deterministic algorithms (Lightning's Trainer(deterministic=True)); on CPU the kernels
    # used here are deterministic already, so it costs nothing measurable there (docs/GUARANTEES.md).
    deterministic: bool = False
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
    dis: DISConfig = field(default_factory=DISConfig)

    # ---- persistence -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Nested plain dicts, as saved in a run's config.json."""
        return asdict(self)

    def recipe_difference(self, saved: dict[str, Any], reader: str | None = None) -> list[str]:
        """The dotted keys (``cls.steps``) in which a run's saved ``config.json`` differs from this
        config, among the sections the method ``reader`` (default ``model.name``) reads (``run_dir``,
        :data:`RUNTIME_KEYS` and :data:`RUNTIME_FIELDS` never count; :data:`OWN_SECTIONS`). Empty: the
        same recipe."""
        reader = reader or self.model.name
        skip = {"run_dir"} | {sec for sec, readers in OWN_SECTIONS.items() if reader not in readers}

        def runtime(key: str) -> bool:
            return key in RUNTIME_KEYS or key.rsplit(".", 1)[-1] in RUNTIME_FIELDS

        new = _leaves({k: v for k, v in self.to_dict().items() if k not in skip})
        # A key the saved config lacks is a field added since that run: its default, which keeps the old
        # behaviour, is what the run trained with -- not a difference.
        defaults = _leaves({k: v for k, v in Config().to_dict().items() if k not in skip})
        old = {**defaults, **_leaves({k: v for k, v in saved.items() if k not in skip})}
        return sorted(k for k in set(old) | set(new) if not runtime(k) and old.get(k, ...) != new.get(k, ...))

    def changed_keys(self) -> list[str]:
        """The dotted leaf keys whose value differs from the defaults (``Config()``), sorted."""
        mine, defaults = _leaves(self.to_dict()), _leaves(Config().to_dict())
        return sorted(k for k in mine if mine[k] != defaults.get(k, ...))

    def recipe_difference_from(self, path: str | Path, reader: str | None = None) -> list[str]:
        """:meth:`recipe_difference` against the config saved at ``path`` ([] when there is none); a
        file that does not parse is one error line."""
        p = Path(path)
        if not p.is_file():
            return []
        try:
            saved = parse_json(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise HetsegError(f"{p}: cannot read a run's saved config ({type(e).__name__}); fix: restore it, "
                              "or use another run directory") from None
        return self.recipe_difference(saved if isinstance(saved, dict) else {}, reader)

    def save(self, path: str | Path) -> None:
        """Write the resolved config as JSON (atomically: a later command trusts it)."""
        from hetseg.io_atomic import write_json

        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> Config:
        """Deep-merge ``d`` into the defaults (a partly given section keeps the other defaults of
        *that* section, e.g. ``cls: {steps: 600}`` keeps cls's Adam) and validate every field.
        ``where`` names the file or argument in error messages."""
        if not isinstance(d, dict):
            raise HetsegError(f"{where}: expected a mapping of sections, got {type(d).__name__}; "
                              "fix: see configs/*.yaml")
        return merge(cls(), d, where, "")

    @classmethod
    def load(cls, path: str | Path) -> Config:
        """A YAML or JSON file merged onto the defaults, every key checked (one-line HetsegError)."""
        p = Path(path)
        if p.exists() and not p.is_file() and not p.is_dir():  # a pipe would block read_text() for ever
            raise HetsegError(f"{p}: {path_problem(p, 'config file')}; fix: give a YAML or JSON file")
        try:
            d = yaml.load(p.read_text(encoding="utf-8"), Loader=YamlLoader)
        except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as e:  # RecursionError: [[[[...
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            mark = getattr(e, "problem_mark", None)  # a YAML syntax error: where it is, as an editor counts
            if mark is not None:
                why = f"line {mark.line + 1}, column {mark.column + 1}: {getattr(e, 'problem', None) or why}"
            fix = ("give each key once (merge the two)" if why.endswith("twice") else "check the path"
                   if isinstance(e, FileNotFoundError) else "give a YAML or JSON file")
            raise HetsegError(f"{p}: cannot read config ({why}); fix: {fix}") from None
        if d is None:  # empty or comments only: a failed copy or a full disk, not a recipe (false, 0, [] are
            # refused by from_dict); '{}' still says "all defaults" on purpose
            raise HetsegError(f"{p}: empty config (no settings); fix: restore the file, or write {{}} in it to train "
                              "with the defaults")
        return cls.from_dict(d, str(p))

    def override(self, items: list[str] | str) -> Config:
        """Apply dotted ``key=value`` overrides, e.g. ``seg.steps=100 model.scale=paper``: the
        same deep merge and validation as :meth:`load` (a test checks both give one config)."""
        if isinstance(items, str):  # one override given bare would be read character by character
            items = [items]
        cfg = self
        for item in items:
            if "=" not in item:
                raise HetsegError(f"{item}: override is not key=value; fix: write e.g. seg.steps=100")
            key, parsed = parse_override(item)
            nested: dict[str, Any] = {}
            node = nested
            parts = key.split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = parsed
            cfg = merge(cfg, nested, item, "")
        return cfg


# Config sections that only some methods (model.name) read: a run of another method neither trains with
# them nor is blocked by their change (DIS's budgets changing must not refuse a finished Table 1 cell).
OWN_SECTIONS = {"deconv": {"deconvnet"}, "dis": {"dis"},
                "transfer": {"transfernet", "baselinenet", "decouplednet_transfer"}}


def _leaves(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts flattened to ``{dotted key: leaf value}``."""
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    return {k: v for key, sub in d.items() for k, v in _leaves(sub, f"{prefix}{key}.").items()}


def _stage_sections(cls: type, prefix: str = "") -> tuple[str, ...]:
    hints = typing.get_type_hints(cls)
    out: list[str] = []
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if t is StageConfig:
            out.append(prefix + f.name)
        elif dataclasses.is_dataclass(t):
            out.extend(_stage_sections(t, f"{prefix}{f.name}."))
    return tuple(out)


# Every dotted section that is one stage's budget (pre, cls, seg, deconv, transfer.att, dis.joint, ...):
# a method reads only its own stages' (Method.check_overrides).
STAGE_SECTIONS = _stage_sections(Config)


def at(cfg: Config, dotted: str) -> Any:
    """The section or setting of ``cfg`` a dotted name gives (``dis.labelmap``, ``transfer.source_split``)."""
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def section_of(cfg: Config, sc: StageConfig) -> str | None:
    """The dotted section of ``cfg`` that holds ``sc`` itself (``cls``, ``dis.labelmap``), for error lines; None if
    ``sc`` is none of them (a copy)."""
    return next((section for section in STAGE_SECTIONS if at(cfg, section) is sc), None)


def describe_difference(keys: list[str], most: int = 4) -> str:
    """``keys`` of a :meth:`Config.recipe_difference` for an error line: the first ``most``, then a count."""
    return ", ".join(keys[:most]) + (f" and {len(keys) - most} more" if len(keys) > most else "")


# Settings that never change a run's weights, so a resume with other values is the same recipe: DataLoader
# workers (augmentation is seeded by (seed, epoch, index), engine/resume.py), where the Fashion-MNIST
# files live, and -- in any stage -- how often it checkpoints and validates (the model draws no random
# numbers, so neither touches the training).
RUNTIME_KEYS = frozenset({"data.workers", "data.fashion_mnist_dir"})
RUNTIME_FIELDS = frozenset({"checkpoint_every", "val_every"})

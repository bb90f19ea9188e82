"""What every method's recipe needs from a run's config: its splits, class names, command line, and
a freshly seeded model with its starting weights. Generic: no method or stage names here."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import torch
from torch import nn

from hetseg.config import Config, at
from hetseg.data.records import Split, default_root, read_split
from hetseg.errors import HetsegError
from hetseg.metrics import first_repeated, read_classes_file


def class_names(cfg: Config, check: bool = True) -> list[str]:
    """Config names, else ``<root>/classes.txt``, else generic ``class<i>`` names.

    With ``check``, a given list must have ``data.num_classes`` names (background first): one of
    another length is refused in one line, since a run trained that way would crash every ``eval``
    and ``predict`` (a class index with no name) after training has been paid for."""
    if cfg.data.class_names:
        names, where = list(cfg.data.class_names), "data.class_names"
        twice = first_repeated(names)
        if twice is not None:  # model.json refuses it on load: the trained run could never be evaluated
            raise HetsegError(f"data.class_names: '{twice}' is given twice; fix: give every class its own name")
    else:
        p = Path(cfg.data.root) / "classes.txt"
        if not p.is_file():
            return ["background"] + [f"class{i}" for i in range(1, cfg.data.num_classes)]
        # The same reader as `score` and `eval`: a blank line inside would shift every later class
        # index by one, so it is refused, not skipped (README, "Data: your own, VOC, SBD, COCO").
        names, where = read_classes_file(p), str(p)
    if check and len(names) != cfg.data.num_classes:
        raise HetsegError(f"{where}: names {len(names)} classes (background included) but data.num_classes="
                          f"{cfg.data.num_classes}; fix: set data.num_classes={len(names)}, or a class list of "
                          f"{cfg.data.num_classes} names (data.class_names)")
    return names


def load_split(cfg: Config, which: str, root: str | Path | None = None, mask_labels: bool = True) -> Split:
    """A split of the run's dataset, or a split file read against *its own* root.

    ``which``: ``weak`` | ``strong`` | ``val`` (the config's split files; with ``root``, those paths under
    ``root``, another dataset's split of that role) or a path relative to
    ``cfg.data.root`` (or a bare name in ``<root>/splits``) -- read against ``cfg.data.root``; or
    any other existing split file, read against ``root`` when given, else against the dataset root
    it lives in (the parent of its ``splits/`` or ``ImageSets/`` folder). A split of another dataset
    is therefore never scored against this run's images; its files must exist under its root.
    Labels of the run's own splits come from ``data.labels`` when set (e.g. labels written beside a
    read-only VOC root), else from ``<root>/labels.json``, else from the masks (``mask_labels`` False: not
    decoded here, :func:`hetseg.data.records.read_split`).
    """
    data_root = Path(cfg.data.root)
    rel = {"weak": cfg.data.weak_split, "strong": cfg.data.strong_split, "val": cfg.data.val_split}.get(which)
    if rel is not None and root is not None and Path(root).resolve() != data_root.resolve():
        # --root names another dataset: its split of that role (--root was ignored)
        if Path(rel).is_absolute():
            raise HetsegError(f"--root {root}: the run's data.{which}_split is an absolute path ({rel}), so it has no "
                              "place under that root; fix: give --split the split file of that dataset")
        path = Path(root) / rel
        if not path.is_file():
            raise HetsegError(f"--root {root}: no {which} split at {path} (the run's data.{which}_split); fix: give "
                              "--split the split file of that dataset")
        return read_split(path, root, num_classes=cfg.data.num_classes, mask_labels=mask_labels)
    if rel is not None:
        return load_config_split(cfg, f"data.{which}_split", mask_labels)
    if root is None and not Path(which).is_absolute():
        for cand in (data_root / which, data_root / "splits" / f"{which}.txt"):
            if cand.is_file():
                return read_split(cand, data_root, labels=_own_labels(cfg), num_classes=cfg.data.num_classes,
                                  mask_labels=mask_labels)
    path = Path(which)
    if root is not None and not path.is_absolute() and not path.is_file() and (Path(root) / path).is_file():
        path = Path(root) / path  # --split splits/x.txt --root DIR: the file under DIR
    if path.is_dir():
        raise HetsegError(f"{path}: a folder, not a split file; fix: give a split file (one image [mask] per line)")
    if not path.is_file():
        where = data_root if root is None else f"{data_root} or {root}"
        raise HetsegError(f"{which}: no such split (not under {where} either); fix: give weak, strong, val, "
                          "a split name in <root>/splits or a split file path")
    return read_split(path, Path(root) if root is not None else default_root(path), num_classes=cfg.data.num_classes,
                      mask_labels=mask_labels)


def load_config_split(cfg: Config, setting: str, mask_labels: bool = True) -> Split:
    """The split file a config setting names (``data.weak_split``, ``transfer.source_split``, ...; its value: a path
    relative to ``cfg.data.root`` (or a bare name in ``<root>/splits``) or an absolute one, always read
    against ``cfg.data.root`` with the run's own labels -- every split setting of a run reads the same way,
    wherever its file lives. A missing file is refused in one line naming ``setting``."""
    rel = at(cfg, setting)
    data_root = Path(cfg.data.root)
    path = Path(rel) if Path(rel).is_absolute() else data_root / rel
    if not path.is_file() and not Path(rel).is_absolute() and (data_root / "splits" / f"{rel}.txt").is_file():
        path = data_root / "splits" / f"{rel}.txt"
    if path.is_dir():
        raise HetsegError(f"{setting}={rel}: a folder, not a split file; fix: give a split file (one image [mask] "
                          "per line)")
    if data_root.is_dir() and not path.exists():  # the setting to change, not only the file (a root that is
        # missing as a whole gets read_split's "build it" fix)
        made_by = " (e.g. made by 'hetseg data splits')" if setting == "data.strong_split" else ""
        raise HetsegError(f"{setting}={rel}: no such split file ({path}); fix: set {setting} to a split file of "
                          f"{data_root}{made_by}")
    return read_split(path, data_root, labels=_own_labels(cfg), num_classes=cfg.data.num_classes,
                      mask_labels=mask_labels)


def _own_labels(cfg: Config) -> dict[str, tuple[int, ...]] | None:
    """``data.labels`` when set. Read only for the run's own splits: another data set's split has its own
    labels, and a run moved to another machine (or shipped) no longer has its data.labels file."""
    if not cfg.data.labels:
        return None
    from hetseg.data.labels import load_labels_file

    return load_labels_file(cfg.data.labels, cfg.data.num_classes)


def command_line() -> str:
    """The command as typed, for results files: ``hetseg ...``, or ``python scripts/x.py ...`` when a
    script (e.g. scripts/ship_voc_lite0.py) drove the library -- its arguments are not hetseg's."""
    prog = sys.argv[0] if sys.argv else ""
    head = f"python {shlex.quote(prog)}" if prog.endswith(".py") and Path(prog).name != "__main__.py" else "hetseg"
    return " ".join([head, *(shlex.quote(a) for a in sys.argv[1:])])


def backbone_file(cfg: Config, family: str = "vgg") -> Path | None:
    """The file ``model.backbone`` names (None when unset): ``shipped`` is the committed CPU-scale
    backbone of the model's ``family`` (hetseg.zoo; one error line at another scale or when
    missing), a run dir its ``backbone.safetensors``, anything else the path itself."""
    if not cfg.model.backbone:
        return None
    if cfg.model.backbone == "shipped":  # docs/DECISIONS.md, "Shipped CPU-scale backbone"
        from hetseg.zoo import shipped_backbone

        return shipped_backbone(cfg.model.scale, family)
    p = Path(cfg.model.backbone)
    return p / "backbone.safetensors" if p.is_dir() else p


def init_weights(net: nn.Module, cfg: Config, init_from: str | None) -> str:
    """Starting weights of a run's model; returns where they came from.

    In order: ``init_from`` (weights only, safetensors), this run's own ``model.safetensors`` (the
    latest finished stage), ``model.backbone`` (a CPU-scale pretrained backbone), the torchvision
    ImageNet file of the model's encoder family (:func:`imagenet_file`: ``model.vgg_weights`` for
    VGG-16, ``model.resnet_weights`` for DIS's ResNet; paper scale), else the seeded initialisation.
    """
    from hetseg.engine.checkpoint import load_weights

    run = Path(cfg.run_dir)
    if init_from:
        load_weights(net, init_from)
        return f"init_from {init_from}"
    if (run / "model.safetensors").is_file():
        load_weights(net, run)
        return "run"
    if cfg.model.backbone:
        from hetseg.models.backbone import backbone_family, load_backbone

        try:
            load_backbone(net, backbone_file(cfg, backbone_family(net)))
        except ValueError as e:
            raise HetsegError(f"model.backbone={cfg.model.backbone}: {e}") from None
        return f"backbone {cfg.model.backbone}"
    if cfg.model.vgg_weights or cfg.model.resnet_weights:
        return imagenet_file(net, cfg)
    from hetseg.models.backbone import backbone_family

    require_imagenet(cfg, backbone_family(net))
    return "seeded init"


def require_imagenet(cfg: Config, family: str) -> None:
    """Refuse a paper-scale paper encoder that would start from random weights without being asked to.

    The papers' networks start from ImageNet (docs/REFERENCE.md §1.3, docs/DIS.md "ImageNet weights"); a
    paper-scale run without the file trained ~300M parameters from random weights without a word. A
    config naming a backbone or the ImageNet file of ``family`` ("vgg" | "resnet"), a CPU-scale one, a
    non-VGG encoder and ``model.imagenet=false`` pass; a named ImageNet file must exist. Benches call it
    before they create any folder (the run itself would find a missing file only when it starts).
    """
    key, kind = ("resnet_weights", "ResNet-101") if family == "resnet" else ("vgg_weights", "VGG-16")
    file = getattr(cfg.model, key)
    if file and not Path(file).is_file():
        raise HetsegError(f"model.{key}={file}: no such file; fix: give the path of a torchvision ImageNet "
                          "weights file")
    named = file or cfg.model.backbone
    if cfg.model.scale == "paper" and cfg.model.encoder == "vgg16" and cfg.model.imagenet and not named:
        raise HetsegError(f"model.{key}: not given, so this paper-scale run would start {kind} from random weights, "
                          f"where the paper starts from ImageNet; fix: model.{key}=FILE (torchvision's ImageNet "
                          f"{kind} file, README \"GPU set-up\"), or model.imagenet=false to train from random weights "
                          "on purpose")


def imagenet_file(net: nn.Module, cfg: Config) -> str:
    """Load the torchvision ImageNet file given for ``net``'s encoder family into it; returns where from.

    ``model.vgg_weights`` (VGG-16, docs/REFERENCE.md §1.3) for the VGG family, ``model.resnet_weights``
    (ResNet-101, docs/DIS.md "ImageNet weights") for DIS. A config may name both (one file serving
    several methods); only the other family's file, a missing file or one that does not fit the model
    is refused in one line -- training from random weights instead would waste a paper-scale run."""
    from hetseg.models.backbone import backbone_family, load_imagenet_file

    family = backbone_family(net)
    key, other = ("resnet_weights", "vgg_weights") if family == "resnet" else ("vgg_weights", "resnet_weights")
    if cfg.model.encoder != "vgg16":  # a models/encoders.py encoder: its own ImageNet weights, model.imagenet
        given = key if getattr(cfg.model, key) else other
        raise HetsegError(f"model.{given}={getattr(cfg.model, given)}: model.encoder={cfg.model.encoder} starts from "
                          f"its own ImageNet weights (model.imagenet); fix: drop model.{given}")
    path = getattr(cfg.model, key)
    if not path:
        kind = "ResNet" if family == "resnet" else "VGG-16"
        raise HetsegError(f"model.{other}={getattr(cfg.model, other)}: method '{cfg.model.name}' has a {kind} encoder; "
                          f"fix: give its torchvision ImageNet {kind} file as model.{key}=FILE instead")
    require_imagenet(cfg, family)  # the file must exist
    try:
        load_imagenet_file(net, path)
    except Exception as e:  # noqa: BLE001 - a foreign file: its reader's failure, said in one line
        # the reader's first sentence only: torch's goes on to advise unpickling the file, which hetseg never does
        why = (str(e).splitlines() or [type(e).__name__])[0].split(". ")[0][:200]
        raise HetsegError(f"model.{key}={path}: cannot load it into model '{cfg.model.name}' at scale "
                          f"{cfg.model.scale} ({why}); fix: give the torchvision ImageNet file of that encoder "
                          "(paper scale), or drop the setting") from None
    return f"{key} {path}"


def seeded_model(name: str, kwargs: dict, seed: int) -> nn.Module:
    """``create_model(name, **kwargs)`` whose initial weights depend on the seed only, not on what
    ran before in the process. Raises the model's own ValueError for kwargs it refuses."""
    from hetseg.models import create_model

    torch.manual_seed(seed)
    return create_model(name, **kwargs)  # a ValueError is the caller's to word: it knows the config keys


__all__ = ["class_names", "command_line", "init_weights", "load_split", "seeded_model"]

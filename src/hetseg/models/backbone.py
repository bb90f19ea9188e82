"""A pretrained backbone: the VGG-16 encoder + fc6/fc7 that every model of the family can start from
(or, for a model that names its own parts with ``backbone_modules()``, those parts: DIS's ResNet encoder).

Paper scale starts from torchvision's ImageNet VGG-16 (``vgg.load_vgg16_file``). CPU scale has no
ImageNet network, so ``hetseg train --stage pre`` pretrains the CPU-scale classifier on single
items (hetseg.data.items) and writes ``backbone.safetensors`` with the keys ``encoder.*``,
``fc6.weight/bias`` and ``fc7.weight/bias`` -- the pretraining's score layer is left out, as the
ImageNet 1000-way layer is (docs/REFERENCE.md §1.3: the score layer is always new).

``load_backbone`` puts those weights into a Classifier / DecoupledNet / TransferNet-style model
(``.classifier`` or ``.encoder`` + fc6/fc7 convs) or a DeconvNet (whose fc6/fc7 are ConvBlocks with BN;
the BN layers after fc6/fc7 keep their init, as with ImageNet weights).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .vgg import find_vgg_parts


def backbone_family(model: nn.Module) -> str:
    """Which shipped backbone fits ``model``: its ``backbone_family`` attribute ("resnet" for DIS),
    else "vgg" (every VGG-16 model of the family)."""
    return str(getattr(model, "backbone_family", "vgg"))


def backbone_parts(model: nn.Module) -> dict[str, nn.Module | None]:
    """{key prefix: module} of the parts a backbone file holds: ``model.backbone_modules()`` where
    the model defines it, else the VGG encoder + fc6/fc7 (None where a VGG model lacks fc6/fc7)."""
    if hasattr(model, "backbone_modules"):
        return dict(model.backbone_modules())
    encoder, fc6, fc7 = find_vgg_parts(model)
    return {"encoder": encoder, "fc6": fc6, "fc7": fc7}


def _parts_state(model: nn.Module, keep_vars: bool = False) -> dict[str, Tensor]:
    """{"<part>.<key>": tensor} over the model's backbone parts that exist."""
    return {f"{name}.{k}": v for name, part in backbone_parts(model).items() if part is not None
            for k, v in part.state_dict(keep_vars=keep_vars).items()}


def backbone_state(model: nn.Module) -> dict[str, Tensor]:
    """The backbone parts' state of ``model`` (see module doc), detached CPU tensors."""
    missing = [name for name, part in backbone_parts(model).items() if part is None]
    if missing:
        raise TypeError(f"{type(model).__name__} has no {missing[0]} to save as a backbone")
    return {k: v.detach().cpu().contiguous() for k, v in _parts_state(model).items()}


def load_backbone(model: nn.Module, state: dict[str, Tensor] | str | Path) -> list[str]:
    """Copy a backbone (dict or ``.safetensors`` path) into ``model``; returns the keys loaded.

    Every shape is checked before anything is copied: a backbone of another scale or a file that
    is not a backbone raises ValueError naming the first mismatches and leaves ``model`` untouched.
    """
    if not isinstance(state, dict):
        from safetensors.torch import load_file

        path = Path(state)
        if path.is_dir():
            path = path / "backbone.safetensors"
        if not path.is_file():
            raise ValueError(f"{path}: no backbone file; fix: run 'hetseg train --stage pre' or give its "
                             "backbone.safetensors")
        state = load_file(str(path), device="cpu")
    targets = _parts_state(model, keep_vars=True)
    missing = sorted(set(targets) - set(state))
    bad = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in targets.items()
           if k in state and state[k].shape != v.shape]
    if missing or bad:
        raise ValueError(f"backbone does not fit {type(model).__name__}: missing {missing[:3]}, "
                         f"shape mismatch {bad[:3]}; fix: give a backbone pretrained by the same method family at the same "
                         "model.scale ('hetseg train --stage pre' with this method, or model.backbone=shipped)")
    with torch.no_grad():
        for k, dst in targets.items():
            dst.copy_(state[k])
    return sorted(targets)


def load_imagenet_file(model: nn.Module, path: str | Path) -> list[str]:
    """A torchvision ImageNet file into ``model``'s backbone of its :func:`backbone_family`: VGG-16
    into the encoder + fc6/fc7 of its classifier, or of the model itself (docs/REFERENCE.md §1.3),
    ResNet into the ``encoder`` of :func:`backbone_parts` (docs/DIS.md "ImageNet weights"); returns
    the keys loaded. The reader's own error (ValueError, RuntimeError, ...) for a file that does not fit."""
    if backbone_family(model) == "resnet":
        from .resnet import load_torchvision_resnet

        return load_torchvision_resnet(backbone_parts(model)["encoder"], path)
    from .vgg import load_vgg16_file

    # A model with a classifier starts *it* from ImageNet: TransferNet's own encoder is filled from the
    # trained classifier after stage cls, and find_vgg_parts would pick that encoder first.
    classifier = getattr(model, "classifier", None)
    return load_vgg16_file(classifier if isinstance(classifier, nn.Module) else model, path)

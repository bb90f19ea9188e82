"""A pretrained backbone: the VGG-16 encoder + fc6/fc7 that every model of the family can start from.

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


def backbone_state(model: nn.Module) -> dict[str, Tensor]:
    """The encoder + fc6/fc7 state of ``model`` (see module doc), detached CPU tensors."""
    encoder, fc6, fc7 = find_vgg_parts(model)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    for name, conv in (("fc6", fc6), ("fc7", fc7)):
        if conv is None:
            raise TypeError(f"{type(model).__name__} has no {name} to save as a backbone")
        state.update({f"{name}.{k}": v for k, v in conv.state_dict().items()})
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


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
    encoder, fc6, fc7 = find_vgg_parts(model)
    targets: dict[str, Tensor] = {f"encoder.{k}": v for k, v in encoder.state_dict(keep_vars=True).items()}
    for name, conv in (("fc6", fc6), ("fc7", fc7)):
        if conv is not None:
            targets.update({f"{name}.{k}": v for k, v in conv.state_dict(keep_vars=True).items()})
    missing = sorted(set(targets) - set(state))
    bad = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in targets.items()
           if k in state and state[k].shape != v.shape]
    if missing or bad:
        raise ValueError(f"backbone does not fit {type(model).__name__}: missing {missing[:3]}, "
                         f"shape mismatch {bad[:3]}; fix: pretrain at the same model.scale")
    with torch.no_grad():
        for k, dst in targets.items():
            dst.copy_(state[k])
    return sorted(targets)

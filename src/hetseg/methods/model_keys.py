"""Which ``model.*`` settings a method's model reads: the paper encoder (``model.encoder=vgg16``) is sized
by ``model.scale``, an encoder model (``models/encoders.py``) by ``model.input_size`` / ``model.width``;
a setting of the other kind would be dropped without a word, so training refuses it in one line
(docs/GUARANTEES.md, "Bad input is one line")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hetseg.config import Config
from hetseg.errors import HetsegError

if TYPE_CHECKING:
    from hetseg.methods.base import Method

ENCODER_KEYS = ("imagenet", "input_size", "width", "bridge_kernel", "decoder_stride")  # read on non-VGG encoders only
VGG_KEYS = ("scale", "weight_pool")  # read on the paper encoder only (an encoder model has its own sizes)


def check_encoder_keys(cfg: Config, method: Method) -> None:
    """Refuse a ``model.encoder`` that is not registered, and a changed model setting this method's model
    would silently ignore: :data:`ENCODER_KEYS` on the paper encoder (``vgg16``, whose sizes follow
    ``model.scale``), :data:`VGG_KEYS` on another encoder. (``bridge_kernel`` on the masks-only model, which
    has no bridge, stays allowed: the voc-real bench gives all its methods one recipe.)"""
    from hetseg.models.encoders import ENCODERS

    enc, default = cfg.model.encoder, type(cfg.model)()
    if enc != "vgg16" and enc not in ENCODERS:
        raise HetsegError(f"model.encoder={enc}: unknown encoder; fix: choose vgg16 (the method's paper encoder) "
                          f"or one of {', '.join(sorted(ENCODERS))}")
    if enc != "vgg16" and not method.encoder_model:
        return  # build refuses the encoder itself: that is the one line to give
    keys = ENCODER_KEYS if enc == "vgg16" else VGG_KEYS
    if enc == "vgg16" and cfg.model.scale == "paper":  # model.imagenet=false: paper-scale VGG from random weights
        keys = tuple(k for k in keys if k != "imagenet")  # on purpose (engine/context.init_weights)
    changed = [k for k in keys if getattr(cfg.model, k) != getattr(default, k)]
    if not changed:
        return
    k = changed[0]
    setting = f"model.{k}={getattr(cfg.model, k)}"
    if enc != "vgg16":
        raise HetsegError(f"{setting}: read with model.encoder=vgg16 only; model.encoder={enc} takes its sizes from "
                          "model.input_size and model.width; fix: drop it")
    fix = (f"drop it, or set model.encoder to one of {', '.join(sorted(ENCODERS))}" if method.encoder_model else
           f"drop it (method '{method.name}' runs on its paper encoder only, sized by model.scale)")
    raise HetsegError(f"{setting}: read only with a non-VGG encoder, so model.encoder=vgg16 would ignore it; fix: {fix}")


__all__ = ["ENCODER_KEYS", "VGG_KEYS", "check_encoder_keys"]

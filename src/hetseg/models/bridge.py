"""DecoupledNet's bridging layers (docs/REFERENCE.md §1.5): (pool5, f_cls) -> class-specific map g.

pool5 says *what is where*, f_cls says *which of it belongs to the queried class*; both are
batch-normalised first because their scales differ by orders of magnitude (f_cls is a
gradient, proportional to the class weights). At 224 px the original's fc6-seg / fc7-seg /
fc6-deconv are true fully connected layers (7x7 -> 1x1 -> 7x7); at 320 they run as convs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .vgg import ConvBlock, init_conv_


class Bridge(nn.Module):
    """BN(pool5) || BN(f_cls) -> fc6-seg (k x k) -> fc7-seg (1x1) -> fc6-deconv (k x k, transposed).

    Each of the three layers is followed by BN and ReLU, as in the original.

    Args:
        in_channels: C5, the channels of pool5 and of f_cls.
        hidden: width of fc6-seg / fc7-seg (paper 2048).
        kernel: fc6-seg / fc6-deconv kernel, no padding (paper 7: 10x10 -> 4x4 -> 10x10).
        out_channels: channels of g (C5 in DecoupledNet, the decoder's input).
        bn_eps: BN epsilon. The original's Caffe BN used 1e-9 with plain batch statistics
            (docs/REFERENCE.md §1.7, §7.5); we keep PyTorch's 1e-5 default, which is numerically safer
            for tiny batches. Running statistics are PyTorch's (momentum 0.1); nothing recalibrates them
            afterwards (docs/DECISIONS.md, "BN").
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        kernel: int,
        out_channels: int | None = None,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.pool5_bn = nn.BatchNorm2d(in_channels, eps=bn_eps)
        self.fcls_bn = nn.BatchNorm2d(in_channels, eps=bn_eps)
        kw = dict(batch_norm=True, bn_eps=bn_eps)
        self.fc6_seg = ConvBlock(2 * in_channels, hidden, kernel, **kw)
        self.fc7_seg = ConvBlock(hidden, hidden, 1, **kw)
        self.fc6_deconv = ConvBlock(hidden, out_channels, kernel, transposed=True, **kw)
        init_conv_(self)

    def forward(self, pool5: Tensor, f_cls: Tensor) -> Tensor:
        """pool5, f_cls (B, C5, h, w) -> g (B, out_channels, h, w). Concat order: pool5 first (§1.5)."""
        x = torch.cat([self.pool5_bn(pool5), self.fcls_bn(f_cls)], dim=1)
        return self.fc6_deconv(self.fc7_seg(self.fc6_seg(x)))

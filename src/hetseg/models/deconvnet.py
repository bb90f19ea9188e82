"""DeconvNet (Noh, Hong, Han, ICCV 2015): the fully supervised baseline of DecoupledNet's Table 1.

Reference §2: VGG-16 with BN after every conv, fc6 (k x k) / fc7 (1x1) / fc6-deconv (k x k
transposed), each with BN + ReLU, then the same unpool/deconv decoder as DecoupledNet but with
a (K+1)-way output. Trained on strong masks only, end to end. The original's EdgeBox-proposal
inference (§2) is not part of the model: ``predict`` is one whole-image pass (the paper does
not say which inference gave its baseline numbers).
"""

from __future__ import annotations

from torch import Tensor

from .base import MasksOnlySegmenter, register
from .classifier import check_fc6_input
from .decoder import DeconvDecoder
from .scales import Scale, get_scale
from .vgg import ConvBlock, VGGEncoder, init_conv_


@register("deconvnet")
class DeconvNet(MasksOnlySegmenter):
    """Encoder-decoder semantic segmentation network.

    Args:
        num_classes: K object classes (20 for VOC, 10 for fashion-scenes); the network predicts
            K+1 channels, background included.
        scale: "paper", "cpu" or a :class:`Scale`.
        in_channels: image channels.
    """

    def __init__(self, num_classes: int, scale: str | Scale = "cpu", in_channels: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels  # what predict checks its input against
        self.scale = get_scale(scale)
        self.num_classes = num_classes
        self.input_size = self.scale.input_size
        s = self.scale
        self.encoder = VGGEncoder(s.widths, in_channels, batch_norm=True, pool5=True)
        bn = dict(batch_norm=True)
        self.fc6 = ConvBlock(s.c5, s.fc_dim, s.fc6_kernel, **bn)
        self.fc7 = ConvBlock(s.fc_dim, s.fc_dim, 1, **bn)
        self.fc6_deconv = ConvBlock(s.fc_dim, s.c5, s.fc6_kernel, transposed=True, **bn)
        init_conv_(self.fc6)
        init_conv_(self.fc7)
        init_conv_(self.fc6_deconv)
        self.decoder = DeconvDecoder(s.widths, s.c5, out_channels=num_classes + 1, unpool5=True, batch_norm=True)

    def forward(self, images: Tensor) -> Tensor:
        """images (N, C, H, W), H and W multiples of 32 -> logits (N, K+1, H, W)."""
        check_fc6_input(images, self.fc6.conv.kernel_size[0])
        enc = self.encoder(images)
        x = self.fc6_deconv(self.fc7(self.fc6(enc.features)))
        return self.decoder(x, enc.switches, enc.sizes)

"""DecoupledNet's classification network (docs/REFERENCE.md §1.3): VGG-16 + convolutional fc6/fc7 + score map.

fc6/fc7 are convolutions so that the network runs on 320 px (paper) instead of 224: fc6 is a
k x k conv without padding, giving an s x s class-score map (4x4 paper, 2x2 CPU). Two poolings
of that map give the image-level logits: the average (what the released model was fine-tuned
with and what inference thresholds, §1.3) and the max (whose switch routes the class-specific
gradient, §1.4). There is no background output: K counts object classes only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .scales import Scale, get_scale
from .vgg import VGGEncoder, init_conv_


def check_fc6_input(images: Tensor, k: int) -> None:
    """A ValueError naming the smallest input when images (N, C, H, W) leave pool5 (floor(H / 32) after five
    2x2 poolings) under fc6's k x k kernel, checked before the encoder: the pooling's or the conv's own
    error ("Output size is too small", "padded input size per channel") named neither."""
    if min(images.shape[-2:]) < 32 * k:
        raise ValueError(f"input {tuple(images.shape[-2:])} too small for fc6 kernel {k}: need at least {32 * k} px per side")


class ClassifierOutput(NamedTuple):
    """Everything the bridge, the decoder and the closed-form saliency need from one forward.

    pool5 (N, C5, h, w); switches / sizes: per VGG pool (see ``EncoderOutput``);
    fc6_mask, fc7_mask (N, F, s, s) bool: ReLU masks (pre-activation > 0) for the closed-form
    gradient; score_map (N, K, s, s) pre-sigmoid; logits_avg, logits_max (N, K) pre-sigmoid;
    max_index (N, K) int64: flat index (row * s + col) of each class's max cell.
    """

    pool5: Tensor
    switches: list[Tensor]
    sizes: list[torch.Size]
    fc6_mask: Tensor
    fc7_mask: Tensor
    score_map: Tensor
    logits_avg: Tensor
    logits_max: Tensor
    max_index: Tensor


class Classifier(nn.Module):
    """Multi-label image classifier: VGG-16 -> fc6 (k x k) -> fc7 (1x1) -> score (1x1, K).

    Args:
        num_classes: number of object classes K (20 for VOC, 10 for fashion-scenes).
        scale: "paper", "cpu" or a :class:`Scale`.
        in_channels: image channels.
        dropout: dropout after the fc6/fc7 ReLUs. The original DEC prototxts have none
            (docs/REFERENCE.md §1.3), hence 0. ``class_saliency`` requires it inactive (eval mode).
        batch_norm: BN after every VGG conv; ``None`` takes the scale's ``encoder_bn`` (on at
            CPU scale, which trains from scratch; off at paper scale, as the original). The
            gradient stops at pool5, so the closed-form saliency is unaffected.
    """

    def __init__(
        self,
        num_classes: int,
        scale: str | Scale = "cpu",
        in_channels: int = 3,
        dropout: float = 0.0,
        batch_norm: bool | None = None,
    ) -> None:
        super().__init__()
        self.scale = get_scale(scale)
        self.num_classes = num_classes
        s = self.scale
        bn = s.encoder_bn if batch_norm is None else batch_norm
        self.encoder = VGGEncoder(s.widths, in_channels, batch_norm=bn, pool5=True)
        self.fc6 = nn.Conv2d(s.c5, s.fc_dim, s.fc6_kernel)  # no padding: pool5 h -> h-k+1
        self.fc7 = nn.Conv2d(s.fc_dim, s.fc_dim, 1)
        self.score = nn.Conv2d(s.fc_dim, num_classes, 1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        init_conv_(self)
        # The score layer has no ReLU after it: small init keeps the first sigmoids near 0.5.
        nn.init.normal_(self.score.weight, std=0.01)

    def forward(self, x: Tensor) -> ClassifierOutput:
        """x (N, in_channels, H, W), H and W multiples of 32 -> :class:`ClassifierOutput`."""
        check_fc6_input(x, self.fc6.kernel_size[0])
        enc = self.encoder(x)
        pool5 = enc.features
        h6 = self.fc6(pool5)
        h7 = self.fc7(self.dropout(torch.relu(h6)))
        score_map = self.score(self.dropout(torch.relu(h7)))
        flat = score_map.flatten(2)
        # torch.max(dim) routes the gradient to exactly one cell (the returned index), like
        # Caffe's max-pool switch; amax would split ties and break the closed form.
        logits_max, max_index = flat.max(dim=-1)
        return ClassifierOutput(
            pool5=pool5,
            switches=enc.switches,
            sizes=enc.sizes,
            fc6_mask=h6 > 0,
            fc7_mask=h7 > 0,
            score_map=score_map,
            logits_avg=flat.mean(dim=-1),
            logits_max=logits_max,
            max_index=max_index,
        )

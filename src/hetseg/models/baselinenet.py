"""BaselineNet (TransferNet paper, Sec. 6.3 and App. B): class score map -> FC -> TransferNet's decoder.

The FCN-style baseline: "it extracts a two-dimensional score map of the selected class, and
converts it to the input to the decoder through a fully-connected layer"; the decoder is trained
on the source domain, the classification network serves (fine-tuned on) the target. It is the
special case of TransferNet whose "attention" is read from the classifier's last layer.

Layer sizes are unknown (docs/REFERENCE.md §3.10, §7.15). Decisions (docs/TRANSFERNET.md):

* the classification network is hetseg's :class:`Classifier` (the DecoupledNet classifier, whose
  s x s class-score map is 4x4 at paper scale and 2x2 at CPU scale) and is frozen;
* FC: Linear(s*s -> h5*w5) on the raw (pre-sigmoid) score map of the queried class, reshaped to
  one channel at conv5 resolution (20x20 paper, 6x6 CPU), no non-linearity (the decoder's first
  deconv + ReLU follows); Caffe-xavier init, bias 0;
* decoder: exactly TransferNet's (1 input channel, deconv5_1 then unpool4..1 with the
  classifier's pool1-4 switches, no BN), so the two differ only in what feeds the decoder.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import frozen_aware, register
from .classifier import Classifier, ClassifierOutput
from .decoder import DeconvDecoder, repeat_switches
from .scales import Scale
from .transfer_inference import ForegroundOutput, TransferSegmenter, foreground_from_rows
from .transfernet import caffe_xavier_


@register("baselinenet")
class BaselineNet(TransferSegmenter):
    """BaselineNet with submodules ``classifier`` (frozen in training; at inference it also picks the labels),
    ``fc``, ``decoder``.

    Args:
        num_classes: K object classes over both domains.
        scale: "paper", "cpu" or a :class:`Scale`.
        in_channels: image channels.
        input_size: the fixed input side (default ``scale.input_size``): it fixes the FC's shape.
        label_classes / label_fallback / bg_scale: inference rule (``transfer_inference.transfer_predict``).
    """

    def __init__(self, num_classes: int, scale: str | Scale = "cpu", in_channels: int = 3,
                 input_size: int | None = None, label_classes: list[int] | None = None,
                 label_fallback: bool = True, bg_scale: float = 0.5) -> None:
        super().__init__(num_classes, scale, in_channels, input_size, label_classes, label_fallback, bg_scale)
        s = self.scale
        self.score_side = self.input_size // 32 - s.fc6_kernel + 1
        self.conv5_side = self.input_size // 16
        if self.score_side < 1:
            raise ValueError(f"input_size {self.input_size} too small for fc6 kernel {s.fc6_kernel}")
        self.classifier = Classifier(num_classes, s, in_channels)
        self.fc = nn.Linear(self.score_side**2, self.conv5_side**2)
        caffe_xavier_(self.fc)
        self.decoder = DeconvDecoder(s.widths, 1, 2, unpool5=False, batch_norm=False, first_block=1)

    def classify(self, images: Tensor) -> ClassifierOutput:
        """Classifier forward, images (N, 3, S, S) -> ClassifierOutput (score_map (N, K, s, s), logits
        (N, K), ...); no graph when the classifier is frozen (:func:`~hetseg.models.base.frozen_aware`)."""
        return frozen_aware(self.classifier, images)

    def rows(self, cls_out: ClassifierOutput, index: Tensor, cls: Tensor, repeats: Tensor | int = 1
             ) -> tuple[Tensor, Tensor]:
        """B rows (image ``index[r]``, object class ``cls[r]``; index, cls (B,) int64), grouped per image with
        ``repeats`` rows each -> (seg logits (B, 2, H, W), decoder input (B, 1, h5, w5): the fc layer's
        map of the class's (s, s) score map)."""
        if tuple(cls_out.score_map.shape[-2:]) != (self.score_side, self.score_side):
            raise ValueError(f"score map {tuple(cls_out.score_map.shape[-2:])}, but BaselineNet's fully connected "
                             f"layer is built for {self.input_size} x {self.input_size} images: it needs its fixed "
                             "input size")
        score = cls_out.score_map[index, cls].flatten(1)  # (B, s*s)
        x = self.fc(score).view(-1, 1, self.conv5_side, self.conv5_side)
        return self.decoder(x, repeat_switches(cls_out.switches, repeats), cls_out.sizes), x

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        """images (N, C, H, W), labels (N,) object indices -> seg logits (N, 2, H, W)."""
        n = images.shape[0]
        return self.rows(self.classify(images), torch.arange(n, device=images.device), labels.long())[0]

    def segment(self, images: Tensor, labels: Tensor, classified: ClassifierOutput | None = None) -> Tensor:
        """labels (N, M) object indices -> (N, M, 2, H, W) in one batched decoder pass. ``classified``:
        this classifier's output on ``images`` when the caller already has it (inference reads the
        image labels from it first), so the classifier runs once per image."""
        n, m = labels.shape
        index = torch.arange(n, device=images.device).repeat_interleave(m)
        cls_out = classified if classified is not None else self.classify(images)
        seg, _ = self.rows(cls_out, index, labels.reshape(-1).long(), m)
        return seg.reshape(n, m, *seg.shape[1:])

    @torch.no_grad()
    def foreground(self, images: Tensor, labels: list[list[int]], bg_scale: float = 0.5,
                   return_maps: bool = False, classified: ClassifierOutput | None = None) -> ForegroundOutput:
        """Images (N, 3, H, W), per-image object index lists -> ForegroundOutput: fg (N, K, H, W), active
        (N, K) (see ``transfer_inference.foreground_from_rows``); maps = (decoder input (1, h5, w5),).
        ``classified``: as in :meth:`segment`."""
        cls_out = classified if classified is not None else self.classify(images)

        def run(index, cls, counts):
            seg, x = self.rows(cls_out, index, cls, counts)
            return seg, (x,)

        return foreground_from_rows(run, images, labels, self.num_classes, bg_scale, return_maps)


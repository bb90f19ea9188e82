"""DecoupledNet on any registered encoder (models/encoders.py), and its masks-only baseline.

``"decouplednet_enc"``: ``classifier`` (encoder + a small head trained with BCE on image labels,
frozen after) says *which* classes are present; for each one, ``bridge`` turns the encoder's last
map plus f_cls (the gradient of the weighted class score with respect to that map, in closed form
through the head) into a map g, and ``decoder`` segments that single class as figure/ground.
``"maskonly_enc"``: the same encoder and decoder with a (K+1)-way output, trained on masks only
(DeconvNet's role in the paper's Table 1).

Decisions:

* The head is 3x3 conv + BN + ReLU -> 1x1 conv (K score maps), avg-pooled for BCE. f_cls is the
  gradient of the *avg*-pooled weighted score by default: with a 3x3 head the max-pooled gradient
  would be a single 3x3 patch around one cell, while the avg spreads w over every cell and the
  ReLU mask keeps the cells where the class's evidence fires (``saliency_pool="max"`` is available).
* The encoder has no max-pool switches, so the decoder upsamples bilinearly and learns 3x3 convs;
  class-agnostic encoder skips replace the switches' role (boundary detail). A skip is the same
  for every row of an image -- exactly like the switches it replaces -- so it carries no class
  identity into the binary decoder: which class is segmented is still decided by g alone.
* The last decoder stage runs at the finest skip used (``decoder_stride``: 2 by default, the
  encoder's finest map); its logits are bilinearly upsampled to the input, as a full-resolution
  stage would have no skip to add detail from. ``decoder_stride=4`` drops the stride-2 stage: half
  the decoder's cost, and on the real-photo bench it is what made the binary decoder learn within
  the budget (docs/BENCHMARKS.md, "Real photos").
* Inference follows models/decouplednet.py exactly (g* for background with w = s * [s > tau],
  one row per identified label, one batched decoder pass, normalise, degenerate -> background);
  it calls the same row helpers (``decouplednet.inference_rows`` / ``assemble_probs``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import MasksOnlySegmenter, SegOutput, Segmenter, frozen_aware, full_precision, index_lists, register
from .bridge import Bridge
from .decouplednet import assemble_probs, dense_predict, inference_rows
from .saliency import score_gradient
from .encoders import EncoderFeatures, create_encoder
from .vgg import ConvBlock, init_conv_


class HeadOutput(NamedTuple):
    """enc: the encoder's maps; hidden_mask (N, F, h, w) bool: the head's ReLU mask (for the closed
    form); score_map (N, K, h, w) pre-sigmoid; logits_avg, logits_max (N, K); max_index (N, K)
    flat index of each class's max cell."""

    enc: EncoderFeatures
    hidden_mask: Tensor
    score_map: Tensor
    logits_avg: Tensor
    logits_max: Tensor
    max_index: Tensor


class EncoderClassifier(nn.Module):
    """Multi-label classifier: encoder -> conv (3x3) -> BN -> ReLU -> score (1x1, K)."""

    def __init__(self, encoder: nn.Module, num_classes: int, width: int = 256) -> None:
        super().__init__()
        self.encoder = encoder
        # No conv bias: BN's shift replaces it (and a bias would not enter the gradient anyway).
        self.conv = nn.Conv2d(encoder.last_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        # The ReLU is what makes f_cls informative: with a purely linear head, d score / d last
        # is W_conv^T W_score^T w / cells at every position -- the same vector everywhere (up to
        # the zero border), whatever the image. The ReLU mask localises it to where the class fires.
        self.score = nn.Conv2d(width, num_classes, 1)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="relu")
        nn.init.normal_(self.score.weight, std=0.01)  # first sigmoids near 0.5
        nn.init.zeros_(self.score.bias)

    def forward(self, x: Tensor) -> HeadOutput:
        """x (N, C, H, W), H and W multiples of the encoder stride -> :class:`HeadOutput`."""
        enc = self.encoder(x)
        pre = self.bn(self.conv(enc.last))
        score_map = self.score(torch.relu(pre))
        flat = score_map.flatten(2)
        logits_max, max_index = flat.max(dim=-1)  # one cell per class, like a max-pool switch
        return HeadOutput(enc, pre > 0, score_map, flat.mean(dim=-1), logits_max, max_index)


def head_saliency_rows(
    classifier: EncoderClassifier, out: HeadOutput, weights: Tensor, index: Tensor, pool: str = "avg"
) -> Tensor:
    """f_cls = d(sum_k w_k * logit_k) / d last for R rows, in closed form (no autograd).

    weights (R, K); index (R,) image of each row; pool "avg" (logits_avg) or "max" (logits_max).
    Returns (R, C_last, h, w). Transposes the head layer by layer: 1x1 score conv, the ReLU mask,
    the eval-mode BN's per-channel scale, then the 3x3 conv (a transposed conv with the same padding).
    """
    if classifier.bn.training:
        # Batch statistics would couple the images of a batch; the closed form assumes fixed ones.
        raise RuntimeError("head_saliency_rows needs the classifier in eval mode (BN running statistics)")
    d_score = score_gradient(out.score_map, out.max_index, weights, index, pool)
    n_rows, dtype = weights.shape[0], d_score.dtype
    s_h, s_w = out.score_map.shape[-2:]
    w_score = classifier.score.weight.flatten(1).to(dtype)  # (K, F)
    d_hidden = torch.einsum("rkc,kf->rfc", d_score, w_score) * out.hidden_mask[index].flatten(2).to(dtype)
    bn = classifier.bn
    gain = torch.rsqrt(bn.running_var.to(dtype) + bn.eps)
    if bn.weight is not None:
        gain = gain * bn.weight.to(dtype)
    d_pre = (d_hidden * gain[:, None]).reshape(n_rows, -1, s_h, s_w)
    return F.conv_transpose2d(d_pre, classifier.conv.weight.to(dtype), padding=classifier.conv.padding)


class UpDecoder(nn.Module):
    """Bilinear x2 + two 3x3 conv blocks per level, class-agnostic skips, raw logits at the input size.

    Args:
        in_channels: channels of the input map (g, or the masks-only neck).
        skip_channels: channels of the skip maps used, coarse to fine (one stage each).
        width: first stage's width; each finer stage halves it, down to width // 4.
        out_channels: 2 (figure/ground) or K+1.
        skips: add the skips (1x1 lateral convs) or only upsample to their sizes.
    """

    def __init__(self, in_channels: int, skip_channels: list[int], width: int, out_channels: int,
                 skips: bool = True) -> None:
        super().__init__()
        self.laterals = nn.ModuleList()
        self.stages = nn.ModuleList()
        c_in = in_channels
        for i, c_skip in enumerate(skip_channels):
            w = max(width >> i, width // 4)
            self.laterals.append(nn.Conv2d(c_skip, c_in, 1) if skips else nn.Identity())
            self.stages.append(nn.Sequential(ConvBlock(c_in, w, 3, padding=1, batch_norm=True),
                                             ConvBlock(w, w, 3, padding=1, batch_norm=True)))
            c_in = w
        self.skips = skips
        self.score = nn.Conv2d(c_in, out_channels, 1)
        init_conv_(self)
        nn.init.normal_(self.score.weight, std=0.01)  # initial logits ~0

    def forward(self, x: Tensor, skip_maps: list[Tensor], index: Tensor | None, size: torch.Size) -> Tensor:
        """x (R, in, h, w); skip_maps[i] (N, skip_channels[i], ...) per *image*; index (R,) image of
        each row (None: rows are the images); size: output (H, W) -> logits (R, out, H, W)."""
        for lateral, stage, skip in zip(self.laterals, self.stages, skip_maps):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            if self.skips:
                # conv(cat(x, skip)) = conv_x(x) + conv_s(skip): the skip half runs once per image
                # and is indexed per row, instead of once per (image, label) row.
                lat = lateral(skip)
                x = x + (lat if index is None else lat[index])
            x = stage(x)
        return F.interpolate(self.score(x), size=size, mode="bilinear", align_corners=False)


MAX_INPUT_SIZE = 2048  # far above the papers' 224-360 px; a typo such as 100000 was an out-of-memory kill


def _check_input_size(encoder: nn.Module, input_size: int, kernel: int = 1) -> None:
    """Refuse a square input side the model cannot take: under one stride of the encoder's last map, a
    last map (``ceil(input_size / stride)`` px, the encoder pads) smaller than the ``kernel`` read from
    it (fc6-seg), or above :data:`MAX_INPUT_SIZE`. Only sizes that failed before: a run trained at, say,
    100 px still loads. A ValueError, which ``Method.build`` (and ``load_model``) turn into one line."""
    s = encoder.stride
    least = max(s, s * (max(kernel, 1) - 1) + 1)
    if not least <= input_size <= MAX_INPUT_SIZE:
        raise ValueError(f"input_size {input_size} must be from {least} to {MAX_INPUT_SIZE}"
                         + (f" (the last map, input_size / {s} rounded up, must fit bridge_kernel {kernel})"
                            if kernel > 1 else f" (at least one stride {s} of the encoder's last map)"))


def _skip_levels(encoder: nn.Module, finest: int = 2) -> list[int]:
    """Indices of the encoder features finer than its last map and at least ``finest`` stride, coarse
    to fine; ``finest`` must be one of the encoder's strides below its last one."""
    coarser = [s for s in encoder.strides if s < encoder.stride]
    if finest not in coarser:
        raise ValueError(f"decoder_stride must be one of {sorted(set(coarser))}, got {finest}")
    return [i for i in reversed(range(len(encoder.channels))) if finest <= encoder.strides[i] < encoder.stride]


@register("decouplednet_enc")
class EncoderDecoupledNet(Segmenter):
    """DecoupledNet with submodules ``classifier`` (encoder + head), ``bridge``, ``decoder``.

    Args:
        num_classes: object classes K (no background).
        encoder: a name in ``ENCODERS``; pretrained: load its ImageNet weights at construction.
        head_width: hidden width of the classification head.
        bridge_dim, bridge_kernel: the bridge's fc6-seg/fc7-seg width and fc6-seg kernel (the last
            map must be at least that big: 96 px for kernel 3 at stride 32); g has bridge_dim channels.
        decoder_width: width of the first decoder stage; skips: use the encoder skips.
        decoder_stride: stride of the last decoder stage (module doc).
        saliency_pool: "avg" or "max", which pooled score f_cls differentiates (module doc).
        label_classes, label_fallback, input_size: as DecoupledNet.
    """

    def __init__(self, num_classes: int, encoder: str = "efficientnet_lite0", pretrained: bool = False,
                 in_channels: int = 3, head_width: int = 256, bridge_dim: int = 256, bridge_kernel: int = 3,
                 decoder_width: int = 128, skips: bool = True, decoder_stride: int = 2, saliency_pool: str = "avg",
                 label_classes: list[int] | None = None, label_fallback: bool = False,
                 input_size: int = 320) -> None:
        super().__init__()
        self.in_channels = in_channels  # what predict checks its input against
        if saliency_pool not in ("avg", "max"):
            raise ValueError(f"saliency_pool must be 'avg' or 'max', got {saliency_pool!r}")
        self.num_classes, self.saliency_pool, self.input_size = num_classes, saliency_pool, input_size
        self.label_classes, self.label_fallback = label_classes, label_fallback
        enc = create_encoder(encoder, pretrained=pretrained, in_channels=in_channels)
        _check_input_size(enc, input_size, bridge_kernel)
        self.skip_levels = _skip_levels(enc, decoder_stride)
        self.classifier = EncoderClassifier(enc, num_classes, head_width)
        self.bridge = Bridge(enc.last_channels, bridge_dim, bridge_kernel, bridge_dim)
        self.decoder = UpDecoder(bridge_dim, [enc.channels[i] for i in self.skip_levels],
                                 decoder_width, 2, skips)

    def pretrained_modules(self) -> list[nn.Module]:
        """The encoder (ImageNet weights when built with ``pretrained``)."""
        return [self.classifier.encoder]

    def classify(self, images: Tensor) -> HeadOutput:
        """Classifier forward, images (N, 3, S, S) -> HeadOutput (score_map (N, K, h, w), logits (N, K),
        ...); no graph when the classifier is frozen (:func:`~hetseg.models.base.frozen_aware`)."""
        return frozen_aware(self.classifier, images)

    def label_weights(self, cls_out: HeadOutput, subsets: Tensor) -> Tensor:
        """Training weights w = sigmoid(avg logits) * subset: subsets (N, K) or (N, M, K) multi-hot
        -> the same shape, detached (the classifier is fixed while the bridge and decoder train)."""
        s = torch.sigmoid(cls_out.logits_avg)
        s = s[:, None] if subsets.dim() == 3 else s
        return (s * subsets.to(s.dtype)).detach()

    def _decode(self, cls_out: HeadOutput, weights: Tensor, repeats: Tensor | int,
                size: torch.Size) -> Tensor:
        """Rows grouped by image (``repeats`` each): weights (R, K) -> logits (R, 2, H, W)."""
        n = cls_out.enc.last.shape[0]
        index = torch.arange(n, device=weights.device).repeat_interleave(repeats)
        # f_cls is an input to the bridge, not a path to train the classifier through.
        f_cls = head_saliency_rows(self.classifier, cls_out, weights, index, self.saliency_pool).detach()
        g = self.bridge(cls_out.enc.last[index], f_cls)
        skips = [cls_out.enc.features[i] for i in self.skip_levels]
        return self.decoder(g, skips, index, size)

    def segment(self, images: Tensor, weights: Tensor, cls_out: HeadOutput | None = None) -> Tensor:
        """images (N, C, H, W), weights (N, M, K) -> figure/ground logits (N, M, 2, H, W), one pass."""
        if cls_out is None:
            cls_out = self.classify(images)
        n, m, k = weights.shape
        logits = self._decode(cls_out, weights.reshape(n * m, k), m, images.shape[-2:])
        return logits.reshape(n, m, *logits.shape[1:])

    forward = segment

    @torch.no_grad()
    def predict(self, images: Tensor, labels: list[list[int]] | None = None, threshold: float = 0.5
                ) -> SegOutput:
        """images (N, C, S, S), S a multiple of 32 -> SegOutput (probs (N, K+1, S, S) per-pixel
        normalised, class_scores = sigmoid(avg logits), identified). ``labels`` replaces the
        identified set; the weights stay the classifier's scores. Call ``.eval()`` first."""
        cls_out = self.classifier(images)
        scores = torch.sigmoid(full_precision(cls_out.logits_avg))
        active = self.active_labels(scores, labels, threshold)
        row_img, row_ch, weights, counts = inference_rows(scores, active)
        seg = None
        if len(row_img) > 0:
            seg = torch.softmax(full_precision(self._decode(cls_out, weights, counts, images.shape[-2:])), dim=1)
        probs = assemble_probs(seg, row_img, row_ch, active, tuple(images.shape[-2:]), images.dtype)
        return SegOutput(probs, scores, index_lists(active))

    export_outputs = ("probs", "class_scores")

    def export_forward(self, images: Tensor, threshold: float | Tensor = 0.5) -> tuple[Tensor, Tensor]:
        """Static :meth:`predict` (``decouplednet.dense_predict``) -> probs (N, K+1, S, S), scores (N, K)."""
        return dense_predict(self, images, threshold,
                             lambda cls_out, w, rows: self._decode(cls_out, w, rows, images.shape[-2:]))


@register("maskonly_enc")
class EncoderMaskOnly(MasksOnlySegmenter):
    """Masks-only baseline: encoder -> neck (3x3 conv + BN + ReLU) -> the same UpDecoder, K+1 logits.

    Same kwargs as :class:`EncoderDecoupledNet` where they apply; ``bridge_dim`` is the neck width.
    """

    def __init__(self, num_classes: int, encoder: str = "efficientnet_lite0", pretrained: bool = False,
                 in_channels: int = 3, bridge_dim: int = 256, decoder_width: int = 128, skips: bool = True,
                 decoder_stride: int = 2, input_size: int = 320) -> None:
        super().__init__()
        self.in_channels = in_channels  # what predict checks its input against
        self.num_classes, self.input_size = num_classes, input_size
        self.encoder = create_encoder(encoder, pretrained=pretrained, in_channels=in_channels)
        _check_input_size(self.encoder, input_size)
        self.skip_levels = _skip_levels(self.encoder, decoder_stride)
        self.neck = ConvBlock(self.encoder.last_channels, bridge_dim, 3, padding=1, batch_norm=True)
        init_conv_(self.neck)
        self.decoder = UpDecoder(bridge_dim, [self.encoder.channels[i] for i in self.skip_levels],
                                 decoder_width, num_classes + 1, skips)

    def pretrained_modules(self) -> list[nn.Module]:
        """The encoder (ImageNet weights when built with ``pretrained``)."""
        return [self.encoder]

    def forward(self, images: Tensor) -> Tensor:
        """images (N, C, H, W) -> logits (N, K+1, H, W), channel 0 background."""
        enc = self.encoder(images)
        skips = [enc.features[i] for i in self.skip_levels]
        return self.decoder(self.neck(enc.last), skips, None, images.shape[-2:])


__all__ = ["EncoderClassifier", "EncoderDecoupledNet", "EncoderMaskOnly", "HeadOutput", "UpDecoder",
           "head_saliency_rows"]

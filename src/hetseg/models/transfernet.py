"""TransferNet (Hong, Oh, Han, Lee, CVPR 2016): encoder -> attention model -> densified attention -> decoder.

The decoder learns figure/ground on *source* classes; the attention model, trainable from image
labels alone, turns features of any class into a class-agnostic decoder input, so the decoder
transfers to *target* classes that never had masks. Layer facts from docs/REFERENCE.md §3.1-§3.5:

* encoder: VGG-16 conv1_1..conv5_3, **no pool5** (paper 20x20x512 at 320 px, CPU scale 6x6x128
  at 96 px), frozen in both training stages; A = ``feature_scale`` * conv5_3.
* attention (§3.2): feat_embed = FC(vec(A)) (C*H*W -> d), label_embed = FC(y) (K -> d), their
  element-wise product (factored multiplicative interaction), then -- released code, the default
  ``attention="code"`` -- FC d->d + ReLU ("combined_embed"), and FC d -> H*W; softmax over the
  H*W locations gives alpha. ``attention="paper"`` drops the hidden FC: alpha =
  softmax(W_att (W_feat vec(A) * W_label y) + b), the paper's equation.
* attended feature z = sum_i alpha_i A_{:,i} (C,); classification layers ip1 (C->C, ReLU) and
  cls_score (C->K) on z, training only (§3.3).
* densified attention d(h, w) = sum_c z_c A_c(h, w), one channel at conv5 resolution (§3.4),
  equal to G alpha with G the Gram matrix of the H*W location features (paper App. A).
* decoder (§3.5): deconv5_1 (1 -> C5 channels) at conv5 resolution, then unpool4..unpool1 with the
  encoder's switches, no BN, seg-score 1x1 -> 2 logits (bg, fg). 7,675,202 parameters at paper scale.

Decisions (docs/TRANSFERNET.md):

* embedding size d ("factors"): 1024 at paper scale (the code's), 2 * C5 in general, i.e. 256 at
  CPU scale: every width is divided by 4 there, and 1024 / 4 = 256 (4,608 -> 256 at CPU scale vs
  204,800 -> 1024 in the original).
* ``feature_scale`` is a persistent buffer (saved with the weights). 0.004 is the original's constant
  for Caffe VGG-16 activations ("roughly into 0-1"); an engine may replace it by a value calibrated
  on training images for another encoder (see hetseg.methods.transfernet).
* init: Caffe "xavier" (uniform, variance 1/fan_in) for feat_embed, label_embed, combined, ip1 and
  cls_score, Gaussian std 0.01 for the attention logits, biases 0 (§3.2); the decoder keeps
  hetseg's Kaiming init (see ``DeconvDecoder``) instead of std 0.01, which starves a BN-free stack.
* labels: K counts object classes of *both* domains (index k = mask index k + 1); the attention
  is queried with a one-hot vector of value 1 in training and inference (§3.9 step 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import frozen_aware, register
from .classifier import Classifier
from .decoder import DeconvDecoder, repeat_switches
from .scales import Scale
from .transfer_inference import ForegroundOutput, TransferSegmenter, foreground_from_rows
from .vgg import EncoderOutput, VGGEncoder

ATTENTION_VARIANTS = ("code", "paper")


def caffe_xavier_(layer: nn.Linear) -> None:
    """Caffe's "xavier" filler: uniform(-a, a) with a = sqrt(3 / fan_in); bias 0."""
    a = math.sqrt(3.0 / layer.in_features)
    nn.init.uniform_(layer.weight, -a, a)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def default_embed_dim(scale: Scale) -> int:
    """Number of factors d: 1024 at paper scale (C5 = 512), 256 at CPU scale (C5 = 128)."""
    return 2 * scale.c5


class AttentionModel(nn.Module):
    """alpha = softmax over locations of the factored multiplicative interaction of vec(A) and y.

    Args:
        channels, height, width: shape of A (the attention is tied to one spatial size).
        num_classes: K, the length of the label vector y.
        embed_dim: d, the number of factors.
        variant: "code" (extra FC d->d + ReLU, the released prototxt) or "paper" (the equation).
    """

    def __init__(self, channels: int, height: int, width: int, num_classes: int, embed_dim: int,
                 variant: str = "code") -> None:
        super().__init__()
        if variant not in ATTENTION_VARIANTS:
            raise ValueError(f"attention variant must be one of {ATTENTION_VARIANTS}, got {variant!r}")
        self.variant = variant
        self.shape = (channels, height, width)
        # The paper's equation has one bias, b, outside the product; the released code's embeddings
        # carry biases (its feat_embed parameter count includes them: docs/REFERENCE.md §7.10).
        code = variant == "code"
        self.feat_embed = nn.Linear(channels * height * width, embed_dim, bias=code)
        self.label_embed = nn.Linear(num_classes, embed_dim, bias=code)
        self.combined = nn.Linear(embed_dim, embed_dim) if variant == "code" else None
        self.att = nn.Linear(embed_dim, height * width)
        for layer in (self.feat_embed, self.label_embed, self.combined):
            if layer is not None:
                caffe_xavier_(layer)
        nn.init.normal_(self.att.weight, std=0.01)
        nn.init.zeros_(self.att.bias)

    def logits(self, feats: Tensor, labels: Tensor) -> Tensor:
        """feats A (B, C, H, W), labels y (B, K) -> unnormalised attention (B, H*W)."""
        if tuple(feats.shape[1:]) != self.shape:
            raise ValueError(f"attention built for features {self.shape}, got {tuple(feats.shape[1:])}: "
                             f"TransferNet needs its fixed input size")
        h = self.feat_embed(feats.flatten(1)) * self.label_embed(labels.to(feats.dtype))
        if self.combined is not None:
            h = torch.relu(self.combined(h))
        return self.att(h)

    def forward(self, feats: Tensor, labels: Tensor) -> Tensor:
        """-> alpha (B, H, W), non-negative, summing to 1 over the H*W locations of each row."""
        return torch.softmax(self.logits(feats, labels).float(), dim=-1).to(feats.dtype).view(
            feats.shape[0], *feats.shape[-2:])


def attend(feats: Tensor, alpha: Tensor) -> Tensor:
    """Attended feature z = sum_i alpha_i A_{:, i}: A (B, C, H, W), alpha (B, H, W) -> (B, C)."""
    return (feats.flatten(2) * alpha.flatten(1).unsqueeze(1)).sum(-1)


def densify(feats: Tensor, z: Tensor) -> Tensor:
    """Densified attention d(h, w) = sum_c z_c A_c(h, w): (B, C, H, W), (B, C) -> (B, 1, H, W)."""
    return (feats * z[:, :, None, None]).sum(1, keepdim=True)


def densify_gram(feats: Tensor, alpha: Tensor) -> Tensor:
    """The same map as ``densify(feats, attend(feats, alpha))`` written d = G alpha (paper App. A),
    with G = X^T X the (H*W, H*W) Gram matrix of the location features X (C, H*W). For tests/figures."""
    x = feats.flatten(2)  # (B, C, HW)
    gram = x.transpose(1, 2) @ x  # (B, HW, HW)
    return (gram @ alpha.flatten(1).unsqueeze(-1)).view(feats.shape[0], 1, *feats.shape[-2:])


@dataclass
class TransferOutput:
    """One forward over B (image, label) rows.

    alpha (B, H, W) attention; z (B, C) attended feature; dense (B, 1, H, W) densified attention;
    cls_logits (B, K) of the classification layers; seg_logits (B, 2, H_img, W_img) or None.
    """

    alpha: Tensor
    z: Tensor
    dense: Tensor
    cls_logits: Tensor
    seg_logits: Tensor | None = None


@register("transfernet")
class TransferNet(TransferSegmenter):
    """TransferNet with submodules ``encoder``, ``attention``, ``cls_head``, ``decoder`` and ``classifier``.

    ``classifier`` is the paper's *separate* multi-label classifier that picks the labels at
    inference (docs/REFERENCE.md §3.9 step 2); the recipe trains it first and copies its conv layers into
    ``encoder`` (frozen). It is stored in the model so that a TransferNet run predicts on its own.

    Args:
        num_classes: K object classes over both domains (no background).
        scale: "paper", "cpu" or a :class:`Scale`.
        in_channels: image channels.
        attention: "code" (default) or "paper", see :class:`AttentionModel`.
        feature_scale: A = feature_scale * conv5_3 (0.004 in the original).
        embed_dim: factors d; None -> :func:`default_embed_dim`.
        input_size: training/inference side (default ``scale.input_size``); it fixes the attention's
            number of locations, (input_size / 16)^2.
        label_classes / label_fallback / bg_scale: inference rule (see ``transfer_inference.transfer_predict``).
    """

    predict_maps = ("alpha", "dense")  # predict's extras: attention and densified attention per label

    def __init__(self, num_classes: int, scale: str | Scale = "cpu", in_channels: int = 3,
                 attention: str = "code", feature_scale: float = 0.004, embed_dim: int | None = None,
                 input_size: int | None = None, label_classes: list[int] | None = None,
                 label_fallback: bool = True, bg_scale: float = 0.5) -> None:
        super().__init__(num_classes, scale, in_channels, input_size, label_classes, label_fallback, bg_scale)
        s = self.scale
        if self.input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {self.input_size}")
        side = self.input_size // 16
        # Same conv stack as the scale's Classifier (BN at CPU scale, see Scale.encoder_bn), so the
        # trained classifier's conv layers load into it; frozen and in eval mode when training.
        self.encoder = VGGEncoder(s.widths, in_channels, batch_norm=getattr(s, "encoder_bn", False), pool5=False)
        self.attention = AttentionModel(s.c5, side, side, num_classes, embed_dim or default_embed_dim(s),
                                        attention)
        self.cls_head = nn.Sequential(nn.Linear(s.c5, s.c5), nn.ReLU(inplace=True), nn.Linear(s.c5, num_classes))
        for layer in (self.cls_head[0], self.cls_head[2]):
            caffe_xavier_(layer)
        self.decoder = DeconvDecoder(s.widths, 1, 2, unpool5=False, batch_norm=False, first_block=1)
        self.register_buffer("feature_scale", torch.tensor(float(feature_scale)))
        self.classifier = Classifier(num_classes, s, in_channels)

    @property
    def cls_score(self) -> nn.Linear:
        """The K-way score layer (lr multiplier 10/20 in the original, §3.3)."""
        return self.cls_head[2]

    def encode(self, images: Tensor) -> EncoderOutput:
        """Scaled conv5_3 A (N, C5, H/16, W/16) + pool1-4 switches; no graph when the encoder is frozen."""
        enc = frozen_aware(self.encoder, images)
        return EncoderOutput(enc.features * self.feature_scale.to(enc.features.dtype), enc.switches, enc.sizes)

    def one_hot(self, labels: Tensor) -> Tensor:
        """(B,) object indices -> (B, K) one-hot of value 1; (B, K) vectors pass through."""
        if labels.ndim == 1:
            return F.one_hot(labels.long(), self.num_classes).float()
        return labels.float()

    def rows(self, enc: EncoderOutput, labels: Tensor, index: Tensor | None = None, repeats: Tensor | int = 1,
             decode: bool = True) -> TransferOutput:
        """Run attention (+ decoder) for B rows; row r queries image ``index[r]`` with ``labels[r]``.

        enc.features (N, C5, h, w); labels (B,) object indices or (B, K) vectors; index (B,) int64 ->
        TransferOutput: alpha (B, h, w), z (B, C5), dense (B, 1, h, w), class logits (B, K), seg logits
        (B, 2, H, W) or None without ``decode``. ``index`` None means row r = image r. When decoding, rows
        must be grouped per image with ``repeats`` rows each (see :func:`repeat_switches`), which ``index``
        must agree with.
        """
        feats = enc.features if index is None else enc.features[index]
        alpha = self.attention(feats, self.one_hot(labels))
        z = attend(feats, alpha)
        dense = densify(feats, z)
        seg = None
        if decode:
            seg = self.decoder(dense, repeat_switches(enc.switches, repeats), enc.sizes)
        return TransferOutput(alpha, z, dense, self.cls_head(z), seg)

    def forward(self, images: Tensor, labels: Tensor) -> TransferOutput:
        """images (N, C, H, W) with one label each ((N,) indices or (N, K) one-hot) -> all outputs."""
        return self.rows(self.encode(images), labels)

    def segment(self, images: Tensor, labels: Tensor, classified: object = None) -> Tensor:
        """Figure/ground logits for M labels per image in one batched pass.

        images (N, C, H, W); labels (N, M) object indices or (N, M, K) vectors -> (N, M, 2, H, W).
        ``classified`` (the label classifier's output) is unused: TransferNet's decoder reads its own
        encoder, not the classifier (BaselineNet's reads the classifier and takes it).
        """
        n, m = labels.shape[:2]
        enc = self.encode(images)
        index = torch.arange(n, device=images.device).repeat_interleave(m)
        out = self.rows(enc, labels.reshape(n * m, *labels.shape[2:]), index, m)
        return out.seg_logits.reshape(n, m, *out.seg_logits.shape[1:])

    @torch.no_grad()
    def foreground(self, images: Tensor, labels: list[list[int]], bg_scale: float = 0.5,
                   return_maps: bool = False, classified: object = None) -> ForegroundOutput:
        """Per-label foreground probability for the given object indices (one batched decoder pass):
        images (N, 3, H, W), per-image object index lists -> ForegroundOutput: fg (N, K, H, W), active (N, K).

        See ``transfer_inference.foreground_from_rows``; call ``.eval()`` first. ``classified``: unused,
        as in :meth:`segment`.
        """
        enc = self.encode(images)

        def run(index, cls, counts):
            out = self.rows(enc, cls, index, counts)
            return out.seg_logits, (out.alpha, out.dense)

        return foreground_from_rows(run, images, labels, self.num_classes, bg_scale, return_maps)


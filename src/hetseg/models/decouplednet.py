"""DecoupledNet (Hong, Noh, Han, NIPS 2015): classifier -> bridge -> binary decoder.

Three parts with the paper's names: ``classifier`` (trained on image labels, frozen after),
``bridge`` and ``decoder`` (trained on the few masks). The classifier says *which* classes are
present; for each one, the bridge turns pool5 plus the class-specific gradient f_cls into a
map g, and the decoder segments that single class as figure/ground. Because every map of an
image shares its pool5 and switches, all maps of a batch go through bridge + decoder in one
batched pass of N*M rows.

Decisions among docs/REFERENCE.md §7's ambiguities (to be mirrored in docs/ARCHITECTURE.md):

* §7.2 training weights: ``label_weights`` uses sigmoid(avg-pooled logits) * subset by default
  (``weight_pool="avg"``), the same pooling that inference thresholds and weights with, so
  train and test see one distribution; ``weight_pool="max"`` reproduces the original training
  (sigmoid(max-pooled) * subset, §1.4). The *gradient* is always that of the max-pooled score:
  the original bp path unpools w with the score map's max switch (§1.4, step 1).
* §7.8 background: g* with w = s * [s > tau] gives the background map; argmax over
  {B, F_l}, no extra foreground threshold; no identified label -> all background.
* predict(labels=...) replaces only the identified set L (a "-GT" evaluation); the weights
  are still the classifier's scores, as in training, so the bridge sees familiar magnitudes.
* Resizing to the original image size (§7.6, §7.7) is the engine's job, after normalisation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .base import SegOutput, Segmenter, frozen_aware, full_precision, index_lists, register
from .bridge import Bridge
from .classifier import Classifier, ClassifierOutput
from .decoder import DeconvDecoder, repeat_switches
from .saliency import class_saliency_rows
from .scales import Scale, get_scale


def inference_rows(scores: Tensor, active: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """DecoupledNet's inference rows: for each image with labels, g* (w = s * [active]) then one row
    per label (w = one-hot(l) * s_l), grouped per image by a stable sort: [g*_0, g_0l.., g*_1, ..].

    scores (N, K), active (N, K) bool -> row_img (R,), row_ch (R,) output channel (0 = background),
    weights (R, K), counts (N,) rows per image.
    """
    n, k = scores.shape
    star_img = torch.nonzero(active.any(dim=1)).flatten()
    lab_img, lab_cls = torch.nonzero(active, as_tuple=True)
    w_star = (scores * active)[star_img]
    w_lab = torch.zeros(len(lab_img), k, dtype=scores.dtype, device=scores.device)
    w_lab[torch.arange(len(lab_img), device=scores.device), lab_cls] = scores[lab_img, lab_cls]
    row_img = torch.cat([star_img, lab_img])
    row_ch = torch.cat([torch.zeros_like(star_img), lab_cls + 1])
    order = torch.sort(row_img, stable=True).indices
    row_img, row_ch, weights = row_img[order], row_ch[order], torch.cat([w_star, w_lab])[order]
    return row_img, row_ch, weights, torch.bincount(row_img, minlength=n)


def assemble_probs(seg: Tensor | None, row_img: Tensor, row_ch: Tensor, active: Tensor,
                   size: tuple[int, int], dtype: torch.dtype) -> Tensor:
    """Rows' softmax (R, 2, H, W) -> probs (N, K+1, H, W): B from g*'s background channel, F_l from
    g_l's foreground channel, 0 elsewhere; pixels where all are 0 get +1 on the active channels
    (background always active, so "no label" is all background); normalised per pixel."""
    n, k = active.shape
    probs = torch.zeros(n, k + 1, *size, dtype=dtype, device=active.device)
    if seg is not None and len(row_img) > 0:
        picked = torch.where((row_ch == 0)[:, None, None], seg[:, 0], seg[:, 1])
        probs[row_img, row_ch] = picked.to(dtype)
    return _normalise(probs, active)


def _normalise(probs: Tensor, active: Tensor) -> Tensor:
    """probs (N, K+1, H, W) >= 0: pixels where all are 0 get +1 on the active channels (background
    always), then each pixel is normalised."""
    ch_active = torch.cat([torch.ones_like(active[:, :1]), active], dim=1)[:, :, None, None]
    degenerate = probs.sum(dim=1, keepdim=True) == 0
    probs = probs + (degenerate & ch_active).to(probs.dtype)
    return probs / probs.sum(dim=1, keepdim=True)


def dense_rows(scores: Tensor, active: Tensor) -> Tensor:
    """The static-shape version of :func:`inference_rows` (for export): K+1 rows per image whatever
    is active, [g*, g_0 .. g_{K-1}]; scores (N, K), active (N, K) bool -> weights (N*(K+1), K)."""
    n, k = scores.shape
    w_star = scores * active
    w_lab = torch.eye(k, dtype=scores.dtype, device=scores.device)[None] * scores[:, None, :]
    return torch.cat([w_star[:, None], w_lab], dim=1).reshape(n * (k + 1), k)


def dense_probs(seg: Tensor, active: Tensor) -> Tensor:
    """:func:`assemble_probs` for :func:`dense_rows`' rows: seg (N*(K+1), 2, H, W) softmax -> probs
    (N, K+1, H, W); rows that :func:`inference_rows` would not have built count as 0."""
    n, k = active.shape
    seg = seg.reshape(n, k + 1, 2, *seg.shape[-2:])
    probs = torch.cat([seg[:, :1, 0], seg[:, 1:, 1]], dim=1)
    built = torch.cat([active.any(dim=1, keepdim=True), active], dim=1)
    return _normalise(probs * built[:, :, None, None].to(probs.dtype), active)


def dense_predict(net: Segmenter, images: Tensor, threshold: float | Tensor,
                  decode: Callable[[object, Tensor, int], Tensor]) -> tuple[Tensor, Tensor]:
    """The static ``export_forward`` of both DecoupledNets (this file's and ``encoder_decouplednet``):
    classifier -> scores -> identified set -> :func:`dense_rows` -> ``decode(cls_out, weights (R, K),
    rows per image)`` -> logits (R, 2, S, S) -> :func:`dense_probs`. images (N, C, S, S) -> probs
    (N, K+1, S, S), scores (N, K)."""
    cls_out = net.classifier(images)
    scores = torch.sigmoid(full_precision(cls_out.logits_avg))
    active = net.active_labels(scores, None, threshold)
    logits = decode(cls_out, dense_rows(scores, active), net.num_classes + 1)
    return dense_probs(torch.softmax(full_precision(logits), dim=1), active), scores


@register("decouplednet")
class DecoupledNet(Segmenter):
    """DecoupledNet with submodules ``classifier``, ``bridge``, ``decoder``.

    Args:
        num_classes: number of object classes K (no background).
        scale: "paper", "cpu" or a :class:`Scale`.
        in_channels: image channels.
        weight_pool: "avg" or "max": which pooled logits ``label_weights`` uses (see module doc).
        label_classes: object indices that label identification may return (None: all); the
            TransferNet recipe restricts it to the target classes (docs/TRANSFERNET.md).
        label_fallback: when no allowed class passes the threshold, take the allowed argmax.
    """

    def __init__(
        self,
        num_classes: int,
        scale: str | Scale = "cpu",
        in_channels: int = 3,
        weight_pool: str = "avg",
        label_classes: list[int] | None = None,
        label_fallback: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels  # what predict checks its input against
        self.label_classes, self.label_fallback = label_classes, label_fallback
        if weight_pool not in ("avg", "max"):
            raise ValueError(f"weight_pool must be 'avg' or 'max', got {weight_pool!r}")
        self.scale = get_scale(scale)
        self.num_classes = num_classes
        self.input_size = self.scale.input_size
        self.weight_pool = weight_pool
        s = self.scale
        self.classifier = Classifier(num_classes, s, in_channels)
        self.bridge = Bridge(s.c5, s.bridge_dim, s.fc6_kernel, s.c5)
        self.decoder = DeconvDecoder(s.widths, s.c5, out_channels=2, unpool5=True, batch_norm=True)

    # ------------------------------------------------------------------ building blocks

    def classify(self, images: Tensor) -> ClassifierOutput:
        """Classifier forward, images (N, 3, S, S) -> ClassifierOutput (pool5 (N, C5, h, w), score_map
        (N, K, s, s), logits (N, K), ...); no graph when the classifier is frozen
        (:func:`~hetseg.models.base.frozen_aware`)."""
        return frozen_aware(self.classifier, images)

    def label_weights(self, cls_out: ClassifierOutput, subsets: Tensor) -> Tensor:
        """Training weights w = sigmoid(pooled logits) * subset: (N, K) multi-hot -> (N, K).

        Detached: the classifier is fixed while the bridge and decoder train (§1.4).
        """
        logits = cls_out.logits_avg if self.weight_pool == "avg" else cls_out.logits_max
        return (torch.sigmoid(logits) * subsets.to(logits.dtype)).detach()

    def _decode(
        self, cls_out: ClassifierOutput, weights: Tensor, repeats: Tensor | int
    ) -> tuple[Tensor, Tensor]:
        """Rows grouped by image (``repeats`` rows for each): weights (R, K) -> (logits (R,2,H,W), g)."""
        n = cls_out.pool5.shape[0]
        index = torch.arange(n, device=weights.device).repeat_interleave(repeats)
        # f_cls is an input to the bridge, not a path to train the classifier through.
        f_cls = class_saliency_rows(self.classifier, cls_out, weights, index, pool="max").detach()
        g = self.bridge(cls_out.pool5[index], f_cls)
        logits = self.decoder(g, repeat_switches(cls_out.switches, repeats), cls_out.sizes)
        return logits, g

    def segment(
        self, images: Tensor, weights: Tensor, cls_out: ClassifierOutput | None = None
    ) -> Tensor:
        """Figure/ground logits for M weight vectors per image, in one batched pass.

        images (N, C, H, W); weights (N, M, K); cls_out: reuse a classifier forward.
        Returns (N, M, 2, H, W): channel 0 background, 1 foreground of the weighted classes.
        """
        if cls_out is None:
            cls_out = self.classify(images)
        n, m, k = weights.shape
        logits, _ = self._decode(cls_out, weights.reshape(n * m, k), m)
        return logits.reshape(n, m, *logits.shape[1:])

    forward = segment

    # ------------------------------------------------------------------ inference (§1.10)

    @torch.no_grad()
    def predict(
        self,
        images: Tensor,
        labels: list[list[int]] | None = None,
        threshold: float = 0.5,
        return_activations: bool = False,
    ) -> SegOutput:
        """Label map of each image (docs/REFERENCE.md §1.10); puts the model in eval mode first (every predict does).

        Returns :class:`SegOutput`: probs (N, K+1, H, W) normalised per pixel (channel 0 = background
        map of g*, channel k+1 = foreground map of class k, 0 where k was not identified);
        class_scores (N, K) sigmoid of the avg-pooled logits; identified (ascending object indices);
        with ``return_activations`` extras["activations"] (N, K+1, C5, h, w): the bridge outputs g
        (channel 0 = g*, k+1 = g_k), zeros for unidentified classes.

        images (N, C, H, W), H and W multiples of 32. ``labels`` (object indices per image)
        replaces the identified set {k : score_k > threshold}. One decoder pass over all
        [g*, g_l for l in L_n] rows of all images, whatever |L_n|.
        """
        cls_out = self.classifier(images)
        scores = torch.sigmoid(full_precision(cls_out.logits_avg))  # (N, K): thresholded and used as weights
        active = self.active_labels(scores, labels, threshold)
        row_img, row_ch, weights, counts = inference_rows(scores, active)
        seg = acts = None
        if return_activations:
            acts = images.new_zeros(*active.shape[:1], active.shape[1] + 1, *cls_out.pool5.shape[1:])
        if len(row_img) > 0:
            logits, g = self._decode(cls_out, weights, counts)
            seg = torch.softmax(full_precision(logits), dim=1)
            if acts is not None:
                acts[row_img, row_ch] = g.to(acts.dtype)
        probs = assemble_probs(seg, row_img, row_ch, active, tuple(images.shape[-2:]), images.dtype)
        identified = index_lists(active)
        return SegOutput(probs, scores, identified, None if acts is None else {"activations": acts})

    export_outputs = ("probs", "class_scores")

    def export_forward(self, images: Tensor, threshold: float | Tensor = 0.5) -> tuple[Tensor, Tensor]:
        """:meth:`predict` as a static graph (base class doc): all K+1 rows of every image are decoded,
        the rows of unidentified classes masked (:func:`dense_predict`). images (N, C, S, S) -> probs
        (N, K+1, S, S), scores (N, K)."""
        return dense_predict(self, images, threshold, lambda cls_out, w, rows: self._decode(cls_out, w, rows)[0])

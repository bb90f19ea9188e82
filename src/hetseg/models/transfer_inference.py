"""Inference shared by TransferNet and BaselineNet (docs/REFERENCE.md §3.9; docs/TRANSFERNET.md): label
identification, one batched decoder pass over the queried labels, the halved background prior and the
background rule -- and the same as one static graph for export (:func:`transfer_export`).

``net`` is either model: it answers ``classifier``, ``active_labels``, ``foreground``, ``segment``,
``num_classes`` and ``bg_scale``; ``foreground`` and ``segment`` take the classifier's output
(``classified``) so a model whose decoder reads that classifier (BaselineNet) runs it once per image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .base import SegOutput, Segmenter, index_lists
from .scales import Scale, get_scale


class TransferSegmenter(Segmenter):
    """What TransferNet and BaselineNet share: the inference rule's settings, the scale and input side,
    and :meth:`predict` / :meth:`export_forward` (:func:`transfer_predict` / :func:`transfer_export`).
    A subclass builds its layers after ``super().__init__(...)`` and answers ``classifier``,
    ``foreground`` and ``segment``; ``predict_maps`` names the per-label maps its ``foreground`` returns
    (predict's extras).

    Args:
        num_classes: K object classes over both domains (no background).
        scale: "paper", "cpu" or a :class:`Scale`.
        in_channels: image channels.
        input_size: the fixed input side (default ``scale.input_size``).
        label_classes / label_fallback / bg_scale: inference rule (:func:`transfer_predict`).
    """

    predict_maps: tuple[str, ...] = ()
    export_outputs = ("probs", "class_scores")

    def __init__(self, num_classes: int, scale: str | Scale, in_channels: int, input_size: int | None,
                 label_classes: list[int] | None, label_fallback: bool, bg_scale: float) -> None:
        super().__init__()
        self.in_channels = in_channels  # what predict checks its input against
        self.label_classes, self.label_fallback, self.bg_scale = label_classes, label_fallback, bg_scale
        self.scale = get_scale(scale)
        self.num_classes = num_classes
        self.input_size = input_size or self.scale.input_size

    def predict(self, images: Tensor, labels: list[list[int]] | None = None, threshold: float = 0.6) -> SegOutput:
        """See :func:`transfer_predict`: images (N, C, S, S) -> SegOutput, probs (N, K+1, S, S); the model's
        classifier picks the labels unless ``labels`` are given; extras: ``predict_maps`` per label."""
        return transfer_predict(self, images, labels, threshold, maps=self.predict_maps)

    def export_forward(self, images: Tensor, threshold: float | Tensor = 0.6) -> tuple[Tensor, Tensor]:
        """See :func:`transfer_export`."""
        return transfer_export(self, images, threshold)


@torch.no_grad()
def transfer_predict(net: nn.Module, images: Tensor, labels: list[list[int]] | None, threshold: float,
                     maps: tuple[str, ...] = ()) -> SegOutput:
    """Inference of TransferNet and BaselineNet (docs/REFERENCE.md §3.9), one batched decoder pass.

    Labels: ``labels`` (object indices) or the model's ``classifier``: {k in label_classes :
    sigmoid(avg score_k) > threshold}, else the allowed argmax. probs (N, K+1, H, W) are
    :func:`decision_scores` (background = the constant 0.5 decision threshold, channel k+1 = P(fg_k)
    after the background prior ``bg_scale``); class_scores (N, K) the classifier's sigmoid scores.
    """
    classified = net.classifier(images)  # handed on: BaselineNet's decoder reads the same classifier
    scores = torch.sigmoid(classified.logits_avg.float())
    active = net.active_labels(scores, labels, threshold, classified.logits_avg)
    identified = index_lists(active)
    fo = net.foreground(images, identified, net.bg_scale, return_maps=bool(maps), classified=classified)
    extras = dict(zip(maps, fo.maps)) if maps and fo.maps is not None else None
    return SegOutput(decision_scores(fo.fg, fo.active), scores, identified, extras)


def transfer_export(net: nn.Module, images: Tensor, threshold: float | Tensor) -> tuple[Tensor, Tensor]:
    """:func:`transfer_predict` as one static graph (``Segmenter.export_forward``): every class is
    queried for every image through ``net.segment`` (N*K decoder rows) and the labels identification
    did not pick are zeroed by :func:`decision_scores`. images (N, C, S, S) -> (probs (N, K+1, S, S),
    class_scores (N, K))."""
    classified = net.classifier(images)
    scores = torch.sigmoid(classified.logits_avg.float())
    active = net.active_labels(scores, None, threshold, classified.logits_avg)
    n, k = scores.shape
    seg = net.segment(images, torch.arange(k, device=images.device).expand(n, k), classified)  # (N, K, 2, S, S)
    fg = foreground_probability(seg.flatten(0, 1), net.bg_scale).reshape(n, k, *seg.shape[-2:])
    return decision_scores(fg, active), scores


@dataclass
class ForegroundOutput:
    """fg (N, K, H, W): foreground probability of each queried label (0 for the others), after the
    background prior; active (N, K) bool: the queried labels; maps: per-label (N, K, ...) tuples of
    the model's intermediate maps (TransferNet: alpha (h, w), dense (1, h, w)) when requested."""

    fg: Tensor
    active: Tensor
    maps: tuple[Tensor, ...] | None = None


def label_rows(labels: list[list[int]], num_classes: int,
               device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image object index lists (N lists) -> (row image index (B,), row class (B,), rows per image (N,)),
    int64 on ``device``, image-grouped; B = the distinct labels of each image, summed."""
    for i, ls in enumerate(labels):
        if any(not 0 <= c < num_classes for c in ls):
            raise ValueError(f"labels[{i}] = {ls} outside 0..{num_classes - 1}")
    img = [i for i, ls in enumerate(labels) for _ in sorted(set(ls))]
    cls = [c for ls in labels for c in sorted(set(ls))]
    counts = torch.tensor([len(set(ls)) for ls in labels], dtype=torch.long, device=device)
    return (torch.tensor(img, dtype=torch.long, device=device), torch.tensor(cls, dtype=torch.long, device=device),
            counts)


def foreground_probability(seg_logits: Tensor, bg_scale: float = 0.5) -> Tensor:
    """2-way logits (B, 2, H, W) -> P(fg) (B, H, W) after multiplying P(bg) by ``bg_scale`` and
    renormalising: the original's inference prior (§3.9 step 4: halve the background, 0.5)."""
    p = torch.softmax(seg_logits.float(), dim=1)
    return p[:, 1] / (p[:, 1] + bg_scale * p[:, 0])


RowRunner = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, tuple[Tensor, ...]]]


def foreground_from_rows(run: RowRunner, images: Tensor, labels: list[list[int]], num_classes: int,
                         bg_scale: float, return_maps: bool) -> ForegroundOutput:
    """Shared by TransferNet and BaselineNet: ``run(index, cls, counts) -> (seg_logits, maps)``."""
    n, (h, w) = images.shape[0], images.shape[-2:]
    if len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries for {n} images")
    index, cls, counts = label_rows(labels, num_classes, images.device)
    fg = images.new_zeros(n, num_classes, h, w)
    active = torch.zeros(n, num_classes, dtype=torch.bool, device=images.device)
    active[index, cls] = True
    maps = None
    if len(index):
        seg, row_maps = run(index, cls, counts)
        fg[index, cls] = foreground_probability(seg, bg_scale).to(fg.dtype)
        if return_maps:
            maps = tuple(m.new_zeros(n, num_classes, *m.shape[1:]).index_put_((index, cls), m) for m in row_maps)
    return ForegroundOutput(fg, active, maps)


def decision_scores(fg: Tensor, active: Tensor, threshold: float = 0.5) -> Tensor:
    """Background rule without CRF -> (N, K+1, H, W) scores whose per-pixel argmax is the label map.

    Channel 0 is the constant ``threshold``; channel k+1 is fg_k for queried labels, 0 otherwise.
    The argmax is thus: background where no queried label has fg_k > threshold, else the label
    with the highest fg_k. With the halved background prior and threshold 0.5 this is the
    original's per-class binary decision with the dense CRF replaced by its unary term (fg wins
    where p_fg > p_bg / 2), then "score = fg-prob x [fg]" and the argmax over classes (§3.9 steps
    4-8). Scores stay per-pixel maps, so they can be resized to the image before the argmax.
    """
    bg = torch.full_like(fg[:, :1], threshold)
    return torch.cat([bg, fg * active[:, :, None, None].to(fg.dtype)], dim=1)

"""Class-specific saliency f_cls = d(sum_k w_k * score_k) / d pool5, in closed form.

The original builds this gradient as explicit "bp" layers (docs/REFERENCE.md §1.4): w is max-unpooled
onto each class's argmax cell of the score map, then passes the transposed score conv, the fc7
ReLU mask, the transposed fc7, the fc6 ReLU mask and the transposed fc6 conv. Biases do not
enter a gradient. We do the same with the classifier's own weights and the ReLU masks kept by
its forward pass, for all weight vectors of a batch at once:

* no Python loop of ``autograd.grad`` calls (one einsum per layer for every row),
* no autograd needed at all, so it runs under ``torch.no_grad`` and exports (ONNX /
  torch.export) as three matmul-like ops and one transposed conv,
* the same maths as autograd, equal to float tolerance (tests/test_saliency.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .classifier import Classifier, ClassifierOutput


def _check_dropout(classifier: Classifier) -> None:
    # Dropout would multiply the gradient by its random mask, which the output does not keep.
    if classifier.training and isinstance(classifier.dropout, torch.nn.Dropout):
        raise RuntimeError("class_saliency needs the classifier in eval mode when dropout > 0")


def score_gradient(score_map: Tensor, max_index: Tensor, weights: Tensor, index: Tensor, pool: str) -> Tensor:
    """Gradient of w . pooled(score map) with respect to the score map, per row (step 1 of §1.4).

    score_map (N, K, s_h, s_w), max_index (N, K) flat argmax cells, weights (R, K), index (R,)
    image of each row -> (R, K, s_h * s_w) in the score map's dtype. ``pool`` "max": w lands on each
    class's argmax cell (unpooling with the max switch); "avg": w / cells on every cell.
    """
    n_rows, n_cls = weights.shape
    cells = score_map.shape[-2] * score_map.shape[-1]
    dtype = score_map.dtype
    weights = weights.to(dtype)
    if pool == "max":
        return weights.unsqueeze(-1) * F.one_hot(max_index[index], cells).to(dtype)
    if pool == "avg":
        return (weights / cells).unsqueeze(-1).expand(n_rows, n_cls, cells)
    raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")


def class_saliency_rows(
    classifier: Classifier,
    out: ClassifierOutput,
    weights: Tensor,
    index: Tensor,
    pool: str = "max",
) -> Tensor:
    """Saliency for R weight vectors, row r belonging to image ``index[r]``.

    Args:
        classifier: the network that produced ``out`` (its fc6/fc7/score weights are used).
        out: its forward output on N images.
        weights: (R, K) class weights w.
        index: (R,) int64 image index of each row (any order, repeats allowed).
        pool: "max" -> gradient of ``logits_max`` (w lands on each class's argmax cell, the
            original's path); "avg" -> gradient of ``logits_avg`` (w / s^2 on every cell).

    Returns:
        (R, C5, h, w): the gradient with respect to pool5 of image ``index[r]``.
    """
    _check_dropout(classifier)
    d_score = score_gradient(out.score_map, out.max_index, weights, index, pool)
    n_rows, dtype = weights.shape[0], d_score.dtype
    s_h, s_w = out.score_map.shape[-2:]
    w_score = classifier.score.weight.flatten(1).to(dtype)  # (K, F)
    w_fc7 = classifier.fc7.weight.flatten(1).to(dtype)  # (F_out, F_in)
    # Steps 2-3: transposed 1x1 score conv, then the fc7 ReLU mask.
    d7 = torch.einsum("rkc,kf->rfc", d_score, w_score) * out.fc7_mask[index].flatten(2).to(dtype)
    # Steps 4-5: transposed fc7, then the fc6 ReLU mask (dropout inactive: see _check_dropout).
    d6 = torch.einsum("rfc,fg->rgc", d7, w_fc7) * out.fc6_mask[index].flatten(2).to(dtype)
    # Step 6: fc6 is a k x k conv without padding; its transpose maps s x s back to h x w.
    d6 = d6.reshape(n_rows, -1, s_h, s_w)
    return F.conv_transpose2d(d6, classifier.fc6.weight.to(dtype))


def class_saliency(
    classifier: Classifier,
    out: ClassifierOutput,
    weights: Tensor,
    pool: str = "max",
) -> Tensor:
    """f_cls for M weight vectors per image: weights (N, M, K) -> (N, M, C5, h, w).

    Equals ``torch.autograd.grad((w * logits).sum(), pool5)`` for each of the M vectors,
    with ``logits = out.logits_max`` (pool="max", the original) or ``out.logits_avg``.
    """
    n, m, k = weights.shape
    index = torch.arange(n, device=weights.device).repeat_interleave(m)
    rows = class_saliency_rows(classifier, out, weights.reshape(n * m, k), index, pool)
    return rows.reshape(n, m, *rows.shape[1:])

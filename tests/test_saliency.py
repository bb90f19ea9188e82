"""The closed-form class saliency equals autograd (docs/REFERENCE.md §1.4)."""

from __future__ import annotations

import pytest
import torch

from hetseg.models import Classifier, class_saliency, class_saliency_rows


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clf64() -> Classifier:
    torch.manual_seed(0)
    return Classifier(num_classes=5, scale="cpu").double().eval()


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_closed_form_equals_autograd(clf64: Classifier, pool: str) -> None:
    torch.manual_seed(1)
    n, m, k = 2, 3, clf64.num_classes
    x = torch.randn(n, 3, 96, 96, dtype=torch.float64)
    out = clf64(x)
    # Non-trivial masks and distinct argmax cells, or the test would prove little.
    assert 0.05 < out.fc6_mask.double().mean() < 0.95
    assert 0.05 < out.fc7_mask.double().mean() < 0.95
    assert out.max_index.unique().numel() > 1
    weights = torch.rand(n, m, k, dtype=torch.float64)
    weights[0, 1] = 0.0  # a zero weight vector must give a zero map
    with torch.no_grad():  # the closed form needs no autograd
        closed = class_saliency(clf64, out, weights, pool=pool)
    assert closed.shape == (n, m, *out.pool5.shape[1:])

    logits = out.logits_max if pool == "max" else out.logits_avg
    for j in range(m):  # the loop lives in the test only
        (ref,) = torch.autograd.grad((weights[:, j] * logits).sum(), out.pool5, retain_graph=True)
        torch.testing.assert_close(closed[:, j], ref, rtol=1e-10, atol=1e-12)
    assert closed[0, 1].abs().max() == 0


def test_rows_any_order_float32() -> None:
    torch.manual_seed(2)
    clf = Classifier(num_classes=4, scale="cpu").eval()
    x = torch.randn(3, 3, 96, 96)
    out = clf(x)
    index = torch.tensor([2, 0, 2, 1])
    weights = torch.rand(4, 4)
    rows = class_saliency_rows(clf, out, weights, index)
    for r, i in enumerate(index.tolist()):
        (ref,) = torch.autograd.grad((weights[r] * out.logits_max[i]).sum(), out.pool5, retain_graph=True)
        torch.testing.assert_close(rows[r], ref[i], rtol=1e-4, atol=1e-5)


def test_dropout_in_training_mode_is_refused() -> None:
    clf = Classifier(num_classes=3, scale="cpu", dropout=0.5).train()
    out = clf(torch.randn(1, 3, 96, 96))
    with pytest.raises(RuntimeError, match="eval mode"):
        class_saliency(clf, out, torch.ones(1, 1, 3))

"""The flatness rule every bench's loss table reports (hetseg.bench.curves; docs/BENCHMARKS.md,
"Did the loss flatten?"): last three tenths vs tenths 5-7, 5 % tolerance."""

from __future__ import annotations

import pytest

from hetseg.bench.curves import FLAT_ABSOLUTE, FLAT_TOLERANCE, flattened, late_change, tenths_cells, tenths_header


def _pts(vals):
    return [[100 * (i + 1), v] for i, v in enumerate(vals)]


def test_a_curve_still_falling_is_called_falling():
    # Table 1's DecoupledNet k = 5 decoder (seed 0): 0.358 over tenths 5-7, 0.330 over the last three.
    pts = _pts([0.565, 0.573, 0.502, 0.433, 0.368, 0.364, 0.343, 0.342, 0.353, 0.296])
    assert late_change(pts) == pytest.approx((0.330333 - 0.358333) / 0.358333, rel=1e-3)
    assert flattened(pts) is False
    assert tenths_cells(pts).endswith("-7.8 % **falling**")


def test_a_plateau_and_a_rise_are_flat_and_the_tolerance_is_the_boundary():
    assert flattened(_pts([1.5, 0.9, 0.86, 0.76, 0.737, 0.717, 0.773, 0.754, 0.806, 0.764])) is True
    just_inside = _pts([1.0] * 7 + [1.0 - FLAT_TOLERANCE + 1e-6] * 3)
    just_outside = _pts([1.0] * 7 + [1.0 - FLAT_TOLERANCE - 1e-6] * 3)
    assert flattened(just_inside) is True and flattened(just_outside) is False


def test_a_short_curve_gets_no_verdict_and_the_table_keeps_its_width():
    assert flattened(_pts([0.5, 0.4])) is None and late_change([]) is None
    head = tenths_header("stage")
    cells = tenths_cells(_pts([0.5, 0.4])).split(" | ")
    assert len(cells) == head[0].count("|") - 2 == 11 and cells[-1] == "-"


def test_a_loss_near_zero_is_flat_by_the_absolute_floor():
    # Table 1's -Str classifier at k = 25 memorises its 172 images: 0.006 -> 0.002 is -77 % but 0.004 absolute.
    pts = _pts([0.242, 0.131, 0.044, 0.018, 0.012, 0.006, 0.011, 0.002, 0.003, 0.002])
    assert late_change(pts) < -0.5 and flattened(pts) is True
    assert flattened(_pts([1.0] * 7 + [0.9] * 3)) is False  # the floor does not excuse a large loss falling
    assert flattened(_pts([0.1] * 7 + [0.1 - 2 * FLAT_ABSOLUTE] * 3)) is False  # -20 % and 0.02 absolute
    assert tenths_cells(_pts([0.1, 0.01] + [0.0] * 8)).endswith("flat (loss 0)")

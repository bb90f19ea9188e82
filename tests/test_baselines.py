"""Trivial baselines on a tiny synthetic split with hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hetseg.baselines import all_background, best_threshold
from hetseg.data.records import Record, Split
from hetseg.errors import DataError
from hetseg.palette import save_index_png


@pytest.fixture()
def split(tmp_path):
    # image a: class 1 in the top rows; image b: class 2 in one corner; void pixels in both.
    ma = np.zeros((4, 4), np.uint8); ma[0] = 1; ma[3, 3] = 255
    mb = np.zeros((4, 4), np.uint8); mb[:2, :1] = 2; mb[0, 3] = 255
    recs = []
    for sid, m in (("a", ma), ("b", mb)):
        img = np.where((m > 0) & (m < 255), 200, 50).astype(np.uint8)  # bright objects, dark ground
        Image.fromarray(np.stack([img] * 3, -1)).save(tmp_path / f"{sid}.png")
        save_index_png(tmp_path / f"{sid}_m.png", m)
        recs.append(Record(sid, f"{sid}.png", tuple(sorted(set(np.unique(m).tolist()) - {0, 255})), f"{sid}_m.png"))
    recs.append(Record("w", "a.png", (1,)))  # a weak record: skipped
    return Split(tmp_path, recs, "tiny", 4)


def test_all_background_known_miou(split):
    s = all_background(split, 4)
    # scored pixels: a 15 (4 of class 1, 11 bg), b 15 (2 of class 2, 13 bg) -> bg IoU 24/30,
    # classes 1, 2 score 0, class 3 absent from gt and prediction: excluded and listed
    assert s.iou[0] == pytest.approx(24 / 30) and s.iou[1] == 0 and s.iou[2] == 0
    assert s.absent == [3] and s.miou == pytest.approx(24 / 30 / 3) and s.num_images == 2


def test_best_threshold_separable_split_is_perfect(split):
    s, info = best_threshold(split, 4)
    assert info["fg_iou"] == 1.0 and info["polarity"] == ">" and 50 <= info["threshold"] < 200
    assert s.miou == pytest.approx(1.0) and s.absent == [3]


def test_split_without_masks_is_a_data_error(split):
    with pytest.raises(DataError, match="no records with masks"):
        all_background(split.weak(), 4)

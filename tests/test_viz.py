"""Overlays and grids."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hetseg.viz import overlay, save_grid, save_label_grid, save_overlay


def test_overlay_colours_and_void(tmp_path):
    img = np.zeros((2, 2, 3), np.uint8)
    lab = np.array([[0, 1], [255, 2]], np.uint8)
    out = overlay(img, lab, alpha=0.5)
    assert out[0, 0].tolist() == [0, 0, 0]  # background keeps the image
    assert out[0, 1].tolist() == [64, 0, 0] and out[1, 1].tolist() == [0, 64, 0]  # VOC colours 1, 2
    assert out[1, 0].tolist() == [128, 128, 128]  # void blended in white
    assert overlay(img, lab, void="keep")[1, 0].tolist() == [0, 0, 0]
    save_overlay(tmp_path / "o.png", img, lab)
    assert np.asarray(Image.open(tmp_path / "o.png")).shape == (2, 2, 3)


def test_save_grid_writes_png(tmp_path):
    rows = [[np.full((8, 8, 3), (0, 200, 0), np.uint8), np.eye(8, dtype=np.uint8), np.random.rand(8, 8)]]
    save_grid(tmp_path / "g.png", rows, titles=["image", "labels", "map"], cell_inches=1.0, dpi=100)
    img = Image.open(tmp_path / "g.png")
    assert img.format == "PNG" and img.size == (300, 100)  # one row of three 1-inch panels at 100 dpi
    px = np.asarray(img.convert("RGB")).astype(int)
    assert (px[50, 50] - (0, 200, 0)).__abs__().max() <= 2  # the first panel's centre shows the green image
    with pytest.raises(ValueError, match="at least one panel"):
        save_grid(tmp_path / "none.png", [])
    assert not (tmp_path / "none.png").exists()


@pytest.mark.parametrize("shape", [(1, 600), (600, 1), (2, 2000)])
def test_a_prediction_figure_of_an_extreme_aspect_ratio_is_written_without_a_warning(tmp_path, shape):
    """predict --overlay on a 1-pixel-high image printed matplotlib's "Tight layout not applied" per image."""
    import warnings

    from hetseg.viz import save_prediction_figure

    rgb = np.zeros((*shape, 3), np.uint8)
    pred = np.ones(shape, np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save_prediction_figure(tmp_path / "f.png", rgb, pred, ["background", "thing"], truth=pred)
    assert (tmp_path / "f.png").stat().st_size > 0


def test_class_names_and_titles_are_text_not_tex(tmp_path):
    """A class named "T-shirt $\\bogus$" (read from a dataset's classes.txt) made matplotlib's mathtext parser raise
    a 109-line traceback from predict --overlay; names and titles are data, drawn as typed."""
    from hetseg.viz import save_prediction_figure

    rgb = np.zeros((8, 8, 3), np.uint8)
    pred = np.array([[0, 1] * 4] * 8, np.uint8)
    save_prediction_figure(tmp_path / "f.png", rgb, pred, ["background", "T-shirt $\\bogus$"], truth=pred)
    # an even number of unescaped $ is what matplotlib sends to its TeX parser (an odd one is plain text)
    save_grid(tmp_path / "g.png", [[rgb]], titles=["US$ 5 and $\\bogus$ $"])
    save_label_grid(tmp_path / "l.png", [[rgb, pred]], ["$\\bogus$", "x"], ["background", "c"])
    assert all((tmp_path / f).stat().st_size > 0 for f in ("f.png", "g.png", "l.png"))

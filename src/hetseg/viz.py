"""Overlays and figure grids. Matplotlib is used through its Agg canvas directly, so importing
this module never changes the process-wide backend (safe on headless machines and in notebooks).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from hetseg.palette import colorize

VOID = 255


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5, void: str = "white") -> np.ndarray:
    """Blend VOC colours of ``labels`` (H, W) into ``image`` (H, W, 3) uint8 -> (H, W, 3) uint8.

    Background (0) keeps the image; object classes are blended with weight ``alpha``; void (255)
    is blended in white (``void="white"``) or left as the image (``void="keep"``).
    """
    img = np.asarray(image)
    lab = np.asarray(labels)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[:2] != lab.shape:
        raise ValueError(f"need image (H, W, 3) and labels (H, W), got {img.shape} and {lab.shape}")
    if void not in ("white", "keep"):
        raise ValueError("void must be 'white' or 'keep'")
    colour = colorize(lab).astype(np.float32)
    colour[lab == VOID] = 255.0
    blend = (1 - alpha) * img.astype(np.float32) + alpha * colour
    paint = lab != 0
    if void == "keep":
        paint &= lab != VOID
    out = img.copy()
    out[paint] = np.clip(np.rint(blend[paint]), 0, 255).astype(np.uint8)
    return out


def save_overlay(path: str | Path, image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> None:
    """Write :func:`overlay` as a PNG/JPEG (format from the suffix)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay(image, labels, alpha)).save(path)


def save_prediction_figure(path: str | Path, image: np.ndarray, prediction: np.ndarray,
                           class_names: Sequence[str], truth: np.ndarray | None = None, dpi: int = 100) -> None:
    """image | prediction | ground truth (when given), with a legend of the classes that appear:
    readable at a glance on photos and on 96 px fashion scenes alike. Written atomically (PNG)."""
    titles = ["image", "prediction"] + (["ground truth"] if truth is not None else [])
    row = [image, prediction] + ([truth] if truth is not None else [])
    save_label_grid(path, [row], titles, class_names, dpi)


def save_label_grid(path: str | Path, rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str],
                    class_names: Sequence[str], dpi: int = 100) -> None:
    """Rows of [RGB image, label maps ...] side by side at each image's aspect ratio, column titles on
    the first row, and one legend (VOC colours, class names) of every label that appears."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from hetseg.io_atomic import write_atomic
    from hetseg.palette import voc_colormap

    h, w = rows[0][1].shape
    cell, ncols = 3.0, max(len(r) for r in rows)
    # Each cell keeps the image's aspect, but no side under 0.75 in: a 1 x 2000 px image made a figure
    # too thin for its titles, and matplotlib warned "Tight layout not applied" on every predict.
    cw, ch = (max(0.75, cell * side / max(h, w)) for side in (w, h))
    fig = Figure(figsize=(cw * ncols + 1.8, len(rows) * ch + 0.5), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    present: set[int] = set()
    for i, row in enumerate(rows):
        for j in range(ncols):
            ax = axes[i][j]
            ax.set_axis_off()
            if j >= len(row):
                continue
            a = np.asarray(row[j])
            if a.ndim == 3:
                ax.imshow(a)
            else:
                ax.imshow(colorize(a.astype(np.uint8)), interpolation="nearest")
                present |= set(np.unique(a).tolist())
            if i == 0 and j < len(titles):
                ax.set_title(titles[j], fontsize=9, parse_math=False)
    cmap = voc_colormap(256) / 255.0
    handles = [Patch(color=cmap[c], label=class_names[c] if c < len(class_names) else ("void" if c == VOID else str(c)))
               for c in sorted(present)]
    legend = fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    for text in legend.get_texts():  # class names are data: "$\\alpha$" or "US$" is a name, not TeX to typeset
        text.set_parse_math(False)
    fig.tight_layout(rect=(0, 0, 1 - 1.8 / fig.get_figwidth(), 1))
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))


def _show(ax, cell: np.ndarray) -> None:
    """RGB (H, W, 3) as is; integer (H, W) as VOC labels; float (H, W) as a heat map (viridis)."""
    a = np.asarray(cell)
    if a.ndim == 3:
        ax.imshow(a)
    elif np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        ax.imshow(colorize(a.astype(np.uint8)), interpolation="nearest")
    else:
        ax.imshow(a, cmap="viridis")
    ax.set_axis_off()


def save_grid(path: str | Path, rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str] | None = None,
              cell_inches: float = 1.6, dpi: int = 100) -> None:
    """Save a figure with one panel per array; ``titles`` label the columns (first row)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    nrows = len(rows)
    ncols = max((len(r) for r in rows), default=0)
    if nrows == 0 or ncols == 0:
        raise ValueError("save_grid needs at least one panel")
    fig = Figure(figsize=(cell_inches * ncols, cell_inches * nrows), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i in range(nrows):
        for j in range(ncols):
            ax = axes[i][j]
            if j < len(rows[i]):
                _show(ax, rows[i][j])
            else:
                ax.set_axis_off()
            if i == 0 and titles is not None and j < len(titles):
                ax.set_title(titles[j], fontsize=8, parse_math=False)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    from hetseg.io_atomic import write_atomic

    write_atomic(path, lambda tmp: fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png"))
